"""Split: whole datasets to train/validate/test, with per-dataset caps (written once, then reused)."""

from __future__ import annotations

from hypermodal.split.assignment import (
    DEFAULT_RATIOS,
    SPLITS,
    SplitError,
    SplitPlan,
    apply_split,
    auto_split,
    class_counts,
    location_quality,
    make_split,
    split_or_reuse,
    split_quality,
)

__all__ = [
    "DEFAULT_RATIOS",
    "SPLITS",
    "SplitError",
    "SplitPlan",
    "apply_split",
    "auto_split",
    "class_counts",
    "location_quality",
    "make_split",
    "split_or_reuse",
    "split_quality",
]
