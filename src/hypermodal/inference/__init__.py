"""Inference: read a checkpoint, run its model, and classify files and folders.

Imports nothing from training::

    from hypermodal.inference import load_model, predict_proba, predict

The model names (:mod:`hypermodal.inference.model`) are loaded on first use, because they import
torch: the processes that only decode files for :func:`predict` import this package too and stay
free of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypermodal.inference.predict import (
    predict,
    summary_dict,
)

if TYPE_CHECKING:
    from hypermodal.inference.model import (
        LoadedModel,
        evidence_model,
        load_model,
        predict_proba,
        read_checkpoint,
        resolve_device,
        to_model_input,
    )

_MODEL_NAMES = frozenset(
    {
        "LoadedModel",
        "evidence_model",
        "load_model",
        "predict_proba",
        "read_checkpoint",
        "resolve_device",
        "to_model_input",
    }
)

__all__ = [
    "LoadedModel",
    "evidence_model",
    "load_model",
    "predict",
    "predict_proba",
    "read_checkpoint",
    "resolve_device",
    "summary_dict",
    "to_model_input",
]


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from hypermodal.inference import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
