"""The once-per-run half of a training run: what it is made of, and how it is set up.

:class:`TrainingSession` builds the run (:meth:`~TrainingSession.setup`: device, data, network,
optimizer, from :mod:`hypermodal.train.prepare`), continues a saved one
(:meth:`~TrainingSession.resume`), writes ``config.json`` and wraps the model for data
parallelism (:meth:`~TrainingSession.start`), and describes the finished run
(:meth:`~TrainingSession.summary`). :class:`hypermodal.train.loop.Trainer` adds the epochs.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hypermodal.common.errors import ResumeError
from hypermodal.common.versions import package_versions
from hypermodal.inference.model import resolve_device
from hypermodal.store.loader import resolve_workers
from hypermodal.train.config import TrainConfig, effective_lr
from hypermodal.train.distributed import DistContext, rank_device
from hypermodal.train.evidence import simulated_share
from hypermodal.train.prepare import (
    build_network,
    make_feeders,
    make_optimizer,
    resolve_amp,
    training_rows,
)
from hypermodal.train.state import RunFolder, check_mid_epoch, restore_rng

log = logging.getLogger(__name__)

#: ``on_epoch_end`` / ``on_step_end`` callbacks of :func:`hypermodal.train.train`.
Hook = Callable[[dict[str, Any]], None]


class TrainingSession:
    """A training run's parts and its once-per-run steps: :meth:`setup`, :meth:`resume`
    (optional), :meth:`start`, and at the end :meth:`summary`.

    The state of the run lives in attributes: ``history`` (one row per finished epoch), ``best``
    (the best epoch so far), ``start_epoch`` (the first epoch this process runs) and ``partial``
    (the interrupted epoch of a mid-epoch ``last.pt``, or ``None``); :meth:`setup` adds the
    device, feeders, model, optimizer, scheduler and scaler.

    Args:
        store: the training data (:func:`~hypermodal.train.prepare.open_training_data`).
        store_path: where it lives (recorded in ``config.json`` and the checkpoints).
        out_dir: the run folder.
        config: the settings.
        ctx: this process's place in a data-parallel run (``None``: one process).
        progress: progress bars (rank 0, on a terminal).
        on_epoch_end, on_step_end: the callbacks of :func:`hypermodal.train.train`.
        started: ``time.perf_counter()`` when the run began (``None``: now).
    """

    def __init__(
        self,
        store: Any,
        store_path: Path | str,
        out_dir: Path,
        config: TrainConfig,
        ctx: DistContext | None = None,
        *,
        progress: bool = True,
        on_epoch_end: Hook | None = None,
        on_step_end: Hook | None = None,
        started: float | None = None,
    ) -> None:
        self.store, self.store_path, self.config = store, store_path, config
        self.ctx = ctx or DistContext()
        self.world = self.ctx.world_size
        self.files = RunFolder(out_dir, self.ctx.is_main)
        self.show = bool(progress) and self.ctx.is_main
        self.on_epoch_end, self.on_step_end = on_epoch_end, on_step_end
        self.started = time.perf_counter() if started is None else started
        self.notes: list[str] = []
        self.resumed = False
        self.start_epoch = 0
        self.partial: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.simulated_share = 0.0
        self.evidence_info: dict[str, Any] | None = None

    def setup(self) -> None:
        """Device and precision, data and feeders, then the network (seeded) and optimizer."""
        config, ctx, notes = self.config, self.ctx, self.notes
        device = rank_device(ctx, resolve_device(config.device))
        if ctx.enabled and device.type == "cuda":
            torch.cuda.set_device(device)
        self.device = device
        self.amp_dtype = resolve_amp(config.amp, device)
        self.channels_last = (
            device.type == "cuda" if config.channels_last is None else config.channels_last
        )
        self.workers = resolve_workers(config.workers, device)
        stored = self.store.preprocess.size
        self.train_size = config.train_size or stored
        if self.train_size > stored:
            notes.append(
                f"train_size {self.train_size} is larger than the stored {stored}: upsampled"
            )
            log.warning(notes[-1])
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not config.deterministic

        rows = training_rows(self.store, self.store_path, notes)
        self.train_rows, self.val_rows = rows[1], rows[2]
        self.train_feed, self.val_feed = make_feeders(
            self.store, rows, config, ctx, device, self.workers
        )
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model, self.sync_bn = build_network(
            config, self.store.vocabulary.num_classes, ctx, device, self.channels_last, notes
        )
        self.lr_full = effective_lr(config, self.world)
        self.steps_per_epoch = len(self.train_feed)
        self.warmup_steps = int(config.warmup_epochs) * self.steps_per_epoch
        self.optimizer, self.scheduler, self.scaler = make_optimizer(
            self.model, config, self.lr_full, device, self.amp_dtype
        )
        metric = "val_loss" if len(self.val_rows) else "train_loss"
        self.best: dict[str, Any] = {"epoch": None, "metric": metric, "value": None}

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from ``last.pt``: weights, optimizer, scheduler, scaler, RNG and history.

        Raises:
            ResumeError: no optimizer state, or a mid-epoch checkpoint of another world size.
        """
        last_path = self.files.last_path
        self.model.load_state_dict(state["model_state"])
        ts = state.get("training_state") or {}
        if "optimizer" not in ts:
            raise ResumeError(f"{last_path} has no optimizer state; it cannot be resumed")
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        if ts.get("scaler"):
            self.scaler.load_state_dict(ts["scaler"])
        restore_rng(ts.get("rng", {}), self.device)
        self.resumed = True
        self.history = [dict(r) for r in state["history"]]
        self.best = dict(state.get("best") or self.best)
        self.start_epoch = int(state["epoch"])
        saved_world = int((state.get("resolved_config") or {}).get("world_size", 1))
        self.partial = ts.get("mid_epoch") or None
        if self.partial is not None:
            check_mid_epoch(self.partial, last_path, self.world, self.steps_per_epoch)
        if saved_world != self.world:
            self.notes.append(
                f"resumed with {self.world} processes; the run started with {saved_world} (the "
                "global batch and the data each step sees changed)"
            )
            log.warning(self.notes[-1])
        out_dir, epochs = self.files.out_dir, self.config.epochs
        if self.partial is not None:
            log.info(
                "resuming %s in epoch %d of %d after step %d of %d",
                out_dir,
                self.start_epoch + 1,
                epochs,
                self.resumed_step,
                self.steps_per_epoch,
            )
        else:
            log.info("resuming %s from epoch %d of %d", out_dir, self.start_epoch, epochs)

    def start(self) -> None:
        """Write ``config.json``, wrap the model for DDP / ``torch.compile``, open TensorBoard."""
        config, ctx, device, store = self.config, self.ctx, self.device, self.store
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"
        resolved = {
            **config.to_dict(),
            "device": str(device),
            "amp": amp,
            "channels_last": self.channels_last,
            "workers": self.workers,
            "train_size": self.train_size,
            "eval_batch_size": config.eval_batch_size or 2 * config.batch_size,
            "world_size": self.world,
            "global_batch_size": config.batch_size * self.world,
            "lr_effective": self.lr_full,
            "backend": ctx.backend or "none",
        }
        versions = package_versions()
        self.simulated_share = simulated_share(store)
        described = {
            "store_path": str(self.store_path),
            "split_hash": store.split_hash,
            "vocabulary": store.vocabulary.to_dict(),
            "preprocess": store.preprocess.to_dict(),
            "train_size": int(self.train_size),
        }
        # what every checkpoint of the run holds besides weights, epoch, history and best
        self.meta = {
            "model_name": config.model,
            "num_classes": store.vocabulary.num_classes,
            "in_chans": 1,
            "vocabulary": described["vocabulary"],
            "preprocess": described["preprocess"],
            "train_size": described["train_size"],
            "config": config.to_dict(),
            "resolved_config": resolved,
            "store_path": described["store_path"],
            "split_hash": described["split_hash"],
            "versions": versions,
            "simulated_share": self.simulated_share,
        }
        self.files.create()
        self.run_info: dict[str, Any] = {
            "config": resolved,
            "requested_config": config.to_dict(),
            **described,
            "num_train_images": int(len(self.train_rows)),
            "num_val_images": int(len(self.val_rows)),
            "train_images_per_epoch": self.train_feed.num_images(),
            "resumed_from_epoch": self.start_epoch if self.resumed else None,
            "resumed_from_step": self.resumed_step,
            "simulated_share": self.simulated_share,
            "notes": self.notes,
            "versions": versions,
        }
        self.files.write_config(self.run_info)
        # ``model`` is the plain network (its state dict is what checkpoints hold and what
        # validation uses); ``step_model`` adds DDP and torch.compile around it.
        self.step_model: nn.Module = self.model
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.step_model = DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.step_model = torch.compile(self.step_model)  # type: ignore[assignment]
        self.reduce = ctx.all_reduce_sum if ctx.enabled else None
        self.files.open_tensorboard(self.start_epoch + 1 if self.resumed else None)
        log.info(
            "training %s on %s: %d train / %d validate images, %d per epoch, size %d, amp %s",
            config.model,
            device,
            len(self.train_rows),
            len(self.val_rows),
            self.train_feed.num_images(),
            self.train_size,
            amp,
        )

    @property
    def resumed_step(self) -> int | None:
        """The step of the interrupted epoch this run resumed after (``None``: none)."""
        return int(self.partial["step"]) if self.partial is not None else None

    def summary(self) -> dict[str, Any]:
        """What :func:`hypermodal.train.train` returns."""
        history, best, files = self.history, self.best, self.files
        return {
            "out_dir": str(files.out_dir),
            "epochs": self.config.epochs,
            "completed_epochs": len(history),
            "best_epoch": best["epoch"],
            "best_metric": best["metric"],
            "best_value": best["value"],
            "final": dict(history[-1]) if history else {},
            "history": history,
            "train_seconds": float(history[-1]["elapsed_seconds"]) if history else 0.0,
            "wall_seconds": time.perf_counter() - self.started,
            "checkpoints": {"last": str(files.last_path), "best": str(files.best_path)},
            "history_csv": str(files.history_csv),
            "device": str(self.device),
            "resumed_from_epoch": self.start_epoch if self.resumed else None,
            "resumed_from_step": self.resumed_step,
            "num_train_images": int(len(self.train_rows)),
            "num_val_images": int(len(self.val_rows)),
            "world_size": self.world,
            "rank": self.ctx.rank,
            "global_batch_size": self.config.batch_size * self.world,
            "simulated_share": self.simulated_share,
            "evidence": self.evidence_info,
            "notes": self.notes,
        }
