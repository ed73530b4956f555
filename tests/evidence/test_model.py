"""EvidenceModel: the prediction columns, a weights-only checkpoint, the pixels-only model."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from hypermodal.evidence import (
    AGREEMENT,
    FEATURE_NAMES,
    UNKNOWN,
    EvidenceModel,
    Fusion,
    fit_forest,
    header_probs,
)

CLASSES = ("CT", "MR", "PT", "XR", "OTHER")
K = len(CLASSES)
COLUMNS = [
    "prediction",
    "confidence",
    "pixel_prediction",
    "feature_prediction",
    "header_label",
    "agreement",
    *[f"p_{c}" for c in CLASSES],
]


def _features(labels: np.ndarray, seed: int) -> np.ndarray:
    """Feature rows whose first column tells the class apart (arithmetic, not images)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(labels), len(FEATURE_NAMES)))
    x[:, 0] += 8.0 * np.array([CLASSES.index(c) for c in labels])
    x[:, 5] = np.nan  # a feature nobody has
    return x.astype(np.float32)


def _pixels(labels: np.ndarray, seed: int, accuracy: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.array([CLASSES.index(c) for c in labels])
    named = np.where(rng.random(len(y)) < accuracy, y, (y + 1) % K)
    p = np.full((len(y), K), 0.1)
    p[np.arange(len(y)), named] = 0.6
    return p


@pytest.fixture(scope="module")
def model() -> EvidenceModel:
    rng = np.random.default_rng(0)
    labels = rng.choice(["CT", "MR", "XR", "OTHER"], 200)  # no PT in training
    groups = rng.choice(["a", "b", "c"], 200)
    forest = fit_forest(_features(labels, 1), labels, CLASSES, groups, seed=0)
    claims = [c if i % 4 else None for i, c in enumerate(labels)]
    ev = {
        "pixels": _pixels(labels, 2),
        "features": forest.predict_proba(_features(labels, 3)),
        "header": header_probs(claims, CLASSES),
    }
    y = np.array([CLASSES.index(c) for c in labels])
    fusion = Fusion.fit(CLASSES, ev, y, groups)
    return EvidenceModel(CLASSES, forest, fusion, info={"note": "test"})


def test_decide_columns_and_types(model):
    labels = np.array(["CT", "MR", "XR", "OTHER", "MR", "CT"])
    claims = ["CT", None, "XR", "OTHER", "CT", None]
    table = model.decide(_pixels(labels, 4, accuracy=1.0), _features(labels, 5), claims)
    assert isinstance(table, pd.DataFrame) and list(table.columns) == COLUMNS
    assert len(table) == 6
    assert table["confidence"].dtype == np.float32
    p = table[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(table["confidence"], p.max(axis=1), atol=1e-6)
    assert set(table["prediction"]) <= {*CLASSES, UNKNOWN}
    assert set(table["agreement"]) <= set(AGREEMENT)
    assert _values(table["header_label"]) == claims
    assert list(table["pixel_prediction"]) == list(labels)
    assert list(table["feature_prediction"]) == list(labels)  # the forest learnt column 0
    assert list(table["agreement"]) == [
        "agree",
        "no header",
        "agree",
        "agree",
        "conflict",  # header says CT, the image says MR
        "no header",
    ]
    assert list(table["prediction"][[0, 1, 2, 3]]) == ["CT", "MR", "XR", "OTHER"]


def test_rows_without_image_evidence_are_decided_on_the_header(model):
    labels = np.array(["CT", "MR", "XR"])
    claims = ["CT", "MR", None]
    has_image = np.array([True, False, False])
    table = model.decide(_pixels(labels, 6), _features(labels, 7), claims, has_image)
    assert list(table["agreement"]) == ["agree", "header only", "no header"]
    assert table.loc[1, "prediction"] == "MR"
    # neither image nor header: nothing to go on
    assert table.loc[2, "confidence"] < 0.5 and table.loc[2, "prediction"] == UNKNOWN


def test_state_survives_a_weights_only_checkpoint(model):
    buf = io.BytesIO()
    torch.save({"evidence": model.to_state()}, buf)
    buf.seek(0)
    again = EvidenceModel.from_state(torch.load(buf, weights_only=True)["evidence"])
    assert again.classes == CLASSES and again.info == {"note": "test"}
    assert again.header_trust == model.header_trust
    labels = np.array(["CT", "MR", "PT", "XR", "OTHER"])
    args = (_pixels(labels, 8), _features(labels, 9), ["CT", None, "PT", None, "OTHER"])
    pd.testing.assert_frame_equal(again.decide(*args), model.decide(*args))


def test_pixels_only_model_needs_no_forest():
    m = EvidenceModel.pixels_only(CLASSES, "checkpoint has no feature model")
    assert m.forest is None and m.fusion.fitted_on["fitted"] is False
    labels = np.array(["CT", "MR", "XR"])
    pixels = _pixels(labels, 10, accuracy=1.0)
    table = m.decide(pixels, _features(labels, 11), [None, None, None])
    assert list(table.columns) == COLUMNS
    assert list(table["feature_prediction"]) == [None, None, None]
    assert list(table["prediction"]) == list(labels)
    np.testing.assert_allclose(table[[f"p_{c}" for c in CLASSES]], pixels, atol=1e-6)
    again = EvidenceModel.from_state(m.to_state())
    assert again.forest is None


def _values(column: pd.Series) -> list:
    """Column values with every missing value as None (pandas may store them as NaN)."""
    return [None if pd.isna(v) else v for v in column]


def test_pixels_only_model_lets_the_cnn_decide_and_the_header_only_flag():
    m = EvidenceModel.pixels_only(CLASSES, "checkpoint has no feature model")
    pixels = np.array([[0.6, 0.1, 0.1, 0.1, 0.1], [0.3, 0.2, 0.2, 0.2, 0.1]])
    table = m.decide(pixels, None, ["MR", None])  # the header says MR, the CNN CT
    assert list(table["agreement"]) == ["conflict", "no header"]
    assert list(table["prediction"]) == ["CT", "CT"]  # no UNKNOWN: the CNN as it is
    np.testing.assert_allclose(table[[f"p_{c}" for c in CLASSES]], pixels, atol=1e-6)


def test_rows_without_image_evidence_have_no_pixel_or_feature_prediction(model):
    labels = np.array(["XR", "XR"])
    has_image = np.array([True, False])
    table = model.decide(_pixels(labels, 12), _features(labels, 13), ["XR", "XR"], has_image)
    assert _values(table["pixel_prediction"]) == ["XR", None]
    assert _values(table["feature_prediction"]) == ["XR", None]
    assert list(table["agreement"]) == ["agree", "header only"]


def test_pixels_only_row_without_image_evidence_is_not_a_made_up_class():
    m = EvidenceModel.pixels_only(CLASSES, "checkpoint has no feature model")
    pixels = np.full((2, K), 1.0 / K)  # what predict feeds for a blank image
    table = m.decide(pixels, None, [None, "MR"], has_image=np.array([False, False]))
    assert table.loc[0, "prediction"] == UNKNOWN
    assert table.loc[1, "prediction"] in (UNKNOWN, "MR")


@pytest.mark.parametrize("which", ["fitted", "pixels_only"])
def test_decide_on_no_rows(model, which):
    m = model if which == "fitted" else EvidenceModel.pixels_only(CLASSES, "none")
    table = m.decide(None, None, [], has_image=np.zeros(0, bool))
    assert list(table.columns) == COLUMNS and len(table) == 0


def test_a_series_gets_one_answer_and_its_empty_slices_take_it(model):
    labels = np.array(["CT", "CT", "CT", "MR", "CT", "MR"])
    pixels = _pixels(labels, 8, accuracy=1.0)
    features = _features(labels, 9)
    claims = [None] * 6
    series = np.array(["vol", "vol", "vol", "vol", "vol", "other"], dtype=object)
    has_image = np.array([True, True, True, True, False, True])
    each = model.decide(pixels, features, claims, has_image, series=series, consensus=False)
    assert each.loc[3, "prediction"] == "MR" and each.loc[0, "prediction"] == "CT"
    assert each.loc[4, "prediction"] == UNKNOWN  # an empty slice on its own: nothing to go on
    one = model.decide(pixels, features, claims, has_image, series=series)
    assert list(one["prediction"][:5]) == ["CT"] * 5  # the whole volume, the empty slice too
    assert one.loc[5, "prediction"] == "MR"  # another series keeps its own answer
    p = one[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(p[:5], np.repeat(p[:1], 5, axis=0), atol=1e-6)
    assert pd.isna(one.loc[4, "feature_prediction"])  # per-image evidence stays per image
    assert one.loc[3, "feature_prediction"] == "MR"
