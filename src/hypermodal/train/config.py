"""Training settings (:class:`TrainConfig`) and the names of a run folder's files.

Recipe (the defaults, the paper's §2.4): ResNet-18, SGD with learning rate 0.1, momentum 0.9 and
L2 weight decay 0.005, batch 128, 10 epochs, learning rate divided by 10 when the loss plateaus.

Deliberate differences from the paper's public code (see DESIGN.md):

* the plateau scheduler is stepped once per epoch on the **validation** loss (the paper's code
  stepped it on the training loss, ten times per epoch); when the validation split is empty the
  training loss is used instead, with a logged warning and a note in ``config.json``;
* validation runs with ``model.eval()`` and ``torch.no_grad()`` (BatchNorm uses its running
  statistics and does not update them);
* the learning rate is the paper's 0.1 (the code used 0.01);
* ``best.pt`` is the epoch with the lowest validation loss (the criterion the scheduler uses;
  smoother than accuracy, which saturates early on this task), or the lowest training loss when
  there is no validation split;
* the plateau patience is not given in the paper; it is 1 epoch here (the code waited 3 steps of
  a tenth of an epoch, but on the training loss). Change it with ``plateau_patience``.

A run folder holds::

    config.json           resolved config, store path, split hash, class order, versions, the
                          simulated share of the training images; with ``evidence="all"``
                          also what the evidence was fitted on (``evidence``)
    history.csv           one row per finished epoch (rewritten atomically after each epoch)
    tensorboard/          the same scalars for TensorBoard
    checkpoints/last.pt   every epoch, with optimizer/scheduler/scaler/RNG state (for resume);
                          with ``checkpoint_every_steps`` also every N steps (mid-epoch resume)
    checkpoints/best.pt   lowest validation loss so far
                          (best.pt and last.pt gain the key ``evidence`` at the end of an
                          ``evidence="all"`` run; every checkpoint holds ``simulated_share``)
    checkpoints/epoch-NNN.pt   the newest ``keep_epochs`` epochs (-1: all, 0: none)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hypermodal.models import MODEL_NAMES

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
LR_SCALING_CHOICES = ("none", "linear")
#: ``TrainConfig.evidence``: the CNN alone (the paper), or the CNN with the feature forest and a
#: fusion fitted at the end of the run (:mod:`hypermodal.train.evidence`).
EVIDENCE_CHOICES = ("pixels", "all")

#: Columns of history.csv, in order.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "train_images",
    "val_images",
    "train_seconds",
    "val_seconds",
    "seconds",
    "elapsed_seconds",
    "images_per_s",
)

#: Fields that may change when a run is resumed (they do not change what the CNN learns, or, for
#: ``epochs``, extend it; ``evidence`` is fitted after the last epoch, so a finished run can be
#: resumed to add it). Every other field must match the checkpoint's config.
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "workers",
        "device",
        "amp",
        "channels_last",
        "keep_epochs",
        "eval_batch_size",
        "compile",
        "checkpoint_every_steps",
        "evidence",
    }
)


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's recipe.

    Attributes:
        model: one of :data:`hypermodal.models.MODEL_NAMES`.
        epochs: total epochs (a resumed run stops at the same count).
        batch_size: images per optimisation step.
        lr: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD ``weight_decay``).
        plateau_factor: learning-rate multiplier when the monitored loss plateaus.
        plateau_patience: epochs without improvement tolerated before reducing.
        seed: seeds weights, data order and dropout.
        workers: data-loader worker processes; ``None`` = auto (0 on CPU, ≤ 4 on CUDA).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: mixed precision: ``"auto"`` (bf16, or fp16 with loss scaling, on CUDA only; off on
            CPU), ``"bf16"``, ``"fp16"`` or ``"off"``.
        channels_last: channels-last memory format; ``None`` = auto (on for CUDA).
        balance: class-balanced sampling with replacement (off = the paper).
        max_images_per_epoch: cap on training images per epoch (quick demos); ``None`` = all.
        train_size: side length fed to the network, ≤ the stored size (resized on the device,
            antialiased; stored in the checkpoint so inference does the same); ``None`` = stored.
        keep_epochs: how many ``epoch-NNN.pt`` to keep (0 none, -1 all).
        eval_batch_size: validation batch size; ``None`` = 2 × batch_size.
        deterministic: ``torch.use_deterministic_algorithms`` and no cuDNN autotuning (slower).
        augment: label-preserving geometric augmentation on the device (random flips, quarter
            turns, and crops of 70–100 % of the side resized back); off = the paper. Orientation
            and framing say nothing about modality, so these cannot teach a wrong cue.
        lr_scaling: ``"none"`` (``lr`` is used as given, the paper) or ``"linear"``: the
            learning rate is ``lr × global_batch / base_batch_size`` (global batch = ranks ×
            ``batch_size``), the linear scaling rule; pair it with ``warmup_epochs``.
        base_batch_size: the batch ``lr`` was tuned for (the paper: 0.1 at 128).
        warmup_epochs: ramp the learning rate linearly, step by step, from ``lr/steps`` to its
            full value over this many epochs (0 = none); the plateau scheduler waits for the end
            of the warm-up.
        sync_batchnorm: under data parallelism, BatchNorm statistics over the global batch
            (``SyncBatchNorm``, CUDA only; slower, closer to one process); off = per-rank
            statistics (a warning and per-rank statistics on the CPU).
        compile: ``torch.compile`` the training forward/backward (CUDA; first epoch pays the
            compilation).
        checkpoint_every_steps: also write ``last.pt`` every this many optimisation steps
            (counted from the start of the run), so that an interrupted epoch resumes where it
            stopped instead of from its start; ``None`` = at the end of every epoch only.
        evidence: ``"pixels"`` (the CNN alone, the paper) or ``"all"``: after the last epoch
            (main rank only) fit the feature forest on the train split and the fusion of
            pixels, features and header on the validation split, and save them in ``best.pt``
            and ``last.pt`` under ``evidence`` (:mod:`hypermodal.train.evidence`).
    """

    model: str = "resnet18"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.005
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    balance: bool = False
    max_images_per_epoch: int | None = None
    train_size: int | None = None
    keep_epochs: int = 0
    eval_batch_size: int | None = None
    deterministic: bool = False
    augment: bool = False
    lr_scaling: str = "none"
    base_batch_size: int = 128
    warmup_epochs: int = 0
    sync_batchnorm: bool = False
    compile: bool = False
    checkpoint_every_steps: int | None = None
    evidence: str = "pixels"

    def __post_init__(self) -> None:
        self.model = str(self.model).strip().lower()
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; valid names: {', '.join(MODEL_NAMES)}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"amp must be one of {AMP_CHOICES}, got {self.amp!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.max_images_per_epoch is not None and self.max_images_per_epoch < 1:
            raise ValueError("max_images_per_epoch must be ≥ 1 or None")
        if self.train_size is not None and self.train_size < 32:
            raise ValueError(f"train_size must be ≥ 32, got {self.train_size}")
        if self.lr_scaling not in LR_SCALING_CHOICES:
            raise ValueError(
                f"lr_scaling must be one of {LR_SCALING_CHOICES}, got {self.lr_scaling!r}"
            )
        if int(self.base_batch_size) < 1:
            raise ValueError(f"base_batch_size must be ≥ 1, got {self.base_batch_size}")
        if int(self.warmup_epochs) < 0:
            raise ValueError(f"warmup_epochs must be ≥ 0, got {self.warmup_epochs}")
        if self.checkpoint_every_steps is not None and int(self.checkpoint_every_steps) < 1:
            raise ValueError(
                f"checkpoint_every_steps must be ≥ 1 or None, got {self.checkpoint_every_steps}"
            )
        if self.evidence not in EVIDENCE_CHOICES:
            raise ValueError(f"evidence must be one of {EVIDENCE_CHOICES}, got {self.evidence!r}")
        if self.keep_epochs < -1:
            raise ValueError("keep_epochs must be -1 (all), 0 (none) or a positive count")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they are usually typos)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        return cls(**data)


def effective_lr(config: TrainConfig, world_size: int = 1) -> float:
    """The learning rate after the scaling rule: ``lr`` or ``lr × global_batch / base``."""
    if config.lr_scaling == "linear":
        return config.lr * config.batch_size * max(1, world_size) / config.base_batch_size
    return float(config.lr)
