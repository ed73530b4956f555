"""Scores of out-of-fold predictions: one column per evidence mode, balanced accuracy first.

Every figure here is computed on **real** images of datasets the scoring model never saw.
``balanced_accuracy`` is the paper's: the mean recall over the classes that have real images,
counted in images (a class without any, such as PET in the bundled corpus, is left out and named
in ``classes_without_real_data``). On a corpus where one template volume holds most images of its
class it measures that volume, so ``balanced_accuracy_datasets`` is given beside it: the mean over
classes of the mean accuracy of the class's datasets (each dataset counts once).
``dataset_mean_accuracy`` is the mean of per-dataset accuracies over all datasets (the paper's
Table 3 averaged). ``UNKNOWN`` and "no claim" count as wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hypermodal.evaluate.metrics import confusion_matrix, finite_or_none

#: Evidence modes scored, in report order.
MODES: tuple[str, ...] = (
    "fused",
    "image",
    "fused_per_image",
    "features",
    "series",
    "pixels",
    "header",
)
MODE_TITLES = {
    "fused": "fused (pixels + features + header), one answer per series",
    "image": "features + pixels (no header), one answer per series",
    "fused_per_image": "fused, each image on its own",
    "features": "features only (per image)",
    "series": "features only (per series)",
    "pixels": "pixels only (the paper's CNN)",
    "header": "header only",
}
#: A held-out set smaller than this is flagged as too small to mean much.
SMALL_SPLIT = 30


def score_mode(frame: pd.DataFrame, column: str, classes: tuple[str, ...]) -> dict[str, Any]:
    """Scores of prediction column ``column`` against ``label`` over the rows of ``frame``."""
    y, pred = frame["label"].astype(str), frame[column].astype(str)
    correct = (y == pred).to_numpy()
    per_dataset = frame.assign(_c=correct).groupby("dataset")["_c"].mean()
    present = [c for c in classes if (y == c).any()]
    recall = {c: float(correct[(y == c).to_numpy()].mean()) for c in present}
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    y_idx = np.array([index[c] for c in y])
    p_idx = np.array([index.get(c, k) for c in pred])  # UNKNOWN / none -> extra column
    cm = confusion_matrix(y_idx, np.minimum(p_idx, k), k + 1)[:k]
    per_class_dataset = (
        frame.assign(_c=correct).groupby(["label", "dataset"])["_c"].mean().groupby("label").mean()
    )
    by_dataset = [float(v) for v in per_class_dataset.values]
    return {
        "balanced_accuracy": finite_or_none(np.mean(list(recall.values())) if recall else None),
        "balanced_accuracy_datasets": finite_or_none(np.mean(by_dataset) if by_dataset else None),
        "dataset_mean_accuracy": finite_or_none(per_dataset.mean()),
        "accuracy": finite_or_none(correct.mean() if len(correct) else None),
        "recall": recall,
        "dataset_mean_recall": {c: float(v) for c, v in per_class_dataset.items()},
        "images": int(len(frame)),
        "datasets": int(frame["dataset"].nunique()),
        "confusion": {"classes": [*classes, "UNKNOWN/none"], "matrix": cm.tolist()},
    }


def score_all(frame: pd.DataFrame, classes: tuple[str, ...]) -> dict[str, Any]:
    """Scores per mode (columns ``pred_<mode>``) and the notes a reader needs with them."""
    modes = {m: score_mode(frame, f"pred_{m}", classes) for m in MODES if f"pred_{m}" in frame}
    present = set(frame["label"].astype(str))
    notes = []
    absent = [c for c in classes if c not in present]
    if absent:
        notes.append(
            f"no real images of {', '.join(absent)}: their recall is not measured, and the "
            "balanced accuracy is the mean over the other classes"
        )
    small = frame.groupby("label")["dataset"].nunique()
    few = [f"{c} ({n})" for c, n in small.items() if n < 3]
    if few:
        notes.append(
            "classes with fewer than 3 real datasets, whose recall rests on very few "
            f"acquisitions: {', '.join(few)}"
        )
    if len(frame) < SMALL_SPLIT:
        notes.append(f"only {len(frame)} real images were scored: too few to mean much")
    return {"modes": modes, "classes_without_real_data": absent, "notes": notes}


def per_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 3 with one accuracy column per mode (one row per real dataset)."""
    cols = {m: f"pred_{m}" for m in MODES if f"pred_{m}" in frame}
    rows = []
    for (dataset, label), g in frame.groupby(["dataset", "label"], sort=True):
        row: dict[str, Any] = {"dataset": dataset, "label": label, "images": len(g)}
        for mode, col in cols.items():
            row[mode] = float((g[col].astype(str) == str(label)).mean())
        row["fused_prediction"] = g[cols.get("fused", next(iter(cols.values())))].mode().iat[0]
        rows.append(row)
    return pd.DataFrame(rows)
