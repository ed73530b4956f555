"""The training run: :func:`train` and the :class:`Trainer` it drives, epoch after epoch.

A run is ``setup`` (device, data, network, optimizer), an optional ``resume`` from ``last.pt``
and ``start`` (``config.json``, DDP, TensorBoard), all in :mod:`hypermodal.train.session`; then
per epoch ``run_epoch`` (one pass of SGD and one of validation: :mod:`hypermodal.train.steps`)
and ``end_epoch`` (scheduler, history, checkpoints); with ``evidence="all"``, ``add_evidence``
after the last epoch (:mod:`hypermodal.train.evidence`). The recipe and the run folder are
described in :mod:`hypermodal.train.config`.

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

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from hypermodal.common.progress import progress_bar
from hypermodal.train.checkpoint import cpu_state_dict, to_cpu
from hypermodal.train.config import CHECKPOINT_DIR, LAST, TrainConfig
from hypermodal.train.distributed import broadcast_buffers, init_distributed
from hypermodal.train.evidence import attach_evidence, fit_run_evidence
from hypermodal.train.prepare import open_training_data
from hypermodal.train.session import Hook, TrainingSession
from hypermodal.train.state import (
    epoch_seed,
    history_row,
    read_resume_state,
    restore_rng,
    rng_state,
)
from hypermodal.train.steps import train_one_epoch, validate, warmup_schedule

log = logging.getLogger(__name__)

#: Progress-bar settings of the training and validation passes.
BAR = {"leave": False, "unit": "batch"}


def train(
    store_path: Path | str,
    out_dir: Path | str,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Hook | None = None,
    on_step_end: Hook | None = None,
) -> dict[str, Any]:
    """Train a modality classifier on the ``train`` split of a store.

    Args:
        store_path: a finished slice store (``hypermodal.store.build``), or a shard set.
        out_dir: run folder (created); see :mod:`hypermodal.train.config` for its contents.
        config: training settings; ``None`` = :class:`TrainConfig` defaults, or, with
            ``resume=True``, the config saved in ``last.pt``.
        resume: continue from ``out_dir/checkpoints/last.pt`` (optimizer, scheduler, RNG and
            history restored; stops at the same epoch count); without a ``last.pt`` there is
            nothing to resume, which is an error. Only the fields in
            :data:`~hypermodal.train.config.RESUMABLE_FIELDS` may differ from the saved config.
        progress: tqdm progress bars (only when stderr is a terminal).
        on_epoch_end: called with the epoch's history row after its checkpoints are written.
        on_step_end: called after every optimisation step (and its step checkpoint, if any)
            with ``{"epoch", "step", "steps", "global_step"}`` (1-based epoch; steps of it
            done; steps per epoch; steps since the run started).

    Returns:
        Summary dict (:meth:`Trainer.summary`): ``out_dir``, ``epochs``, ``best_epoch``,
        ``best_metric``, ``best_value``, ``final`` (last history row), ``history``,
        ``train_seconds``, ``checkpoints``, ``history_csv``, ``device``, ``resumed_from_epoch``,
        ``resumed_from_step``, ``num_train_images``, ``num_val_images``, ``notes``.

    Raises:
        ResumeError: resuming with nothing to resume, or with a different split hash or recipe.
        FileExistsError: ``out_dir`` already holds a run and ``resume`` is False.
        ValueError: the store has no training images.
        RuntimeError: the training loss became NaN/inf (last.pt keeps the previous epoch).
    """
    started = time.perf_counter()
    store_path, store = open_training_data(store_path)
    out_dir = Path(out_dir)
    last_path = out_dir / CHECKPOINT_DIR / LAST
    state, config = read_resume_state(last_path, store, config, resume)
    config = config or TrainConfig()
    ctx = init_distributed(config.device)
    try:
        trainer = Trainer(
            store,
            store_path,
            out_dir,
            config,
            ctx,
            progress=progress,
            on_epoch_end=on_epoch_end,
            on_step_end=on_step_end,
            started=started,
        )
        trainer.setup()
        if state is not None:
            trainer.resume(state)
        trainer.start()
        return trainer.run()
    finally:
        ctx.close()


class Trainer(TrainingSession):
    """One training run: the session's :meth:`setup`, :meth:`resume` and :meth:`start`, then
    :meth:`run`, which calls :meth:`run_epoch` and :meth:`end_epoch` for every remaining epoch
    and returns :meth:`summary`. The arguments are those of :class:`TrainingSession`.

    While an epoch runs, ``epoch`` (0-based), ``epoch_lr`` (its first learning rate), ``t0``
    (when its training pass began) and ``seconds_before`` (its training seconds before a
    mid-epoch resume) describe it to :meth:`on_step` and :meth:`save_step_checkpoint`.
    """

    def run(self) -> dict[str, Any]:
        """Every remaining epoch, then :meth:`summary`."""
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                self.end_epoch(self.run_epoch(epoch))
        finally:
            self.files.close()
        if self.history:
            self.files.write_history(self.history)
        if self.config.evidence == "all":
            self.add_evidence()
        return self.summary()

    def add_evidence(self) -> None:
        """Fit the feature forest and the fusion (:mod:`hypermodal.train.evidence`) on the main
        rank, write them into ``best.pt`` and ``last.pt`` and add them to ``config.json``; the
        other ranks wait at a barrier."""
        if self.ctx.is_main and self.files.best_path.is_file():
            config = self.config
            evidence = fit_run_evidence(
                self.store,
                self.files.best_path,
                seed=config.seed,
                device=self.device,
                batch_size=config.eval_batch_size or 2 * config.batch_size,
                share=self.simulated_share,
                notes=self.notes,
            )
            attach_evidence([self.files.best_path, self.files.last_path], evidence)
            self.evidence_info = evidence.info
            self.files.write_config(
                {**self.run_info, "evidence": evidence.info, "notes": self.notes}
            )
        self.ctx.barrier()

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train and validate epoch ``epoch`` (0-based); returns its history row."""
        config, ctx, device = self.config, self.ctx, self.device
        resumed = self.partial if epoch == self.start_epoch else None
        torch.manual_seed(epoch_seed(config.seed, epoch, ctx.rank))
        step_lr = warmup_schedule(epoch, self.steps_per_epoch, self.warmup_steps, self.lr_full)
        if resumed is not None:
            lr = float(resumed["lr"])  # the epoch's first learning rate, for its history row
        else:
            lr = step_lr(0) if step_lr is not None else None
            lr = float(lr if lr is not None else self.optimizer.param_groups[0]["lr"])
        start_batch = int(resumed["step"]) if resumed is not None else 0
        self.epoch, self.epoch_lr = epoch, lr
        self.seconds_before = float(resumed["train_seconds"]) if resumed is not None else 0.0
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = progress_bar(len(self.train_feed), self.show, desc=desc, **BAR)
        if start_batch:
            bar.update(start_batch)
        self.t0 = time.perf_counter()
        batches = self.train_feed.epoch(epoch, start_batch=start_batch)
        start_sums = None
        if resumed is not None:
            # after the loader is made (it draws a seed from torch's generator): the rest of
            # the epoch sees the generator exactly where the interrupted run left it
            start_sums = resumed["ranks"][ctx.rank]
            restore_rng(start_sums["rng"], device)
        tr = train_one_epoch(
            self.step_model,
            batches,
            self.optimizer,
            device,
            amp_dtype=self.amp_dtype,
            scaler=self.scaler,
            train_size=self.train_size,
            channels_last=self.channels_last,
            augment=config.augment,
            bar=bar,
            global_sizes=self.train_feed.global_sizes(epoch) if ctx.enabled else None,
            world_size=self.world,
            reduce=self.reduce,
            step_lr=step_lr,
            start_step=start_batch,
            start_sums=start_sums,
            on_step=self.on_step if (config.checkpoint_every_steps or self.on_step_end) else None,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        bar.close()
        if not math.isfinite(tr["loss"]):
            raise RuntimeError(
                f"training diverged at epoch {epoch + 1} (loss {tr['loss']}); "
                f"{self.files.last_path} keeps the previous epoch. Try a lower lr."
            )
        va = self.run_validation()
        elapsed = float(self.history[-1]["elapsed_seconds"]) if self.history else 0.0
        times = (self.seconds_before, self.t0, t1, time.perf_counter(), elapsed)
        return history_row(epoch, tr, va, lr, *times)

    def run_validation(self) -> dict[str, float]:
        """Loss and accuracy of the model on the whole validation split (every rank)."""
        if self.ctx.enabled and not self.sync_bn:
            broadcast_buffers(self.model)  # every rank validates rank 0's BatchNorm statistics
        bar = progress_bar(len(self.val_feed), self.show, desc="validate", **BAR)
        va = validate(
            self.model,
            self.val_feed.epoch(0),
            self.device,
            amp_dtype=self.amp_dtype,
            train_size=self.train_size,
            channels_last=self.channels_last,
            bar=bar,
            reduce=self.reduce,
        )
        bar.close()
        return va

    def end_epoch(self, row: dict[str, Any]) -> None:
        """Step the scheduler, record ``row``, write the epoch's checkpoints, report."""
        epoch = row["epoch"]  # 1-based: epochs done
        monitored = row["val_loss"] if len(self.val_rows) else row["train_loss"]
        if epoch * self.steps_per_epoch >= self.warmup_steps:
            self.scheduler.step(monitored)
        self.history.append(row)
        best = self.best
        improved = best["value"] is None or monitored < float(best["value"])
        if improved:
            self.best = {"epoch": epoch, "metric": best["metric"], "value": float(monitored)}
        payload = {
            **self.meta,
            "epoch": epoch,
            "history": self.history,
            "best": self.best,
            "model_state": cpu_state_dict(self.model),
        }
        self.ctx.barrier()
        self.files.save_epoch(
            payload,
            improved,
            self.config.keep_epochs,
            lambda: self.training_state(rng_state(self.device)),
        )
        self.ctx.barrier()
        self.files.log_epoch(row)
        (log.info if self.ctx.is_main else log.debug)(
            "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | "
            "%.1fs, %.1f img/s%s",
            epoch,
            self.config.epochs,
            row["train_loss"],
            row["train_accuracy"],
            row["val_loss"],
            row["val_accuracy"],
            row["lr"],
            row["seconds"],
            row["images_per_s"],
            "  (best)" if improved else "",
        )
        if self.on_epoch_end is not None:
            self.on_epoch_end(dict(row))

    def on_step(self, done: int, sums: dict[str, Any]) -> None:
        """After step ``done`` of the current epoch: a step checkpoint when due, the callback."""
        global_step = self.epoch * self.steps_per_epoch + done
        every = self.config.checkpoint_every_steps
        if every and global_step % every == 0:
            self.save_step_checkpoint(done, sums)
        if self.on_step_end is not None:
            self.on_step_end(
                {
                    "epoch": self.epoch + 1,
                    "step": done,
                    "steps": self.steps_per_epoch,
                    "global_step": global_step,
                }
            )

    def save_step_checkpoint(self, done: int, sums: dict[str, Any]) -> None:
        """Write ``last.pt`` after step ``done`` of the current epoch; every rank calls this."""
        mine = {
            "rng": rng_state(self.device),
            "loss_sum": float(sums["loss_sum"]),
            "correct": int(sums["correct"]),
            "images": int(sums["images"]),
        }
        ranks = self.ctx.all_gather_object(mine)  # the same list on every rank: same decision
        if not all(math.isfinite(r["loss_sum"]) for r in ranks):
            log.warning("training loss is not finite at step %d: step checkpoint skipped", done)
            return
        self.ctx.barrier()
        if self.ctx.is_main:
            mid_epoch = {
                "epoch": self.epoch + 1,
                "step": done,
                "steps": self.steps_per_epoch,
                "world_size": self.world,
                "lr": self.epoch_lr,
                "train_seconds": self.seconds_before + time.perf_counter() - self.t0,
                "ranks": ranks,
            }
            payload = {
                **self.meta,
                "epoch": self.epoch,
                "step_in_epoch": done,
                "history": self.history,
                "best": self.best,
                "model_state": cpu_state_dict(self.model),
                "training_state": {**self.training_state(ranks[0]["rng"]), "mid_epoch": mid_epoch},
            }
            self.files.save_last(payload)
        self.ctx.barrier()

    def training_state(self, rng: dict[str, Any]) -> dict[str, Any]:
        """Optimizer, scheduler and scaler state with the RNG state ``rng`` (for ``last.pt``)."""
        return {
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng,
        }
