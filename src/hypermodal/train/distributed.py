"""Data-parallel training across processes: PyTorch DistributedDataParallel under ``torchrun``.

``torchrun`` starts one process per GPU (or several CPU processes) and tells each who it is
through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`init_distributed` reads them; when ``WORLD_SIZE`` is absent or 1 it
returns a one-process context and nothing else changes, so the same ``train()`` runs alone or
under ``torchrun``::

    torchrun --standalone --nproc_per_node 8 -m hypermodal.cli train STORE --out RUN

Backend: NCCL when the process trains on a CUDA device (``cuda:LOCAL_RANK``), Gloo on the CPU.

How the work is split (see :func:`hypermodal.store.loader.shard_rows`): every rank builds the
*same* global plan of an epoch (the order depends only on ``(seed, epoch)``) with global batches
of ``W · B`` images (``W`` ranks, per-rank batch ``B``), and takes its own random piece of each
global batch. Together the ranks therefore see, at every step, exactly the images that a
one-process run with batch ``W · B`` sees, and each rank reads only its part of the store. The
loss of each rank is weighted so that DDP's gradient average equals the gradient of the mean loss
over the global batch even when the last batch does not split evenly (:func:`loss_weight`).

What stays different from a one-process run with the same global batch: BatchNorm statistics are
computed per rank (``B`` images) unless ``sync_batchnorm`` is on, and floating-point sums are
ordered differently. ``tests/train/test_ddp.py`` measures the difference.

Only rank 0 writes files (config, history, TensorBoard, checkpoints); the other ranks wait at a
barrier while it saves, so nobody starts the next epoch (or exits) before the checkpoint exists.
Resume works the same way: every rank reads ``last.pt`` from the shared run folder.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hypermodal.store.loader import shard_rows

log = logging.getLogger(__name__)

__all__ = [
    "ENV_VARS",
    "DistContext",
    "broadcast_buffers",
    "env_world_size",
    "init_distributed",
    "loss_weight",
    "rank_device",
    "shard_rows",
]

#: Environment variables set by ``torchrun`` that :func:`init_distributed` reads.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistContext:
    """Who this process is in a (possibly one-process) data-parallel run.

    Attributes:
        rank: global rank, 0 … ``world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        backend: ``"nccl"``, ``"gloo"``, or ``None`` for a one-process run.
        owns_group: this context created the process group (and destroys it in :meth:`close`).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """This process writes files and logs (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over ranks in place and return it (unchanged alone).

        NCCL reduces CUDA tensors only and Gloo CPU tensors only; the tensor is moved as needed
        and the result comes back on the caller's device.
        """
        if not self.enabled:
            return values
        wanted = (
            torch.device("cuda", torch.cuda.current_device())
            if self.backend == "nccl"
            else (torch.device("cpu"))
        )
        work = values.to(wanted)
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        if work is not values:
            values.copy_(work.to(values.device))
        return values

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` alone.

        Used for small per-rank state (RNG states, running sums of a partial epoch) that rank 0
        writes into a mid-epoch checkpoint. Every rank must call it at the same point.
        """
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` prepared, or describe a one-process run.

    Args:
        device: the training device asked for (``TrainConfig.device``). ``"auto"``/``"cuda"``
            with CUDA available → NCCL on ``cuda:LOCAL_RANK``; anything else → Gloo on the CPU.
        timeout_s: collective timeout.

    Returns:
        The rank's :class:`DistContext`. If a process group already exists (the caller set one
        up) it is used and left open.

    Raises:
        RuntimeError: under torchrun with more processes on a node than GPUs.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            backend=str(dist.get_backend()),
            owns_group=False,
        )
    world = env_world_size()
    if world <= 1:
        return DistContext()
    if not dist.is_available():  # pragma: no cover - every supported build has it
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    if "RANK" not in os.environ:
        raise RuntimeError(
            f"WORLD_SIZE={world} but RANK is not set: start with torchrun, which sets both"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = str(device).lower() in ("auto", "cuda") or str(device).lower().startswith("cuda")
    use_cuda = wants_cuda and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs: start one "
                "process per GPU (torchrun --nproc_per_node <number of GPUs>)"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    kwargs = {}
    if use_cuda:
        kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(
        backend=backend,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,  # type: ignore[arg-type]
    )
    ctx = DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        owns_group=True,
    )
    log.info(
        "rank %d of %d joined (%s, local rank %d)", ctx.rank, ctx.world_size, backend, local_rank
    )
    return ctx


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` under NCCL, else ``device``."""
    if ctx.backend == "nccl":
        return torch.device("cuda", ctx.local_rank)
    return device


def loss_weight(local: int, global_: int, world_size: int) -> float:
    """Factor for a rank's mean loss so that DDP's gradient *average* over ranks equals the
    gradient of the mean loss over the whole global batch: ``local · W / global``."""
    if world_size <= 1 or global_ <= 0:
        return 1.0
    return local * world_size / global_


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)
