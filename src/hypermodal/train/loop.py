"""The training loop: the paper's recipe (§2.4), made resumable and observable.

Recipe (defaults of :class:`TrainConfig`): ResNet-18, SGD with learning rate 0.1, momentum 0.9 and
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

Outputs in ``out_dir``::

    config.json           resolved config, store path, split hash, class order, versions
    history.csv           one row per finished epoch (rewritten atomically after each epoch)
    tensorboard/          the same scalars for TensorBoard
    checkpoints/last.pt   every epoch, with optimizer/scheduler/scaler/RNG state (for resume);
                          with ``checkpoint_every_steps`` also every N steps (mid-epoch resume)
    checkpoints/best.pt   lowest validation loss so far
    checkpoints/epoch-NNN.pt   the newest ``keep_epochs`` epochs (-1: all, 0: none)

Data parallelism: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`train` joins
the process group by itself (:mod:`hypermodal.train.distributed`: NCCL on GPUs, Gloo on CPUs)
and wraps the model in DistributedDataParallel. ``batch_size`` is then the batch *per rank*; the
global batch is ``WORLD_SIZE × batch_size`` and the ranks together see exactly the images a
one-process run with that batch sees. Validation sums are reduced over ranks; only rank 0 writes
files. ``lr_scaling="linear"`` scales the learning rate with the global batch
(``lr × global_batch / base_batch_size``, Goyal et al. 2017) and ``warmup_epochs`` ramps it up
linearly per step; see docs/distributed.md.

Determinism: the data order of epoch ``e`` depends only on ``(seed, e)`` and the torch RNG is
re-seeded from ``(seed, e)`` at the start of every epoch, so a resumed run repeats exactly what an
uninterrupted one does (bit for bit on the CPU; on CUDA up to cuDNN's non-determinism unless
``deterministic=True``). A mid-epoch ``last.pt`` (``checkpoint_every_steps``) also holds each rank's
RNG state and running sums at that step; a resume skips the batches already done without reading
them and restores those, so the rest of the epoch is the same too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hypermodal.common.errors import ResumeError
from hypermodal.common.files import write_text_atomic
from hypermodal.common.versions import package_versions
from hypermodal.models import MODEL_NAMES, build_model
from hypermodal.store import SliceStore
from hypermodal.store.shards import (
    ShardFeeder,
    ShardSet,
    ShardTrainingData,
    is_s3_url,
    is_shard_set,
)
from hypermodal.train.checkpoint import (
    autocast_context,
    cpu_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from hypermodal.train.data import (
    BatchFeeder,
    resolve_device,
    resolve_workers,
    to_model_input,
)
from hypermodal.train.distributed import (
    DistContext,
    init_distributed,
    loss_weight,
    rank_device,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
LR_SCALING_CHOICES = ("none", "linear")

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

#: Fields that may change when a run is resumed (they do not change what is learned, or, for
#: ``epochs``, extend it). Every other field must match the checkpoint's config.
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


# ----------------------------------------------------------------------------------------------
# one epoch


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    key = [int(seed), int(epoch), 7] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def effective_lr(config: TrainConfig, world_size: int = 1) -> float:
    """The learning rate after the scaling rule: ``lr`` or ``lr × global_batch / base``."""
    if config.lr_scaling == "linear":
        return config.lr * config.batch_size * max(1, world_size) / config.base_batch_size
    return float(config.lr)


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, unit="batch")


def augment_batch(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Random flips, quarter turns and a shared random crop (resized back) for a float batch.

    Draws from torch's global generator, which the loop re-seeds every epoch, so a resumed run
    sees the same augmentations.
    """
    b, _, h, w = x.shape
    flip_h = torch.rand(b, device=x.device) < 0.5
    flip_v = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
    if h == w:
        turns = int(torch.randint(0, 4, (1,)).item())
        x = torch.rot90(x, turns, dims=(-2, -1))
    frac = float(torch.empty(1).uniform_(0.7, 1.0).item())
    ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
    top = int(torch.randint(0, h - ch + 1, (1,)).item())
    left = int(torch.randint(0, w - cw + 1, (1,)).item())
    x = x[:, :, top : top + ch, left : left + cw]
    if (ch, cw) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def train_one_epoch(
    model: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    train_size: int | None = None,
    channels_last: bool = False,
    augment: bool = False,
    bar: Any = None,
    global_sizes: Sequence[int] | None = None,
    world_size: int = 1,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step_lr: Callable[[int], float | None] | None = None,
    start_step: int = 0,
    start_sums: dict[str, Any] | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """One pass of SGD over ``batches`` (iterable of uint8 images, labels, rows).

    Args:
        global_sizes: under data parallelism, images in each *global* batch; each rank's loss
            is weighted by :func:`~hypermodal.train.distributed.loss_weight` so that DDP's
            gradient average is the gradient of the global mean loss.
        world_size: data-parallel processes.
        reduce: sums a float64 tensor over ranks (``DistContext.all_reduce_sum``); the returned
            loss/accuracy/images are then over the whole global epoch.
        step_lr: learning rate for step ``i`` of this epoch, or ``None`` to leave it (warm-up).
        start_step: steps of this epoch already done (a run resumed mid-epoch): ``batches``
            starts at that step, which indexes ``global_sizes`` and ``step_lr``.
        start_sums: this rank's running sums of the steps already done (``loss_sum``,
            ``correct``, ``images``), continued from instead of zero.
        on_step: called after every optimisation step with the number of steps of this epoch
            done and this rank's running sums (``loss_sum``/``correct`` tensors, ``images``).

    Returns:
        ``{"loss", "accuracy", "images"}``; loss is the mean cross-entropy per image.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    if start_sums is not None:
        loss_sum += float(start_sums["loss_sum"])
        correct += int(start_sums["correct"])
        seen = int(start_sums["images"])
    for i, (x_u8, y, _rows) in enumerate(batches):
        step = start_step + i
        if step_lr is not None:
            lr = step_lr(step)
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
        x = to_model_input(x_u8, device, train_size, channels_last)
        if augment:
            x = augment_batch(x, channels_last)
        y = y.to(device, non_blocking=True)
        n = int(y.shape[0])
        with autocast_context(device, amp_dtype):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        weight = (
            loss_weight(n, int(global_sizes[step]), world_size) if global_sizes is not None else 1.0
        )
        objective = loss * weight if weight != 1.0 else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(objective).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            objective.backward()
            optimizer.step()
        seen += n
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(dim=1) == y).sum()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        if on_step is not None:
            on_step(step + 1, {"loss_sum": loss_sum, "correct": correct, "images": seen})
    return _summarise(loss_sum, correct, seen, reduce)


def _summarise(
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
    seen: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None,
) -> dict[str, float]:
    """Mean loss and accuracy from sums, summed over ranks first when ``reduce`` is given."""
    totals = torch.stack(
        [loss_sum.detach().double().cpu(), correct.double().cpu(), torch.tensor(float(seen))]
    ).double()
    if reduce is not None:
        totals = reduce(totals)
    loss_total, correct_total, n = (float(v) for v in totals.tolist())
    if not n:
        return {"loss": float("nan"), "accuracy": float("nan"), "images": 0}
    return {"loss": loss_total / n, "accuracy": correct_total / n, "images": int(round(n))}


def validate(
    model: nn.Module,
    batches: Any,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    train_size: int | None = None,
    channels_last: bool = False,
    bar: Any = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Loss and accuracy over ``batches`` in eval mode without gradients.

    With ``reduce`` (``DistContext.all_reduce_sum``) each rank passes its own part of the split
    and the sums are added over ranks, so every rank returns the metrics of the whole split.

    BatchNorm uses (and does not update) its running statistics; dropout is off. The model's
    previous train/eval mode is restored on return.

    Returns:
        ``{"loss", "accuracy", "images"}`` (NaN loss/accuracy when there are no images).
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    try:
        with torch.no_grad():
            for x_u8, y, _rows in batches:
                if not len(y):
                    continue
                x = to_model_input(x_u8, device, train_size, channels_last)
                y = y.to(device, non_blocking=True)
                with autocast_context(device, amp_dtype):
                    logits = model(x)
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
                correct += (logits.argmax(dim=1) == y).sum()
                seen += int(y.shape[0])
                if bar is not None:
                    bar.update(1)
    finally:
        model.train(was_training)
    return _summarise(loss_sum, correct, seen, reduce)


# ----------------------------------------------------------------------------------------------
# helpers


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            log.warning("amp=%s asked for on %s: mixed precision is CUDA-only; off", amp, device)
        return None
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "python" in state:
        random.setstate((3, tuple(int(x) for x in state["python"]), None))
    if device.type == "cuda" and state.get("cuda"):
        try:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        except (RuntimeError, IndexError):  # different GPU count: epochs reseed anyway
            log.info("CUDA RNG state not restored (different devices); epochs reseed anyway")


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    write_text_atomic(path, frame.to_csv(index=False))


def _plain(value: Any) -> Any:
    """numpy scalars → Python scalars (checkpoints must hold plain values only)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_cpu(obj: Any) -> Any:
    """Tensors anywhere in nested dicts/lists → CPU, so checkpoints load on any machine."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _check_resume_config(saved: TrainConfig, given: TrainConfig | None) -> TrainConfig:
    if given is None:
        return saved
    a, b = saved.to_dict(), given.to_dict()
    differ = [k for k in a if k not in RESUMABLE_FIELDS and a[k] != b[k]]
    if differ:
        detail = ", ".join(f"{k}: {a[k]!r} → {b[k]!r}" for k in differ)
        raise ResumeError(
            f"cannot resume with a different recipe ({detail}); pass config=None to reuse the "
            "checkpoint's config, or start a new run in another folder"
        )
    merged = dict(a)
    merged.update({k: b[k] for k in RESUMABLE_FIELDS})
    return TrainConfig.from_dict(merged)


def _prune_epoch_checkpoints(ckpt_dir: Path, keep: int) -> None:
    if keep < 0:
        return
    files = sorted(ckpt_dir.glob("epoch-*.pt"))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


def _broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def _open_tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        log.warning("tensorboard is not installed; skipping TensorBoard logs")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


# ----------------------------------------------------------------------------------------------
# the run


def train(
    store_path: Path | str,
    out_dir: Path | str,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_step_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a modality classifier on the ``train`` split of a store.

    Args:
        store_path: a finished slice store (``hypermodal.store.build``).
        out_dir: run folder (created); see the module docstring for its contents.
        config: training settings; ``None`` = :class:`TrainConfig` defaults, or, with
            ``resume=True``, the config saved in ``last.pt``.
        resume: continue from ``out_dir/checkpoints/last.pt`` (optimizer, scheduler, RNG and
            history restored; stops at the same epoch count). Starts a fresh run when there is
            no ``last.pt`` yet. Only the fields in :data:`RESUMABLE_FIELDS` may differ from the
            saved config.
        progress: tqdm progress bars (only when stderr is a terminal).
        on_epoch_end: called with the epoch's history row after its checkpoints are written.
        on_step_end: called after every optimisation step (and its step checkpoint, if any)
            with ``{"epoch", "step", "steps", "global_step"}`` (1-based epoch; steps of it
            done; steps per epoch; steps since the run started).

    Returns:
        Summary dict: ``out_dir``, ``epochs``, ``best_epoch``, ``best_metric``, ``best_value``,
        ``final`` (last history row), ``history``, ``train_seconds``, ``checkpoints``,
        ``history_csv``, ``device``, ``resumed_from_epoch``, ``resumed_from_step``,
        ``num_train_images``,
        ``num_val_images``, ``notes``.

    Raises:
        ResumeError: resuming with a different split hash or recipe.
        FileExistsError: ``out_dir`` already holds a run and ``resume`` is False.
        ValueError: the store has no training images.
        RuntimeError: the training loss became NaN/inf (last.pt keeps the previous epoch).
    """
    t_start = time.perf_counter()
    if not is_s3_url(store_path):
        store_path = Path(store_path).resolve()
    out_dir = Path(out_dir)
    last_path = out_dir / CHECKPOINT_DIR / LAST
    if is_shard_set(store_path):  # exported with `hypermodal shard`, local or s3://
        store: Any = ShardTrainingData(ShardSet.open(str(store_path)))
    else:
        store = SliceStore.open(store_path)
    notes: list[str] = []

    state: dict[str, Any] | None = None
    if resume and last_path.exists():
        state = read_checkpoint(last_path)
        if state["split_hash"] != store.split_hash:
            raise ResumeError(
                f"cannot resume: the store's split hash is {store.split_hash!r} but the "
                f"checkpoint was trained on split {state['split_hash']!r} (the train/validate/"
                "test assignment changed); start a new run in another folder"
            )
        if list(state["vocabulary"]["classes"]) != list(store.vocabulary.classes):
            raise ResumeError(
                f"cannot resume: the store's classes {list(store.vocabulary.classes)} differ "
                f"from the checkpoint's {state['vocabulary']['classes']}"
            )
        config = _check_resume_config(TrainConfig.from_dict(state["config"]), config)
    elif resume:
        log.info("no %s yet: starting a new run in %s", last_path, out_dir)
    elif last_path.exists():
        raise FileExistsError(
            f"{out_dir} already holds a training run; pass resume=True to continue it or "
            "choose another output folder"
        )
    config = config or TrainConfig()
    ctx = init_distributed(config.device)
    try:
        return _train(
            store,
            store_path,
            out_dir,
            config,
            state,
            notes,
            ctx,
            progress,
            on_epoch_end,
            on_step_end,
            t_start,
        )
    finally:
        ctx.close()


def _store_feeders(
    store: SliceStore,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    config: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    workers: int,
) -> tuple[BatchFeeder, BatchFeeder]:
    """Training and validation batches from a memory-mapped slice store."""
    train_feed = BatchFeeder(
        store.images,
        labels,
        train_rows,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        balance=config.balance,
        max_images=config.max_images_per_epoch,
        device=device,
        workers=workers,
        drop_singleton=True,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    val_feed = BatchFeeder(
        store.images,
        labels,
        val_rows,
        config.eval_batch_size or 2 * config.batch_size,
        shuffle=False,
        device=device,
        workers=workers,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    return train_feed, val_feed


def _train(
    store: Any,
    store_path: Path,
    out_dir: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    notes: list[str],
    ctx: DistContext,
    progress: bool,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
    on_step_end: Callable[[dict[str, Any]], None] | None,
    t_start: float,
) -> dict[str, Any]:
    ckpt_dir = out_dir / CHECKPOINT_DIR
    last_path, best_path = ckpt_dir / LAST, ckpt_dir / BEST
    main = ctx.is_main
    device = rank_device(ctx, resolve_device(config.device))
    if ctx.enabled and device.type == "cuda":
        torch.cuda.set_device(device)
    amp_dtype = _resolve_amp(config.amp, device)
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    workers = resolve_workers(config.workers, device)
    stored_size = store.preprocess.size
    train_size = config.train_size or stored_size
    if train_size > stored_size:
        notes.append(f"train_size {train_size} is larger than the stored {stored_size}: upsampled")
        log.warning(notes[-1])
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic

    labels = store.labels()
    vocabulary = store.vocabulary
    train_rows, val_rows = store.rows("train"), store.rows("validate")
    if not len(train_rows):
        raise ValueError(f"store {store_path} has no usable images in the train split")
    bad = labels[np.concatenate([train_rows, val_rows])]
    if len(bad) and (bad.min() < 0 or bad.max() >= vocabulary.num_classes):
        raise ValueError("store label_index values fall outside its vocabulary")
    if not len(val_rows):
        notes.append(
            "validation split is empty: the learning-rate scheduler and best.pt use the "
            "TRAINING loss instead"
        )
        log.warning(notes[-1])

    if isinstance(store, ShardTrainingData):
        if config.balance or config.max_images_per_epoch:
            raise ValueError("training from shards supports neither balance nor an epoch cap")
        train_feed: Any = ShardFeeder(
            store.set,
            "train",
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            merge_singleton=True,
            pin_memory=device.type == "cuda",
        )
        val_feed: Any = ShardFeeder(
            store.set,
            "validate",
            config.eval_batch_size or 2 * config.batch_size,
            shuffle=False,
            rank=ctx.rank,
            world_size=ctx.world_size,
            pin_memory=device.type == "cuda",
        )
    else:
        train_feed, val_feed = _store_feeders(
            store, labels, train_rows, val_rows, config, ctx, device, workers
        )
    if train_feed.num_images() == 0:
        raise ValueError("training needs at least 2 images per epoch (BatchNorm)")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = build_model(config.model, vocabulary.num_classes, in_chans=1)
    sync_bn = ctx.enabled and config.sync_batchnorm and device.type == "cuda"
    if ctx.enabled and config.sync_batchnorm and not sync_bn:
        notes.append("sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm): per-rank BatchNorm")
        log.warning(notes[-1])
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    world = ctx.world_size
    global_batch = config.batch_size * world
    lr_full = effective_lr(config, world)
    steps_per_epoch = len(train_feed)
    warmup_steps = int(config.warmup_epochs) * steps_per_epoch
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr_full,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {
        "epoch": None,
        "metric": "val_loss" if len(val_rows) else "train_loss",
        "value": None,
    }
    start_epoch = 0
    partial: dict[str, Any] | None = None  # the interrupted epoch of a mid-epoch last.pt
    if state is not None:
        model.load_state_dict(state["model_state"])
        ts = state.get("training_state") or {}
        if "optimizer" not in ts:
            raise ResumeError(f"{last_path} has no optimizer state; it cannot be resumed")
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        if ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        _restore_rng(ts.get("rng", {}), device)
        history = [dict(r) for r in state["history"]]
        best = dict(state.get("best") or best)
        start_epoch = int(state["epoch"])
        saved_world = int((state.get("resolved_config") or {}).get("world_size", 1))
        partial = ts.get("mid_epoch") or None
        if partial is not None and (
            int(partial["world_size"]) != world or int(partial["steps"]) != steps_per_epoch
        ):
            raise ResumeError(
                f"{last_path} was written after step {partial['step']} of epoch "
                f"{partial['epoch']} by {partial['world_size']} process(es) with "
                f"{partial['steps']} steps per epoch; this run has {world} process(es) and "
                f"{steps_per_epoch} steps per epoch, so the rest of that epoch cannot be "
                "replayed. Resume with the same number of processes"
            )
        if saved_world != world:
            notes.append(
                f"resumed with {world} processes; the run started with {saved_world} (the "
                "global batch and the data each step sees changed)"
            )
            log.warning(notes[-1])
        if partial is not None:
            log.info(
                "resuming %s in epoch %d of %d after step %d of %d",
                out_dir,
                start_epoch + 1,
                config.epochs,
                int(partial["step"]),
                steps_per_epoch,
            )
        else:
            log.info("resuming %s from epoch %d of %d", out_dir, start_epoch, config.epochs)

    resolved = {
        **config.to_dict(),
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "channels_last": channels_last,
        "workers": workers,
        "train_size": train_size,
        "eval_batch_size": config.eval_batch_size or 2 * config.batch_size,
        "world_size": world,
        "global_batch_size": global_batch,
        "lr_effective": lr_full,
        "backend": ctx.backend or "none",
    }
    versions = package_versions()
    common = {
        "model_name": config.model,
        "num_classes": vocabulary.num_classes,
        "in_chans": 1,
        "vocabulary": vocabulary.to_dict(),
        "preprocess": store.preprocess.to_dict(),
        "train_size": int(train_size),
        "config": config.to_dict(),
        "resolved_config": resolved,
        "store_path": str(store_path),
        "split_hash": store.split_hash,
        "versions": versions,
    }
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_info = {
        "config": resolved,
        "requested_config": config.to_dict(),
        "store_path": str(store_path),
        "split_hash": store.split_hash,
        "vocabulary": vocabulary.to_dict(),
        "preprocess": store.preprocess.to_dict(),
        "train_size": int(train_size),
        "num_train_images": int(len(train_rows)),
        "num_val_images": int(len(val_rows)),
        "train_images_per_epoch": train_feed.num_images(),
        "resumed_from_epoch": start_epoch if state is not None else None,
        "resumed_from_step": int(partial["step"]) if partial is not None else None,
        "notes": notes,
        "versions": versions,
    }
    if main:
        write_text_atomic(out_dir / CONFIG_FILE, json.dumps(run_info, indent=2, default=str))

    # The modules that run: ``model`` is the plain network (its state dict is what checkpoints
    # hold and what validation uses); ``step_model`` adds DDP and torch.compile around it.
    step_model: nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        step_model = torch.compile(step_model)  # type: ignore[assignment]
    reduce = ctx.all_reduce_sum if ctx.enabled else None

    def warmup_lr(epoch: int) -> Callable[[int], float | None] | None:
        if epoch * steps_per_epoch >= warmup_steps:
            return None

        def lr_at(step: int) -> float | None:
            done = epoch * steps_per_epoch + step + 1
            return lr_full * min(1.0, done / warmup_steps) if done <= warmup_steps else None

        return lr_at

    def training_state(rng: dict[str, Any]) -> dict[str, Any]:
        return {
            "optimizer": _to_cpu(optimizer.state_dict()),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": rng,
        }

    def save_step_checkpoint(
        epoch: int, done: int, sums: dict[str, Any], lr: float, t0: float, seconds_before: float
    ) -> None:
        """Write last.pt after step ``done`` of ``epoch`` (0-based); every rank calls this."""
        mine = {
            "rng": _rng_state(device),
            "loss_sum": float(sums["loss_sum"]),
            "correct": int(sums["correct"]),
            "images": int(sums["images"]),
        }
        ranks = ctx.all_gather_object(mine)  # the same list on every rank: same decision below
        if not all(math.isfinite(r["loss_sum"]) for r in ranks):
            log.warning("training loss is not finite at step %d: step checkpoint skipped", done)
            return
        ctx.barrier()
        if main:
            mid_epoch = {
                "epoch": epoch + 1,
                "step": done,
                "steps": steps_per_epoch,
                "world_size": world,
                "lr": lr,
                "train_seconds": seconds_before + time.perf_counter() - t0,
                "ranks": ranks,
            }
            payload = {
                **common,
                "epoch": epoch,
                "step_in_epoch": done,
                "history": history,
                "best": best,
                "model_state": cpu_state_dict(model),
                "training_state": {**training_state(ranks[0]["rng"]), "mid_epoch": mid_epoch},
            }
            save_checkpoint(last_path, payload)
        ctx.barrier()

    show = bool(progress) and sys.stderr.isatty() and main
    writer = (
        _open_tensorboard(out_dir / TENSORBOARD_DIR, start_epoch + 1 if state else None)
        if main
        else None
    )
    log.info(
        "training %s on %s: %d train / %d validate images, %d per epoch, size %d, amp %s",
        config.model,
        device,
        len(train_rows),
        len(val_rows),
        run_info["train_images_per_epoch"],
        train_size,
        resolved["amp"],
    )
    try:
        for epoch in range(start_epoch, config.epochs):
            resumed = partial if epoch == start_epoch else None
            torch.manual_seed(_epoch_seed(config.seed, epoch, ctx.rank))
            step_lr = warmup_lr(epoch)
            if resumed is not None:
                lr = float(resumed["lr"])  # the epoch's first learning rate, for its history row
            else:
                lr = step_lr(0) if step_lr is not None else None
                lr = float(lr if lr is not None else optimizer.param_groups[0]["lr"])
            start_batch = int(resumed["step"]) if resumed is not None else 0
            seconds_before = float(resumed["train_seconds"]) if resumed is not None else 0.0
            bar = _progress_bar(len(train_feed), f"epoch {epoch + 1}/{config.epochs}", show)
            if bar is not None and start_batch:
                bar.update(start_batch)
            t0 = time.perf_counter()
            batches = train_feed.epoch(epoch, start_batch=start_batch)
            start_sums = None
            if resumed is not None:
                # after the loader is made (it draws a seed from torch's generator): the rest of
                # the epoch sees the generator exactly where the interrupted run left it
                start_sums = resumed["ranks"][ctx.rank]
                _restore_rng(start_sums["rng"], device)

            def on_step(
                done: int,
                sums: dict[str, Any],
                epoch: int = epoch,
                lr: float = lr,
                t0: float = t0,
                seconds_before: float = seconds_before,
            ) -> None:
                global_step = epoch * steps_per_epoch + done
                every = config.checkpoint_every_steps
                if every and global_step % every == 0:
                    save_step_checkpoint(epoch, done, sums, lr, t0, seconds_before)
                if on_step_end is not None:
                    on_step_end(
                        {
                            "epoch": epoch + 1,
                            "step": done,
                            "steps": steps_per_epoch,
                            "global_step": global_step,
                        }
                    )

            tr = train_one_epoch(
                step_model,
                batches,
                optimizer,
                device,
                amp_dtype=amp_dtype,
                scaler=scaler,
                train_size=train_size,
                channels_last=channels_last,
                augment=config.augment,
                bar=bar,
                global_sizes=train_feed.global_sizes(epoch) if ctx.enabled else None,
                world_size=world,
                reduce=reduce,
                step_lr=step_lr,
                start_step=start_batch,
                start_sums=start_sums,
                on_step=on_step if (config.checkpoint_every_steps or on_step_end) else None,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t1 = time.perf_counter()
            if bar is not None:
                bar.close()
            if not math.isfinite(tr["loss"]):
                raise RuntimeError(
                    f"training diverged at epoch {epoch + 1} (loss {tr['loss']}); "
                    f"{last_path} keeps the previous epoch. Try a lower lr."
                )
            if ctx.enabled and not sync_bn:
                _broadcast_buffers(model)  # every rank validates rank 0's BatchNorm statistics
            vbar = _progress_bar(len(val_feed), "validate", show)
            va = validate(
                model,
                val_feed.epoch(0),
                device,
                amp_dtype=amp_dtype,
                train_size=train_size,
                channels_last=channels_last,
                bar=vbar,
                reduce=reduce,
            )
            if vbar is not None:
                vbar.close()
            t2 = time.perf_counter()
            monitored = va["loss"] if len(val_rows) else tr["loss"]
            if (epoch + 1) * steps_per_epoch >= warmup_steps:
                scheduler.step(monitored)
            elapsed = float(history[-1]["elapsed_seconds"]) if history else 0.0
            row = {
                "epoch": epoch + 1,
                "train_loss": tr["loss"],
                "train_accuracy": tr["accuracy"],
                "val_loss": va["loss"],
                "val_accuracy": va["accuracy"],
                "lr": lr,
                "train_images": int(tr["images"]),
                "val_images": int(va["images"]),
                "train_seconds": seconds_before + t1 - t0,
                "val_seconds": t2 - t1,
                "seconds": seconds_before + t2 - t0,
                "elapsed_seconds": elapsed + seconds_before + (t2 - t0),
                "images_per_s": tr["images"] / max(seconds_before + t1 - t0, 1e-9),
            }
            row = {k: _plain(v) for k, v in row.items()}
            history.append(row)
            improved = best["value"] is None or monitored < float(best["value"])
            if improved:
                best = {"epoch": epoch + 1, "metric": best["metric"], "value": float(monitored)}
            payload = {
                **common,
                "epoch": epoch + 1,
                "history": history,
                "best": best,
                "model_state": cpu_state_dict(model),
            }
            ctx.barrier()
            if main:
                if improved:
                    save_checkpoint(best_path, payload)
                if config.keep_epochs != 0:
                    save_checkpoint(ckpt_dir / f"epoch-{epoch + 1:03d}.pt", payload)
                    _prune_epoch_checkpoints(ckpt_dir, config.keep_epochs)
                save_checkpoint(
                    last_path, {**payload, "training_state": training_state(_rng_state(device))}
                )
                _write_history(out_dir / HISTORY_FILE, history)
            ctx.barrier()
            if writer is not None:
                step = epoch + 1
                writer.add_scalars("loss", {"train": tr["loss"], "val": va["loss"]}, step)
                writer.add_scalars(
                    "accuracy", {"train": tr["accuracy"], "val": va["accuracy"]}, step
                )
                writer.add_scalar("lr", lr, step)
                writer.add_scalar("images_per_s", row["images_per_s"], step)
                writer.add_scalar("epoch_seconds", row["seconds"], step)
                writer.flush()
            (log.info if main else log.debug)(
                "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | "
                "%.1fs, %.1f img/s%s",
                epoch + 1,
                config.epochs,
                tr["loss"],
                tr["accuracy"],
                va["loss"],
                va["accuracy"],
                lr,
                row["seconds"],
                row["images_per_s"],
                "  (best)" if improved else "",
            )
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
    finally:
        if writer is not None:
            writer.close()

    if history and main:
        _write_history(out_dir / HISTORY_FILE, history)
    return {
        "out_dir": str(out_dir),
        "epochs": config.epochs,
        "completed_epochs": len(history),
        "best_epoch": best["epoch"],
        "best_metric": best["metric"],
        "best_value": best["value"],
        "final": dict(history[-1]) if history else {},
        "history": history,
        "train_seconds": float(history[-1]["elapsed_seconds"]) if history else 0.0,
        "wall_seconds": time.perf_counter() - t_start,
        "checkpoints": {"last": str(last_path), "best": str(best_path)},
        "history_csv": str(out_dir / HISTORY_FILE),
        "device": str(device),
        "resumed_from_epoch": start_epoch if state is not None else None,
        "resumed_from_step": int(partial["step"]) if partial is not None else None,
        "num_train_images": int(len(train_rows)),
        "num_val_images": int(len(val_rows)),
        "world_size": world,
        "rank": ctx.rank,
        "global_batch_size": global_batch,
        "notes": notes,
    }
