"""Fusion arithmetic: fitted log-linear pooling, calibration, UNKNOWN and the agreement flag.

Unit tests of arithmetic on generated, clearly labelled probability arrays.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hypermodal.evidence import (
    AGREEMENT,
    EVIDENCE,
    UNKNOWN,
    Fusion,
    agreement,
    balanced_weights,
    calibration_error,
    header_probs,
)
from hypermodal.evidence.fusion import IMAGE_EVIDENCE, has_claim

CLASSES = ("CT", "MR", "PT", "XR")
K = len(CLASSES)


def _source(y: np.ndarray, accuracy: float, confidence: float, rng) -> np.ndarray:
    """Probabilities that name the true class with ``accuracy`` at ``confidence``."""
    n = len(y)
    named = y.copy()
    wrong = rng.random(n) > accuracy
    named[wrong] = (y[wrong] + rng.integers(1, K, wrong.sum())) % K
    p = np.full((n, K), (1 - confidence) / (K - 1))
    p[np.arange(n), named] = confidence
    return p


def _claims(y: np.ndarray, accuracy: float, rng, every: int = 3) -> list[str | None]:
    """Header claims right with ``accuracy``; every ``every``-th row has no header."""
    named = np.where(rng.random(len(y)) < accuracy, y, (y + 1) % K)
    return [None if i % every == 0 else CLASSES[c] for i, c in enumerate(named)]


def test_pooling_weighs_an_informative_source_up_and_noise_down():
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 800)
    pixels = _source(y, accuracy=0.85, confidence=0.7, rng=rng)
    noise = rng.dirichlet(np.full(K, 0.3), len(y))  # confident-looking and unrelated to y
    fusion = Fusion.fit(CLASSES, {"pixels": pixels, "features": noise, "header": None}, y)
    w = dict(zip(fusion.image.names, fusion.image.weights, strict=True))
    assert fusion.image.names == IMAGE_EVIDENCE and fusion.full.names == EVIDENCE
    assert w["features"] < 0.2
    assert w["pixels"] > 1.0  # right 85 % of the time at 70 %: sharpened
    assert np.all(np.abs(fusion.image.bias) < 0.1)  # balanced classes need no bias
    # noise is not allowed to spoil the pixels' answer
    out = fusion.predict({"pixels": pixels, "features": noise, "header": None}, len(y))
    assert (out["probs"].argmax(axis=1) == y).mean() >= (pixels.argmax(axis=1) == y).mean()


def test_header_weight_is_fitted_on_rows_with_a_claim():
    rng = np.random.default_rng(1)
    y = rng.integers(0, K, 900)
    ev = {
        "pixels": _source(y, 0.6, 0.5, rng),
        "features": _source(y, 0.6, 0.5, rng),
        "header": header_probs(_claims(y, 0.97, rng), CLASSES),
    }
    fusion = Fusion.fit(CLASSES, ev, y)
    w = dict(zip(fusion.full.names, fusion.full.weights, strict=True))
    assert w["header"] > max(w["pixels"], w["features"])
    assert fusion.fitted_on["rows"] == 900 and fusion.fitted_on["rows_with_header"] == 600
    assert fusion.fitted_on["classes_seen"] == list(CLASSES)
    fused = fusion.predict(ev, len(y))["probs"]
    assert (fused.argmax(axis=1) == y)[has_claim(ev["header"], len(y))].mean() > 0.95


def test_fitted_fusion_is_better_calibrated_than_the_plain_product():
    def sample(n, seed):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, K, n)
        # two sources, right 70 % of the time but 97 % sure: over-confident
        return y, {"pixels": _source(y, 0.7, 0.97, rng), "features": _source(y, 0.7, 0.97, rng)}

    y_fit, ev_fit = sample(1000, 1)
    y_new, ev_new = sample(1000, 2)  # judged on rows the fit never saw
    fitted = Fusion.fit(CLASSES, ev_fit, y_fit)
    neutral = Fusion.neutral(CLASSES, "not fitted")
    before = calibration_error(neutral.predict(ev_new, 1000)["probs"], y_new)
    after = calibration_error(fitted.predict(ev_new, 1000)["probs"], y_new)
    assert before > 0.04
    assert after < before / 2
    w = dict(zip(fitted.image.names, fitted.image.weights, strict=True))
    assert w["pixels"] < 1 and w["features"] < 1  # over-confidence is tempered


def test_confidence_below_the_threshold_is_unknown():
    fusion = Fusion.neutral(CLASSES, "test")
    fused = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7], [0.5, 0.5, 0, 0]])
    pred, conf = fusion.labels(fused)
    assert list(pred) == [UNKNOWN, "XR", "CT"]  # the threshold itself is still a class
    np.testing.assert_allclose(conf, [0.4, 0.7, 0.5])
    strict = Fusion(CLASSES, fusion.full, fusion.image, unknown_below=0.8)
    assert list(strict.labels(fused)[0]) == [UNKNOWN] * 3
    empty_pred, empty_conf = fusion.labels(np.zeros((0, K)))
    assert len(empty_pred) == 0 and len(empty_conf) == 0


def test_rows_without_a_header_claim_are_fused_by_the_image_pooling():
    rng = np.random.default_rng(3)
    y = rng.integers(0, K, 600)
    claims = _claims(y, 0.9, rng)
    ev = {
        "pixels": _source(y, 0.8, 0.6, rng),
        "features": _source(y, 0.7, 0.6, rng),
        "header": header_probs(claims, CLASSES),
    }
    fusion = Fusion.fit(CLASSES, ev, y)
    out = fusion.predict(ev, len(y))
    none = np.array([c is None for c in claims])
    np.testing.assert_allclose(out["probs"][none], out["image_probs"][none])
    assert not np.allclose(out["probs"][~none], out["image_probs"][~none])
    np.testing.assert_allclose(out["image_probs"], fusion.image(ev, len(y)))
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0)


def test_without_any_claim_the_full_pooling_copies_the_image_pooling():
    rng = np.random.default_rng(4)
    y = rng.integers(0, K, 300)
    ev = {"pixels": _source(y, 0.8, 0.6, rng), "features": None, "header": None}
    fusion = Fusion.fit(CLASSES, ev, y)
    np.testing.assert_allclose(fusion.full.weights, [*fusion.image.weights, 1.0])
    np.testing.assert_allclose(fusion.full.bias, fusion.image.bias)
    assert fusion.fitted_on["rows_with_header"] == 0


def test_missing_and_non_finite_evidence_drop_out():
    neutral = Fusion.neutral(CLASSES, "test")
    pixels = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    # the plain product of one source and nothing else is that source
    np.testing.assert_allclose(neutral.predict({"pixels": pixels}, 2)["probs"], pixels)
    features = np.array([[np.nan] * K, [0.1, 0.1, 0.1, 0.7]])  # row 0: out of fold, unknown
    out = neutral.predict({"pixels": pixels, "features": features}, 2)["probs"]
    np.testing.assert_allclose(out[0], pixels[0])
    assert out[1].argmax() in (1, 3) and out[1, 1] == pytest.approx(out[1, 3])


def test_balanced_weights():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    groups = np.array(["a", "a", "a", "a", "b", "b", "c", "d"])
    w = balanced_weights(y, groups)
    assert w.mean() == pytest.approx(1.0)
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())  # classes weigh the same
    assert w[groups == "a"].sum() == pytest.approx(w[groups == "b"].sum())  # datasets too
    assert w[0] < w[4]
    plain = balanced_weights(y)
    assert plain[y == 0].sum() == pytest.approx(plain[y == 1].sum())
    np.testing.assert_allclose(plain[:6], plain[0])


def test_calibration_error_values():
    y = np.array([0, 0, 0, 0, 0])
    sure = np.tile([1.0, 0, 0, 0], (5, 1))
    assert calibration_error(sure, y) == 0.0
    eighty = np.tile([0.8, 0.2, 0, 0], (5, 1))
    y80 = np.array([0, 0, 0, 0, 1])
    assert calibration_error(eighty, y80) == pytest.approx(0.0, abs=1e-12)
    ninety = np.tile([0.9, 0.1, 0, 0], (4, 1))
    assert calibration_error(ninety, np.array([0, 0, 1, 1])) == pytest.approx(0.4)
    assert np.isnan(calibration_error(np.zeros((0, K)), np.zeros(0)))


def test_agreement_values():
    claims = ["CT", "CT", None, "MR", None]
    image = np.array(["CT", "MR", "CT", "MR", "XR"], dtype=object)
    has_image = np.array([True, True, True, False, False])
    got = agreement(claims, image, has_image)
    assert got == ["agree", "conflict", "no header", "header only", "no header"]
    assert set(got) <= set(AGREEMENT)


def test_state_round_trip_through_json():
    rng = np.random.default_rng(5)
    y = rng.integers(0, K, 400)
    groups = rng.choice(["a", "b", "c", "d"], 400)
    ev = {
        "pixels": _source(y, 0.8, 0.6, rng),
        "features": _source(y, 0.7, 0.6, rng),
        "header": header_probs(_claims(y, 0.9, rng), CLASSES),
    }
    fusion = Fusion.fit(CLASSES, ev, y, groups, unknown_below=0.6)
    state = json.loads(json.dumps(fusion.to_state()))  # plain values only
    again = Fusion.from_state(state)
    assert again.classes == CLASSES and again.unknown_below == 0.6
    assert again.fitted_on == fusion.fitted_on and again.fitted_on["groups"] == 4
    a, b = fusion.predict(ev, len(y)), again.predict(ev, len(y))
    np.testing.assert_allclose(a["probs"], b["probs"])
    np.testing.assert_allclose(a["image_probs"], b["image_probs"])
    assert list(fusion.labels(a["probs"])[0]) == list(again.labels(b["probs"])[0])


def test_series_consensus_is_the_geometric_mean_of_the_series_images():
    from hypermodal.evidence import series_consensus

    p = np.array(
        [
            [0.7, 0.2, 0.1],  # series a
            [0.4, 0.5, 0.1],  # series a
            [0.1, 0.1, 0.8],  # series b
            [1 / 3, 1 / 3, 1 / 3],  # series a, but without image evidence
            [0.2, 0.6, 0.2],  # series c: no image evidence at all
        ]
    )
    series = np.array(["a", "a", "b", "a", "c"], dtype=object)
    rows = np.array([True, True, True, False, False])
    out = series_consensus(p, series, rows)
    g = np.exp(np.log(p[:2]).mean(axis=0))
    g /= g.sum()
    for i in (0, 1, 3):  # every image of series a, the empty one included
        np.testing.assert_allclose(out[i], g)
    np.testing.assert_allclose(out[2], p[2])  # a one-image series is itself
    np.testing.assert_allclose(out[4], p[4])  # nothing to agree on: left as it was
    assert out[0].argmax() == 0  # CT-ish and mixed slices: the series says class 0
    np.testing.assert_allclose(series_consensus(p, None), p)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
