"""Evaluate: a checkpoint on the unseen test datasets: metrics, tables, figures and the report.

:func:`evaluate` (``run.py``) predicts one split of a store and writes everything;
``metrics.py`` holds the scores, ``figures.py`` the plots, ``history.py`` the training history as
read back, ``evidence.py`` the evidence modes (pixels, features, header, fused) and when a split
is too small to set beside the paper, and ``report.py`` (with ``headline.py`` and
``markdown.py``) the Markdown report.
"""

from __future__ import annotations

from hypermodal.evaluate.headline import PAPER_RESULTS
from hypermodal.evaluate.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    per_class_table,
    per_dataset_table,
)
from hypermodal.evaluate.report import write_report
from hypermodal.evaluate.run import evaluate

__all__ = [
    "PAPER_RESULTS",
    "accuracy",
    "balanced_accuracy",
    "confusion_matrix",
    "evaluate",
    "per_class_table",
    "per_dataset_table",
    "write_report",
]
