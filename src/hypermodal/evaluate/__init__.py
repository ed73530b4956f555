"""Evaluate: a checkpoint on the unseen test datasets: metrics, tables, figures and the report."""

from __future__ import annotations

from hypermodal.evaluate.report import (
    PAPER_RESULTS,
    write_report,
)
from hypermodal.evaluate.run import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    evaluate,
    per_dataset_table,
)

__all__ = [
    "PAPER_RESULTS",
    "accuracy",
    "balanced_accuracy",
    "confusion_matrix",
    "evaluate",
    "per_dataset_table",
    "write_report",
]
