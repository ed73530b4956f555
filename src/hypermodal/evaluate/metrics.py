"""Classification metrics of one evaluation, computed with scikit-learn.

* accuracy = correct / images;
* balanced accuracy = mean recall over the classes *present in the true labels* (scikit-learn's
  ``balanced_accuracy_score``): a class with no images in the split (for example PET when no PET
  data exist) is left out rather than counted as 0 or 1;
* confusion matrix: ``cm[i, j]`` = images of true class ``i`` predicted as class ``j``, in the
  checkpoint's class order.

Labels are class indices in ``[0, num_classes)``. Empty inputs, which scikit-learn refuses, give
NaN scores, an all-zero confusion matrix and per-class rows without recall or precision.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is not a finite number.

    >>> finite_or_none("0.5"), finite_or_none(float("nan")), finite_or_none(None)
    (0.5, None, None)
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_safe(value: Any) -> Any:
    """NaN/inf → None, numpy → Python, recursively (``metrics.json`` must be valid JSON).

    >>> json_safe({"a": np.float32(0.5), "b": [float("nan")]})
    {'a': 0.5, 'b': [None]}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _checked(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays as int64, after checking their lengths and (with ``num_classes``) range."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    if (
        num_classes is not None
        and len(y_true)
        and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes)
    ):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    return y_true, y_pred


@contextlib.contextmanager
def _expected_warnings_ignored() -> Iterator[None]:
    """Silence scikit-learn's warnings about situations these metrics define: predicted classes
    absent from the true labels (they only lower recall), and a single class in both."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        yield


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of true class ``i`` predicted as ``j`` (int64, num_classes²).

    Raises:
        ValueError: the arrays differ in length, or hold an index outside ``[0, num_classes)``.

    >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    """
    y_true, y_pred = _checked(y_true, y_pred, num_classes)
    if not len(y_true):
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    with _expected_warnings_ignored():
        cm = skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    return cm.astype(np.int64, copy=False)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (NaN when there are none)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``y_true`` (NaN when ``y_true`` is empty).

    Raises:
        ValueError: as :func:`confusion_matrix`.

    >>> balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), 4)
    0.5
    """
    y_true, y_pred = _checked(y_true, y_pred, num_classes)
    if not len(y_true):
        return float("nan")
    with _expected_warnings_ignored():
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def per_class_table(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> list[dict[str, Any]]:
    """Per class: true and predicted counts, correct, recall and precision (None if undefined).

    >>> [r["recall"] for r in per_class_table(np.array([0, 0]), np.array([0, 1]), ["A", "B"])]
    [0.5, None]
    """
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    if len(y_true):
        precision, recall, _, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=np.arange(k), average=None, zero_division=np.nan
        )
    else:
        precision = recall = np.full(k, np.nan)
    return [
        {
            "class": name,
            "n_true": int(cm[i].sum()),
            "n_predicted": int(cm[:, i].sum()),
            "correct": int(cm[i, i]),
            "recall": finite_or_none(recall[i]),
            "precision": finite_or_none(precision[i]),
        }
        for i, name in enumerate(classes)
    ]


def per_dataset_table(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Accuracy per (dataset, true class), like the paper's Table 3.

    Args:
        predictions: needs columns ``dataset``, ``label``, ``prediction``.
        classes: class order used to sort the rows (then dataset name).

    Returns:
        Columns ``dataset, label, n, correct, accuracy``.
    """
    cols = ["dataset", "label", "n", "correct", "accuracy"]
    if predictions.empty:
        return pd.DataFrame(columns=cols)
    frame = predictions.assign(correct=predictions["label"] == predictions["prediction"])
    table = (
        frame.groupby(["dataset", "label"], sort=False)["correct"]
        .agg(n="size", correct="sum")
        .reset_index()
    )
    table["correct"] = table["correct"].astype(int)
    table["accuracy"] = table["correct"] / table["n"]
    order = {c: i for i, c in enumerate(classes)}
    table["_k"] = table["label"].map(order).fillna(len(order))
    table = table.sort_values(["_k", "dataset"], kind="stable").drop(columns="_k")
    return table[cols].reset_index(drop=True)
