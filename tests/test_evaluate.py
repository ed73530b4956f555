"""Evaluation metrics, output files and the report, on tiny synthetic stores.

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

from hypermodal.evaluate import (
    PAPER_RESULTS,
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    evaluate,
    per_dataset_table,
    write_report,
)
from hypermodal.labels import ClassVocabulary
from hypermodal.store import SliceStore, write_store_arrays
from hypermodal.train import TrainConfig, train

CLASSES = ("CT", "MR", "PT", "XR")
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


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = [
        (np.sin(yy / 1.5) > 0).astype(np.float32),
        (np.sin(xx / 1.5) > 0).astype(np.float32),
        np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2.0 * size)),
        (xx + yy) / (2.0 * size),
    ][label] + rng.normal(0, 0.15, (size, size))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def make_store(
    path: Path,
    n_per_class: tuple[int, int, int] = (8, 4, 6),
    test_classes: tuple[str, ...] = CLASSES,
    size: int = 32,
) -> SliceStore:
    rng = np.random.default_rng(1)
    vocab = ClassVocabulary()
    images, rows = [], []
    for split, n in zip(("train", "validate", "test"), n_per_class, strict=True):
        for label in CLASSES:
            if split == "test" and label not in test_classes:
                continue
            for i in range(n):
                images.append(_pattern(vocab.index(label), size, rng))
                rows.append({"dataset": f"{split}-set{i % 3}", "label": label, "split": split})
    return write_store_arrays(path, np.stack(images), pd.DataFrame(rows), vocab)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("eval")
    store = make_store(root / "store")
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.02, device="cpu")
    train(store.path, root / "run", cfg, progress=False)
    return {"root": root, "store": store, "ckpt": root / "run" / "checkpoints" / "best.pt"}


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 4
    y_true = rng.integers(0, k, 200)
    y_true[y_true == 2] = 0  # class 2 absent from the true labels
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, k, 200))
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has a class not in y_true
        expected_bal = balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(y_true, y_pred, k) == pytest.approx(expected_bal)
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, k), sk_confusion_matrix(y_true, y_pred, labels=range(k))
    )


def test_metric_edge_cases() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert np.isnan(accuracy(empty, empty))
    assert np.isnan(balanced_accuracy(empty, empty, 4))
    assert confusion_matrix(empty, empty, 3).shape == (3, 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 4)


def test_per_dataset_table_groups_by_dataset_and_true_class() -> None:
    frame = pd.DataFrame(
        {
            "dataset": ["a", "a", "a", "b", "b"],
            "label": ["MR", "CT", "CT", "CT", "CT"],
            "prediction": ["MR", "CT", "MR", "CT", "CT"],
        }
    )
    table = per_dataset_table(frame, list(CLASSES))
    assert table[["dataset", "label", "n", "correct"]].values.tolist() == [
        ["a", "CT", 2, 1],
        ["b", "CT", 2, 2],
        ["a", "MR", 1, 1],
    ]
    assert table["accuracy"].tolist() == [0.5, 1.0, 1.0]


# ---------------------------------------------------------------------------- evaluate


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
    assert metrics["confusion_matrix"] == sk_confusion_matrix(
        preds["label"], preds["prediction"], labels=list(CLASSES)
    ).tolist()
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


def test_predictions_do_not_depend_on_batch_size(run: dict, tmp_path: Path) -> None:
    """Eval mode: BatchNorm uses running statistics, so batching cannot change outputs."""
    evaluate(run["ckpt"], run["store"].path, tmp_path / "a", batch_size=5, write_report_md=False)
    evaluate(run["ckpt"], run["store"].path, tmp_path / "b", batch_size=64, write_report_md=False)
    a = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    cols = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "a" / "report.md").exists()


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


def test_empty_split_does_not_crash(run: dict, tmp_path: Path) -> None:
    store = make_store(tmp_path / "notest", n_per_class=(8, 4, 0))
    metrics = evaluate(run["ckpt"], store.path, tmp_path / "eval", split="test")
    assert metrics["num_images"] == 0
    assert metrics["accuracy"] is None and metrics["balanced_accuracy"] is None
    for name in OUTPUT_FILES:
        assert (tmp_path / "eval" / name).is_file(), name


def test_report_from_saved_metrics_says_when_a_class_has_no_data(
    run: dict, tmp_path: Path
) -> None:
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
