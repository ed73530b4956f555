"""Split: whole datasets to train/validate/test, with per-dataset caps (written once, then reused).

``plan.py`` holds :class:`SplitPlan` and split files, ``assignment.py`` makes, reuses and applies
a split, ``auto.py`` finds one automatically, ``constraints.py`` and ``quality.py`` say what a
good split needs and how close one comes.
"""

from __future__ import annotations

from hypermodal.common.errors import SplitError
from hypermodal.split.assignment import (
    apply_split,
    check_synthetic,
    class_counts,
    make_split,
    split_or_reuse,
    synthetic_datasets,
)
from hypermodal.split.auto import auto_split
from hypermodal.split.plan import (
    CAP_ORDERS,
    DEFAULT_CAPS,
    DEFAULT_RATIOS,
    SPLIT_ALIASES,
    SPLITS,
    SplitPlan,
    split_name,
)
from hypermodal.split.quality import location_quality, split_quality

__all__ = [
    "CAP_ORDERS",
    "DEFAULT_CAPS",
    "DEFAULT_RATIOS",
    "SPLITS",
    "SPLIT_ALIASES",
    "SplitError",
    "SplitPlan",
    "apply_split",
    "auto_split",
    "check_synthetic",
    "class_counts",
    "location_quality",
    "make_split",
    "split_or_reuse",
    "split_name",
    "split_quality",
    "synthetic_datasets",
]
