"""Training: the loop, its checkpoints, and the batch feeder that reads the slice store.

The public API::

    from hypermodal.train import TrainConfig, train, load_model, predict_proba

Importing this package imports torch.
"""

from hypermodal.train.checkpoint import (
    CheckpointError,
    LoadedModel,
    load_model,
    predict_proba,
    read_checkpoint,
)
from hypermodal.train.loop import ResumeError, TrainConfig, train

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "ResumeError",
    "TrainConfig",
    "load_model",
    "predict_proba",
    "read_checkpoint",
    "train",
]
