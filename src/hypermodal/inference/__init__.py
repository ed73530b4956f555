"""Inference: load a checkpoint and classify files and folders (imports nothing from training)."""

from __future__ import annotations

from hypermodal.inference.predict import (
    predict,
    summary_dict,
)

__all__ = [
    "predict",
    "summary_dict",
]
