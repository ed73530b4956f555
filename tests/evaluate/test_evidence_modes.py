"""Evaluate a checkpoint with evidence: every mode scored, the fused decision in the headline,
the new per-image columns, and the headline's warning when a split is too small for the paper.

The checkpoint is trained with ``--evidence all`` on the real 32×32 store of ``conftest.py``,
whose validation split is one MR dataset: the fusion stays neutral, with its reason recorded.
Mechanics only: nothing here is an accuracy claim.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from hypermodal.evaluate import evaluate, write_report
from hypermodal.evaluate.evidence import EVIDENCE_COLUMNS, MODES, paper_comparison
from hypermodal.evaluate.headline import MODE_LABELS
from hypermodal.evidence import UNKNOWN
from hypermodal.train import TrainConfig, train
from tests.helpers import CLASSES, make_store

HEADLINE_HEADER = "| model | balanced accuracy | accuracy | images |"


@pytest.fixture(scope="module")
def evidence_checkpoint(real_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("evidence-run")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu", evidence="all")
    train(real_store, run, cfg, progress=False)
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def on_train(evidence_checkpoint: Path, real_store: Path, tmp_path_factory) -> dict:
    """The evidence checkpoint evaluated on the store's train split (13 images: CT, MR, XR)."""
    out = tmp_path_factory.mktemp("evidence-eval")
    metrics = evaluate(evidence_checkpoint, real_store, out, split="train", progress=False)
    return {
        "out": out,
        "metrics": metrics,
        "preds": pd.read_parquet(out / "predictions.parquet"),
        "report": (out / "report.md").read_text(),
    }


def _accuracy(preds: pd.DataFrame, column: str) -> float:
    return float((preds[column] == preds["label"]).mean())


@pytest.mark.slow
def test_every_evidence_mode_is_scored(on_train: dict) -> None:
    metrics, preds = on_train["metrics"], on_train["preds"]
    modes = metrics["evidence_modes"]
    assert list(modes) == list(MODES)
    for mode in MODES:
        m = modes[mode]
        assert m["available"] is True, mode
        assert set(m["recall"]) == set(CLASSES) and m["images"] == 13
        assert 0.0 <= m["balanced_accuracy"] <= 1.0 and 0.0 <= m["accuracy"] <= 1.0
    assert modes["pixels"]["accuracy"] == pytest.approx(_accuracy(preds, "pixel_prediction"))
    assert modes["features"]["accuracy"] == pytest.approx(_accuracy(preds, "feature_prediction"))
    # the header claims CT, MR (x 11); the PNG radiograph claims nothing and counts as wrong
    header = modes["header"]
    assert header["accuracy"] == pytest.approx(12 / 13) and header["coverage"] == pytest.approx(
        12 / 13
    )
    assert header["recall"] == {"CT": 1.0, "MR": 1.0, "PT": None, "XR": 0.0}
    assert header["balanced_accuracy"] == pytest.approx(2 / 3)
    # the model's decision is the fused one: the headline figures are the fused mode's
    fused = modes["fused"]
    assert metrics["balanced_accuracy"] == pytest.approx(fused["balanced_accuracy"])
    assert metrics["accuracy"] == pytest.approx(fused["accuracy"]) == _accuracy(preds, "prediction")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(preds["label"], preds["prediction"])
    assert metrics["balanced_accuracy"] == pytest.approx(bal)
    assert (
        fused["calibration_error"] is not None and modes["pixels"]["calibration_error"] is not None
    )
    saved = json.loads((on_train["out"] / "metrics.json").read_text())
    assert saved["evidence_modes"] == json.loads(json.dumps(modes))


@pytest.mark.slow
def test_predictions_gain_the_evidence_columns(on_train: dict) -> None:
    metrics, preds = on_train["metrics"], on_train["preds"]
    assert list(preds.columns[:5]) == ["row", "dataset", "label", "prediction", "correct"]
    for column in EVIDENCE_COLUMNS:
        assert column in preds.columns, column
    assert set(preds["prediction"]) <= {*CLASSES, UNKNOWN}
    probs = preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(preds["confidence"], probs.max(axis=1), rtol=1e-6)
    claims = preds.set_index("dataset")["header_label"]
    assert claims.loc["ct-small"] == "CT" and pd.isna(claims.loc["png-xr"])
    assert set(preds.loc[preds["dataset"] == "png-xr", "agreement"]) == {"no header"}
    assert set(preds["agreement"]) <= {"agree", "conflict", "no header"}
    unknown = int((preds["prediction"] == UNKNOWN).sum())
    assert metrics["evidence"]["unknown"] == unknown
    assert (UNKNOWN in metrics["confusion_labels"]) == (unknown > 0)
    assert metrics["classes"] == list(CLASSES)
    assert UNKNOWN not in metrics["missing_classes"]


@pytest.mark.slow
def test_report_shows_one_row_per_mode_and_the_neutral_fusion(on_train: dict) -> None:
    report, metrics = on_train["report"], on_train["metrics"]
    assert "## Evidence modes" in report and "pixels only**" not in report
    for label in MODE_LABELS.values():
        assert f"| {label} |" in report, label
    assert metrics["evidence"]["decides"] == "fused evidence"
    fusion = metrics["evidence"]["fusion"]
    assert fusion["fitted"] is False and "validation split too small" in fusion["reason"]
    assert "The fusion is **neutral**" in report and "1 dataset(s)" in report
    assert HEADLINE_HEADER in report
    assert "this run: ResNet18 + evidence, fused" in report
    assert "this run: ResNet18, pixels only" in report
    expected = "train split too small to compare with the paper: 13 images, 11 MR, 1 CT, 1 XR"
    assert metrics["paper_comparison"] == {"comparable": False, "reason": expected}
    headline = report[report.index("## Headline") : report.index("## Evidence modes")]
    assert f"**{expected}.**" in headline
    assert "Simulated share of the training images: 0.00%" in headline
    assert "the train split holds none" in headline


@pytest.mark.slow
def test_test_split_headline_and_simulated_share(evidence_checkpoint, real_store, tmp_path) -> None:
    metrics = evaluate(evidence_checkpoint, real_store, tmp_path / "t", progress=False)
    assert metrics["paper_comparison"]["reason"] == (
        "test split too small to compare with the paper: 1 image, 1 XR"
    )
    assert metrics["simulated_share_of_training"] == 0.0
    metrics["simulated_share_of_training"] = None  # a checkpoint from before it was recorded
    text = write_report(tmp_path / "t", metrics).read_text()
    assert "**test split too small to compare with the paper: 1 image, 1 XR.**" in text
    assert "not recorded by this checkpoint" in text


@pytest.mark.slow
def test_pixels_only_checkpoint_says_so(tiny_checkpoint: Path, real_store: Path, tmp_path) -> None:
    metrics = evaluate(tiny_checkpoint, real_store, tmp_path, split="train", progress=False)
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    probs = preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert (preds["prediction"] == np.array(CLASSES)[probs.argmax(axis=1)]).all()  # no UNKNOWN
    assert (preds["pixel_prediction"] == preds["prediction"]).all()
    assert preds["feature_prediction"].isna().all()
    modes = metrics["evidence_modes"]
    assert modes["pixels"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert modes["pixels"]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    assert modes["features"]["available"] is False and modes["fused"]["available"] is False
    assert modes["header"]["accuracy"] == pytest.approx(12 / 13)
    assert metrics["evidence"]["decides"] == "pixels only"
    report = (tmp_path / "report.md").read_text()
    assert "This model is **pixels only**" in report
    assert (
        "| this run: ResNet18** (train)" not in report
        and "**this run: ResNet18** (train)" in report
    )
    assert HEADLINE_HEADER in report


@pytest.mark.slow
def test_store_without_stats_drops_the_features_mode(evidence_checkpoint, tmp_path) -> None:
    store = make_store(tmp_path / "old", (2, 2, 3))  # no stats, no modality column
    metrics = evaluate(evidence_checkpoint, store.path, tmp_path / "e", progress=False)
    modes = metrics["evidence_modes"]
    assert modes["features"] == {
        "available": False,
        "reason": "the store has no 'stats' column (built before it existed)",
    }
    assert modes["fused"]["available"] and modes["header"]["coverage"] == 0.0
    assert any("decides without the feature forest" in n for n in metrics["notes"])
    preds = pd.read_parquet(tmp_path / "e" / "predictions.parquet")
    assert len(preds) == 12 and preds["feature_prediction"].isna().all()


def test_paper_comparison_thresholds() -> None:
    ok = ["CT"] * 10 + ["MR"] * 10 + ["XR"] * 10
    assert paper_comparison(np.array(ok), "test") == {"comparable": True, "reason": None}
    assert paper_comparison(np.array(ok[:-1]), "test")["reason"] == (
        "test split too small to compare with the paper: 29 images, 10 CT, 10 MR, 9 XR"
    )
    two = ["MR"] * 44 + ["CT"] * 20
    assert paper_comparison(np.array(two), "test")["reason"] == (
        "test split too small to compare with the paper: 64 images, 44 MR, 20 CT"
    )
    few = ["MR"] * 44 + ["CT"] * 20 + ["XR"] * 2
    assert paper_comparison(np.array(few), "validate")["reason"].startswith(
        "validate split too small to compare with the paper: 66 images, 44 MR, 20 CT, 2 XR"
    )
    assert paper_comparison(np.array([], dtype=object), "test")["reason"] == (
        "test split too small to compare with the paper: 0 images"
    )
