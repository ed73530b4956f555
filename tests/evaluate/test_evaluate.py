"""Evaluation output files and the report, on tiny synthetic stores.

Synthetic data check the mechanics only; nothing here is an accuracy claim.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from hypermodal.evaluate import PAPER_RESULTS, evaluate, write_report
from hypermodal.store import SliceStore
from hypermodal.train import TrainConfig, train
from tests import helpers
from tests.helpers import CLASSES

OUTPUT_FILES = (
    "predictions.parquet",
    "metrics.json",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "per_dataset.csv",
    "curves.png",
    "training_time.png",
    "class_counts.png",
    "report.md",
)


def dataset_name(split: str, i: int) -> str:
    return f"{split}-set{i % 3}"


def make_store(
    path: Path,
    n_per_class: tuple[int, int, int] = (8, 4, 6),
    test_classes: tuple[str, ...] | None = None,
) -> SliceStore:
    """The synthetic store of these tests: three datasets per split."""
    return helpers.make_store(
        path, n_per_class, seed=1, test_classes=test_classes, dataset_name=dataset_name
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("eval")
    store = make_store(root / "store")
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.02, device="cpu")
    train(store.path, root / "run", cfg, progress=False)
    return {"root": root, "store": store, "ckpt": root / "run" / "checkpoints" / "best.pt"}


@pytest.mark.slow
def test_evaluate_writes_everything_and_agrees_with_sklearn(run: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    metrics = evaluate(run["ckpt"], run["store"].path, out, split="test", batch_size=10)
    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy",
        "balanced_accuracy",
        "classes",
        "confusion_matrix",
        "per_dataset",
        "split",
        "num_images",
        "model",
        "split_hash",
        "checkpoint",
        "versions",
        "class_counts",
        "training",
        "prediction",
    ):
        assert key in saved, key
    assert saved["classes"] == list(CLASSES) and saved["split"] == "test"
    assert saved["num_images"] == 24 and saved["model"] == "resnet18"
    assert saved["split_hash"] == run["store"].split_hash

    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds.columns[:4]) == ["row", "dataset", "label", "prediction"]
    assert [f"p_{c}" for c in CLASSES] == [c for c in preds.columns if c.startswith("p_")]
    probs = preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # probabilities, not logits
    assert (preds["prediction"] == np.array(CLASSES)[probs.argmax(axis=1)]).all()
    assert sorted(preds["row"]) == sorted(run["store"].rows("test"))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(preds["label"], preds["prediction"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(preds["label"], preds["prediction"])
    assert metrics["balanced_accuracy"] == pytest.approx(bal)
    assert (
        metrics["confusion_matrix"]
        == sk_confusion_matrix(preds["label"], preds["prediction"], labels=list(CLASSES)).tolist()
    )
    cm_csv = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert cm_csv.values.tolist() == metrics["confusion_matrix"]
    per_ds = pd.read_csv(out / "per_dataset.csv")
    assert list(per_ds.columns) == ["dataset", "label", "n", "correct", "accuracy"]
    assert per_ds["n"].sum() == 24
    assert metrics["class_counts"]["train"] == {c: 8 for c in CLASSES}
    assert metrics["training"]["epochs"] == 2 and metrics["training"]["seconds"] > 0

    report = (out / "report.md").read_text()
    for acc, bal_acc in PAPER_RESULTS.values():
        assert f"{acc:.2%}" in report and f"{bal_acc:.2%}" in report
    assert "96.00%" in report and "86.17%" in report
    assert "Tiny corpus" in report
    assert "](confusion_matrix.png)" in report and "](curves.png)" in report
    assert run["store"].split_hash in report
    # balanced accuracy first; a split this small is said to be so beside the paper's figures
    assert "| model | balanced accuracy | accuracy | images |" in report
    small = "test split too small to compare with the paper: 24 images, 6 CT, 6 MR, 6 PT, 6 XR"
    assert metrics["paper_comparison"] == {"comparable": False, "reason": small}
    assert f"**{small}.**" in report
    assert "This model is **pixels only**" in report
    assert "Simulated share of the training images: 0.00%" in report
    assert metrics["evidence_modes"]["pixels"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert metrics["evidence_modes"]["fused"]["available"] is False


@pytest.mark.slow
def test_predictions_do_not_depend_on_batch_size(run: dict, tmp_path: Path) -> None:
    """Eval mode: BatchNorm uses running statistics, so batching cannot change outputs."""
    evaluate(run["ckpt"], run["store"].path, tmp_path / "a", batch_size=5, write_report_md=False)
    evaluate(run["ckpt"], run["store"].path, tmp_path / "b", batch_size=64, write_report_md=False)
    a = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    cols = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "a" / "report.md").exists()


@pytest.mark.slow
def test_class_missing_from_test_split(run: dict, tmp_path: Path) -> None:
    store = make_store(tmp_path / "nopt", test_classes=("CT", "MR", "XR"))
    metrics = evaluate(run["ckpt"], store.path, tmp_path / "eval", split="test")
    assert metrics["missing_classes"] == ["PT"]
    assert metrics["classes"] == list(CLASSES)
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (4, 4) and cm[2].sum() == 0
    preds = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(preds["label"], preds["prediction"])
    assert metrics["balanced_accuracy"] == pytest.approx(bal)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "No test images of PT" in report


@pytest.mark.slow
def test_empty_split_does_not_crash(run: dict, tmp_path: Path) -> None:
    store = make_store(tmp_path / "notest", n_per_class=(8, 4, 0))
    metrics = evaluate(run["ckpt"], store.path, tmp_path / "eval", split="test")
    assert metrics["num_images"] == 0
    assert metrics["accuracy"] is None and metrics["balanced_accuracy"] is None
    for name in OUTPUT_FILES:
        assert (tmp_path / "eval" / name).is_file(), name


@pytest.mark.slow
def test_report_from_saved_metrics_says_when_a_class_has_no_data(run: dict, tmp_path: Path) -> None:
    metrics = evaluate(run["ckpt"], run["store"].path, tmp_path, write_report_md=False)
    metrics = json.loads(json.dumps(metrics))
    for split in metrics["class_counts"]:
        metrics["class_counts"][split]["PT"] = 0
    metrics["model"] = "vgg16"
    path = write_report(tmp_path, metrics, run["root"] / "run" / "history.csv")
    text = path.read_text()
    assert "No data at all for PT" in text
    assert "VGG16" in text and "94.58%" in text and "81.08%" in text
    assert "## Reproducibility" in text and '"seed": 0' in text
