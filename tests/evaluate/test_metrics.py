"""The evaluation metrics: equal to scikit-learn's, and defined where it refuses (empty input)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from hypermodal.evaluate import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    per_class_table,
    per_dataset_table,
)
from tests.helpers import CLASSES


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


def test_per_class_table_leaves_undefined_recall_and_precision_empty() -> None:
    rows = per_class_table(np.array([0, 0, 1]), np.array([0, 2, 2]), list(CLASSES))
    counts = [(r["class"], r["n_true"], r["n_predicted"], r["correct"]) for r in rows]
    assert counts == [("CT", 2, 1, 1), ("MR", 1, 0, 0), ("PT", 0, 2, 0), ("XR", 0, 0, 0)]
    assert [r["recall"] for r in rows] == [0.5, 0.0, None, None]
    assert [r["precision"] for r in rows] == [1.0, None, 0.0, None]
    empty = np.zeros(0, dtype=np.int64)
    assert per_class_table(empty, empty, ["CT"]) == [
        {
            "class": "CT",
            "n_true": 0,
            "n_predicted": 0,
            "correct": 0,
            "recall": None,
            "precision": None,
        }
    ]


def test_absent_and_single_classes_give_scores_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert balanced_accuracy(np.array([0, 0]), np.array([0, 3]), 4) == 0.5
        assert balanced_accuracy(np.array([0, 0]), np.array([0, 0]), 1) == 1.0
        assert confusion_matrix(np.array([0, 0]), np.array([0, 0]), 1).tolist() == [[2]]
