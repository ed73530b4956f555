"""Training: the loop, its checkpoints, and the steps of one epoch.

The public API::

    from hypermodal.train import TrainConfig, train

The run is :class:`Trainer` (:mod:`hypermodal.train.loop`); one epoch is :func:`train_one_epoch`
and :func:`validate` (:mod:`hypermodal.train.steps`). The checkpoint reader and the store batch
feeder live in :mod:`hypermodal.inference` and :mod:`hypermodal.store.loader`; their names are
importable from here as well. Importing this package imports torch.
"""

from hypermodal.common.errors import CheckpointError, ResumeError
from hypermodal.inference.model import (
    LoadedModel,
    load_model,
    predict_proba,
    read_checkpoint,
)
from hypermodal.train.config import HISTORY_COLUMNS, RESUMABLE_FIELDS, TrainConfig, effective_lr
from hypermodal.train.loop import Trainer, train
from hypermodal.train.steps import augment_batch, train_one_epoch, validate

__all__ = [
    "HISTORY_COLUMNS",
    "RESUMABLE_FIELDS",
    "CheckpointError",
    "LoadedModel",
    "ResumeError",
    "TrainConfig",
    "Trainer",
    "augment_batch",
    "effective_lr",
    "load_model",
    "predict_proba",
    "read_checkpoint",
    "train",
    "train_one_epoch",
    "validate",
]
