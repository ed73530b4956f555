"""Training: the loop, its checkpoints, and the steps of one epoch.

The public API::

    from hypermodal.train import TrainConfig, train

The run is :class:`Trainer` (:mod:`hypermodal.train.loop`); one epoch is :func:`train_one_epoch`
and :func:`validate` (:mod:`hypermodal.train.steps`); with ``TrainConfig(evidence="all")`` the
feature forests and the fusion are fitted after the last epoch (:mod:`hypermodal.train.evidence`).
The checkpoint reader lives in :mod:`hypermodal.inference` (``load_model``,
``read_checkpoint``) and the store batch feeder in :mod:`hypermodal.store.loader`: inference and
evaluation never import training. Importing this package imports torch.
"""

from hypermodal.common.errors import CheckpointError, ResumeError
from hypermodal.train.config import HISTORY_COLUMNS, RESUMABLE_FIELDS, TrainConfig, effective_lr
from hypermodal.train.loop import Trainer, train
from hypermodal.train.steps import augment_batch, train_one_epoch, validate

__all__ = [
    "HISTORY_COLUMNS",
    "RESUMABLE_FIELDS",
    "CheckpointError",
    "ResumeError",
    "TrainConfig",
    "Trainer",
    "augment_batch",
    "effective_lr",
    "train",
    "train_one_epoch",
    "validate",
]
