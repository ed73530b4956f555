"""Inference: read a checkpoint, run its model, and classify files and folders.

Imports nothing from training::

    from hypermodal.inference import load_model, predict_proba, predict

The model names (:mod:`hypermodal.inference.model`) are loaded on first use: the processes that
only decode files for :func:`predict` import this package too and stay free of model code. No
module on the predict path imports PyTorch (a model runs on ONNX Runtime without it; see
:mod:`hypermodal.inference.backends`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypermodal.inference.predict import (
    DEFAULT_SLICES,
    PredictResult,
    PredictSummary,
    classify,
    predict,
    summary_dict,
    summary_text,
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
    "DEFAULT_SLICES",
    "LoadedModel",
    "PredictResult",
    "PredictSummary",
    "classify",
    "evidence_model",
    "load_model",
    "predict",
    "predict_proba",
    "read_checkpoint",
    "resolve_device",
    "summary_dict",
    "summary_text",
    "to_model_input",
]


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from hypermodal.inference import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
