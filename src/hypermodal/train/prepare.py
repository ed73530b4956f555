"""The pieces a run is made of: its data, its batch feeders, its network and its optimizer.

:class:`hypermodal.train.loop.Trainer` calls these in order; each is a plain function of the
config so that a reader can see what one run is built from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hypermodal.inference.model import autocast_dtype
from hypermodal.models import build_model
from hypermodal.store import SliceStore
from hypermodal.store.loader import BatchFeeder
from hypermodal.store.shards import (
    ShardFeeder,
    ShardSet,
    ShardTrainingData,
    is_s3_url,
    is_shard_set,
)
from hypermodal.train.config import TrainConfig
from hypermodal.train.distributed import DistContext

log = logging.getLogger(__name__)


def open_training_data(store_path: Path | str) -> tuple[Path | str, Any]:
    """The training data at ``store_path``: a slice store, or a shard set (local or ``s3://``)
    exported with ``hypermodal shard``.

    Returns:
        ``(path, data)``: a local path resolved to an absolute one, and the opened data.
    """
    if not is_s3_url(store_path):
        store_path = Path(store_path).resolve()
    if is_shard_set(store_path):
        return store_path, ShardTrainingData(ShardSet.open(str(store_path)))
    return store_path, SliceStore.open(store_path)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.amp`` on ``device`` (``None``: full precision)."""
    if device.type != "cuda" and amp in ("bf16", "fp16"):
        log.warning("amp=%s asked for on %s: mixed precision is CUDA-only; off", amp, device)
    return autocast_dtype(amp, device)


def training_rows(store: Any, store_path: Path | str, notes: list[str]) -> tuple[np.ndarray, ...]:
    """Label per store row, and the train and validation rows, checked.

    Raises:
        ValueError: no training images, or labels outside the store's vocabulary.
    """
    labels = store.labels()
    train_rows, val_rows = store.rows("train"), store.rows("validate")
    if not len(train_rows):
        raise ValueError(f"store {store_path} has no usable images in the train split")
    bad = labels[np.concatenate([train_rows, val_rows])]
    if len(bad) and (bad.min() < 0 or bad.max() >= store.vocabulary.num_classes):
        raise ValueError("store label_index values fall outside its vocabulary")
    if not len(val_rows):
        notes.append(
            "validation split is empty: the learning-rate scheduler and best.pt use the "
            "TRAINING loss instead"
        )
        log.warning(notes[-1])
    return labels, train_rows, val_rows


def make_feeders(
    store: Any,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    workers: int,
) -> tuple[Any, Any]:
    """Training and validation batches: from shards, or from a memory-mapped slice store.

    Args:
        rows: ``(labels, train_rows, val_rows)`` of :func:`training_rows`.

    Raises:
        ValueError: balance or an epoch cap asked of shards; fewer than two images per epoch.
    """
    labels, train_rows, val_rows = rows
    eval_batch = config.eval_batch_size or 2 * config.batch_size
    dist_kw = {"rank": ctx.rank, "world_size": ctx.world_size}
    if isinstance(store, ShardTrainingData):
        if config.balance or config.max_images_per_epoch:
            raise ValueError("training from shards supports neither balance nor an epoch cap")
        pin = device.type == "cuda"
        train_feed: Any = ShardFeeder(
            store.set,
            "train",
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            merge_singleton=True,
            pin_memory=pin,
            **dist_kw,
        )
        val_feed: Any = ShardFeeder(
            store.set, "validate", eval_batch, shuffle=False, pin_memory=pin, **dist_kw
        )
    else:
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
            **dist_kw,
        )
        val_feed = BatchFeeder(
            store.images,
            labels,
            val_rows,
            eval_batch,
            shuffle=False,
            device=device,
            workers=workers,
            **dist_kw,
        )
    if train_feed.num_images() == 0:
        raise ValueError("training needs at least 2 images per epoch (BatchNorm)")
    return train_feed, val_feed


def build_network(
    config: TrainConfig,
    num_classes: int,
    ctx: DistContext,
    device: torch.device,
    channels_last: bool,
    notes: list[str],
) -> tuple[nn.Module, bool]:
    """The network on ``device`` (weights drawn from the torch generator as it stands).

    Returns:
        ``(model, sync_bn)``: ``sync_bn`` tells whether BatchNorm was made ``SyncBatchNorm``
        (data parallel on CUDA with ``sync_batchnorm``).
    """
    model = build_model(config.model, num_classes, in_chans=1)
    sync_bn = ctx.enabled and config.sync_batchnorm and device.type == "cuda"
    if ctx.enabled and config.sync_batchnorm and not sync_bn:
        notes.append("sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm): per-rank BatchNorm")
        log.warning(notes[-1])
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model, sync_bn


def make_optimizer(
    model: nn.Module,
    config: TrainConfig,
    lr: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.optim.SGD, Any, torch.amp.GradScaler]:
    """SGD at ``lr``, the plateau scheduler, and the gradient scaler (enabled for fp16 only)."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return optimizer, scheduler, scaler
