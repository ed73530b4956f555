"""What a run keeps between epochs and between processes: RNG states, resume checks, history.

Determinism: the torch RNG is re-seeded from ``(seed, epoch, rank)`` at the start of every epoch
(:func:`epoch_seed`), and ``last.pt`` holds the RNG states of the moment it was written
(:func:`rng_state`, :func:`restore_rng`), so a resumed run draws exactly what an uninterrupted one
draws. A run is resumed only on the same split and classes with the same recipe
(:func:`read_resume_state`); :data:`~hypermodal.train.config.RESUMABLE_FIELDS` may differ.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hypermodal.common.errors import ResumeError
from hypermodal.common.files import remove_stale_temps, write_text_atomic
from hypermodal.inference.model import read_checkpoint
from hypermodal.train.checkpoint import save_checkpoint
from hypermodal.train.config import (
    BEST,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    LAST,
    RESUMABLE_FIELDS,
    TENSORBOARD_DIR,
    TrainConfig,
)

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The torch seed of ``epoch`` on ``rank`` (rank 0 keeps the one-process seed)."""
    key = [int(seed), int(epoch), 7] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def rng_state(device: torch.device) -> dict[str, Any]:
    """The torch, Python and (on CUDA) CUDA generator states, as checkpoint-safe values."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Put back the generator states of :func:`rng_state` (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "python" in state:
        random.setstate((3, tuple(int(x) for x in state["python"]), None))
    if device.type == "cuda" and state.get("cuda"):
        try:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        except (RuntimeError, IndexError):  # different GPU count: epochs reseed anyway
            log.info("CUDA RNG state not restored (different devices); epochs reseed anyway")


def read_resume_state(
    last_path: Path,
    store: Any,
    config: TrainConfig | None,
    resume: bool,
) -> tuple[dict[str, Any] | None, TrainConfig | None]:
    """The checkpoint a run continues from, and the config it continues with.

    Args:
        last_path: ``checkpoints/last.pt`` of the run folder.
        store: the training data (a slice store or shard set: ``split_hash``, ``vocabulary``).
        config: the config asked for; ``None`` reuses the checkpoint's when resuming.
        resume: continue the run in ``last_path``'s folder.

    Returns:
        ``(state, config)``: ``state`` is ``None`` for a new run (``config`` then as given).

    Temporary files a killed run left in the run folder and its checkpoint folder are removed
    first.

    Raises:
        ResumeError: ``resume`` but there is no ``last_path`` to resume from, or the split, the
            classes or the recipe differ from the checkpoint's.
        FileExistsError: the folder holds a run and ``resume`` is False.
    """
    out_dir = last_path.parent.parent
    for stale in remove_stale_temps(out_dir) + remove_stale_temps(last_path.parent):
        log.info("removed %s, left by an interrupted run", stale)
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
        return state, check_resume_config(TrainConfig.from_dict(state["config"]), config)
    if resume:
        raise ResumeError(
            f"nothing to resume in {out_dir}: there is no {last_path} yet (a run writes it when "
            "its first epoch or checkpoint step is done); start a new run without resume"
        )
    if last_path.exists():
        raise FileExistsError(
            f"{out_dir} already holds a training run; pass resume=True to continue it or "
            "choose another output folder"
        )
    return None, config


def check_resume_config(saved: TrainConfig, given: TrainConfig | None) -> TrainConfig:
    """``saved`` with the :data:`RESUMABLE_FIELDS` of ``given``; any other difference is refused.

    Raises:
        ResumeError: ``given`` changes a field outside :data:`RESUMABLE_FIELDS`.
    """
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


def check_mid_epoch(partial: dict[str, Any], last_path: Path, world: int, steps: int) -> None:
    """Refuse to replay the rest of an interrupted epoch with another rank or step count.

    Raises:
        ResumeError: ``partial`` (``training_state.mid_epoch``) was written by another number
            of processes, or with another number of steps per epoch.
    """
    if int(partial["world_size"]) != world or int(partial["steps"]) != steps:
        raise ResumeError(
            f"{last_path} was written after step {partial['step']} of epoch "
            f"{partial['epoch']} by {partial['world_size']} process(es) with "
            f"{partial['steps']} steps per epoch; this run has {world} process(es) and "
            f"{steps} steps per epoch, so the rest of that epoch cannot be "
            "replayed. Resume with the same number of processes"
        )


def plain(value: Any) -> Any:
    """numpy scalars → Python scalars (checkpoints must hold plain values only)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def history_row(
    epoch: int,
    tr: dict[str, float],
    va: dict[str, float],
    lr: float,
    seconds_before: float,
    t0: float,
    t1: float,
    t2: float,
    elapsed: float,
) -> dict[str, Any]:
    """One row of ``history.csv`` (:data:`HISTORY_COLUMNS`), as plain Python values.

    Args:
        epoch: 0-based epoch.
        tr, va: the training and validation results (``loss``, ``accuracy``, ``images``).
        lr: the epoch's first learning rate.
        seconds_before: training seconds of this epoch spent before a mid-epoch resume.
        t0, t1, t2: ``time.perf_counter()`` at the start, after training, after validation.
        elapsed: ``elapsed_seconds`` of the previous epoch (0 for the first).
    """
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
    return {k: plain(v) for k, v in row.items()}


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``history.csv`` atomically, one row per finished epoch."""
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    write_text_atomic(path, frame.to_csv(index=False))


def prune_epoch_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` ``epoch-NNN.pt`` files (``keep < 0``: keep all)."""
    if keep < 0:
        return
    files = sorted(ckpt_dir.glob("epoch-*.pt"))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


def open_tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    """A TensorBoard ``SummaryWriter`` (``purge_step``: drop events from there on, for a resume),
    or ``None`` when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        log.warning("tensorboard is not installed; skipping TensorBoard logs")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def log_epoch(writer: Any, row: dict[str, Any]) -> None:
    """Write one history row's scalars to TensorBoard at step ``row["epoch"]``."""
    step = row["epoch"]
    writer.add_scalars("loss", {"train": row["train_loss"], "val": row["val_loss"]}, step)
    writer.add_scalars(
        "accuracy", {"train": row["train_accuracy"], "val": row["val_accuracy"]}, step
    )
    writer.add_scalar("lr", row["lr"], step)
    writer.add_scalar("images_per_s", row["images_per_s"], step)
    writer.add_scalar("epoch_seconds", row["seconds"], step)
    writer.flush()


class RunFolder:
    """The files of a run folder (:mod:`hypermodal.train.config`), written by rank 0 only.

    On the other ranks (``main=False``) every method does nothing, so the trainer calls them
    unconditionally.
    """

    def __init__(self, out_dir: Path, main: bool) -> None:
        self.out_dir, self.main = out_dir, main
        self.ckpt_dir = out_dir / CHECKPOINT_DIR
        self.last_path, self.best_path = self.ckpt_dir / LAST, self.ckpt_dir / BEST
        self.history_csv = out_dir / HISTORY_FILE
        self.writer: Any = None

    def create(self) -> None:
        """Create the folder and its ``checkpoints/``."""
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, run_info: dict[str, Any]) -> None:
        """Write ``config.json``."""
        if self.main:
            text = json.dumps(run_info, indent=2, default=str)
            write_text_atomic(self.out_dir / CONFIG_FILE, text)

    def open_tensorboard(self, purge_step: int | None) -> None:
        """Start the TensorBoard log (``purge_step``: drop its events from there on)."""
        if self.main:
            self.writer = open_tensorboard(self.out_dir / TENSORBOARD_DIR, purge_step)

    def save_epoch(
        self,
        payload: dict[str, Any],
        improved: bool,
        keep_epochs: int,
        training_state: Callable[[], dict[str, Any]],
    ) -> None:
        """The checkpoints and history of a finished epoch (``payload["epoch"]``).

        ``best.pt`` when ``improved``; ``epoch-NNN.pt`` (the newest ``keep_epochs`` kept);
        ``last.pt`` with ``training_state()`` added; ``history.csv``.
        """
        if not self.main:
            return
        if improved:
            save_checkpoint(self.best_path, payload)
        if keep_epochs != 0:
            save_checkpoint(self.ckpt_dir / f"epoch-{payload['epoch']:03d}.pt", payload)
            prune_epoch_checkpoints(self.ckpt_dir, keep_epochs)
        save_checkpoint(self.last_path, {**payload, "training_state": training_state()})
        self.write_history(payload["history"])

    def save_last(self, payload: dict[str, Any]) -> None:
        """Write ``last.pt`` (a mid-epoch checkpoint)."""
        if self.main:
            save_checkpoint(self.last_path, payload)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``history.csv``."""
        if self.main:
            write_history(self.history_csv, history)

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Add a history row to TensorBoard."""
        if self.writer is not None:
            log_epoch(self.writer, row)

    def close(self) -> None:
        """Close the TensorBoard log."""
        if self.writer is not None:
            self.writer.close()
