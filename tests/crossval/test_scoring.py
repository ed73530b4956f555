"""Scores of out-of-fold predictions, and the report that puts balanced accuracy first."""

from __future__ import annotations

import pandas as pd
import pytest

from hypermodal.crossval.report import render, write_report
from hypermodal.crossval.scoring import MODE_TITLES, MODES, per_dataset, score_all, score_mode

CLASSES = ("CT", "MR", "PT", "XR", "OTHER")


def _frame() -> pd.DataFrame:
    """Out-of-fold predictions: CT in 3 datasets, MR in 2, XR in 1, no PT or OTHER."""
    rows = [
        # dataset, label, fused, features, header
        ("ct-a", "CT", "CT", "CT", "CT"),
        ("ct-a", "CT", "CT", "MR", "CT"),
        ("ct-a", "CT", "CT", "CT", "CT"),
        ("ct-a", "CT", "UNKNOWN", "CT", "CT"),
        ("ct-b", "CT", "CT", "CT", "none"),
        ("ct-b", "CT", "MR", "CT", "none"),
        ("ct-c", "CT", "CT", "XR", "OTHER"),
        ("mr-a", "MR", "MR", "MR", "MR"),
        ("mr-a", "MR", "MR", "CT", "MR"),
        ("mr-a", "MR", "UNKNOWN", "MR", "MR"),
        ("mr-b", "MR", "MR", "MR", "MR"),
        ("xr-a", "XR", "CT", "XR", "none"),
        ("xr-a", "XR", "XR", "XR", "none"),
    ]
    return pd.DataFrame(
        rows, columns=["dataset", "label", "pred_fused", "pred_features", "pred_header"]
    )


def test_balanced_accuracy_is_the_mean_recall_over_present_classes():
    s = score_mode(_frame(), "pred_fused", CLASSES)
    # CT: 5 of 7 right (UNKNOWN and MR wrong); MR: 3 of 4 (UNKNOWN wrong); XR: 1 of 2
    assert s["recall"] == pytest.approx({"CT": 5 / 7, "MR": 3 / 4, "XR": 1 / 2})
    assert "PT" not in s["recall"] and "OTHER" not in s["recall"]
    assert s["balanced_accuracy"] == pytest.approx((5 / 7 + 3 / 4 + 1 / 2) / 3)
    assert s["accuracy"] == pytest.approx(9 / 13)
    per_ds = [3 / 4, 1 / 2, 1, 2 / 3, 1, 1 / 2]  # ct-a, ct-b, ct-c, mr-a, mr-b, xr-a
    assert s["dataset_mean_accuracy"] == pytest.approx(sum(per_ds) / 6)
    assert s["dataset_mean_recall"]["CT"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert s["images"] == 13 and s["datasets"] == 6


def test_unknown_and_no_claim_count_as_wrong_in_the_last_confusion_column():
    s = score_mode(_frame(), "pred_fused", CLASSES)
    cm = s["confusion"]
    assert cm["classes"] == [*CLASSES, "UNKNOWN/none"]
    assert len(cm["matrix"]) == len(CLASSES)  # rows: true classes only
    ct, mr, xr = cm["matrix"][0], cm["matrix"][1], cm["matrix"][3]
    assert ct == [5, 1, 0, 0, 0, 1] and mr == [0, 3, 0, 0, 0, 1] and xr == [1, 0, 0, 1, 0, 0]
    header = score_mode(_frame(), "pred_header", CLASSES)
    assert header["recall"]["XR"] == 0.0  # "none": the header claimed nothing
    assert header["recall"]["CT"] == pytest.approx(4 / 7)
    assert header["confusion"]["matrix"][3][-1] == 2
    everything_unknown = _frame().assign(pred_fused="UNKNOWN")
    assert score_mode(everything_unknown, "pred_fused", CLASSES)["balanced_accuracy"] == 0.0


def test_notes_name_absent_classes_and_classes_with_few_datasets():
    out = score_all(_frame(), CLASSES)
    assert list(out["modes"]) == ["fused", "features", "header"]  # MODES order, present only
    assert out["classes_without_real_data"] == ["PT", "OTHER"]
    notes = " ".join(out["notes"])
    assert "PT, OTHER" in notes
    assert "MR (2)" in notes and "XR (1)" in notes
    assert "CT (" not in notes  # three datasets are enough
    assert "only 13 real images" in notes


def test_no_notes_for_a_large_corpus_of_every_class():
    rows = [
        {"dataset": f"{c}-{d}", "label": c, "pred_fused": c}
        for c in ("CT", "MR", "XR")
        for d in range(3)
        for _ in range(4)
    ]
    out = score_all(pd.DataFrame(rows), ("CT", "MR", "XR"))
    assert out["notes"] == [] and out["classes_without_real_data"] == []
    assert out["modes"]["fused"]["balanced_accuracy"] == 1.0


def test_per_dataset_table():
    table = per_dataset(_frame())
    assert list(table["dataset"]) == ["ct-a", "ct-b", "ct-c", "mr-a", "mr-b", "xr-a"]
    ct_a = table.set_index("dataset").loc["ct-a"]
    assert ct_a["label"] == "CT" and ct_a["images"] == 4
    assert ct_a["fused"] == pytest.approx(3 / 4) and ct_a["features"] == pytest.approx(3 / 4)
    assert ct_a["fused_prediction"] == "CT"
    assert table.set_index("dataset").loc["xr-a", "header"] == 0.0


def _metrics(frame: pd.DataFrame) -> dict:
    metrics = score_all(frame, CLASSES)
    metrics.update(
        {
            "classes": list(CLASSES),
            "real_datasets": 6,
            "real_images": len(frame),
            "folds": {"features": "dataset", "pixels": 6, "fusion": "dataset (nested)"},
            "simulated_images": 7,
            "simulated_share_of_training": 7 / 20,
            "calibration_error_fused": 0.0421,
            "seed": 3,
        }
    )
    return metrics


def test_report_puts_balanced_accuracy_first(tmp_path):
    frame = _frame()
    metrics = _metrics(frame)
    text = render(metrics, per_dataset(frame))
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| evidence |"))
    columns = [c.strip() for c in lines[head].strip("|").split("|")]
    assert columns[:3] == [
        "evidence",
        "balanced accuracy (images)",
        "balanced accuracy (datasets)",
    ]
    assert columns.index("balanced accuracy (datasets)") < columns.index("image accuracy")
    fused = lines[head + 2]  # the first row, after the separator
    assert fused.startswith(f"| {MODE_TITLES['fused']} |")
    balanced = 100 * metrics["modes"]["fused"]["balanced_accuracy"]
    assert fused.split("|")[2].strip() == f"**{balanced:.1f} %**"
    # modes in report order, the absent pixel mode left out
    order = [text.index(f"| {MODE_TITLES[m]} |") for m in MODES if m in metrics["modes"]]
    assert order == sorted(order) and MODE_TITLES["pixels"] not in text
    for note in metrics["notes"]:
        assert f"- {note}" in text
    assert "Every one of the 6 real datasets (13 real images)" in text
    assert "35.0 % of the training images" in text
    recall_head = next(line for line in lines if line.startswith("| evidence | CT"))
    assert "PT" not in recall_head and "OTHER" not in recall_head
    assert "| CT | 5 | 1 | 0 | 0 | 0 | 1 |" in text  # the fused confusion matrix
    assert "0.042" in text and "Seed 3" in text
    write_report(tmp_path / "report.md", metrics, per_dataset(frame))
    assert (tmp_path / "report.md").read_text() == text
