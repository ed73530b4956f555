"""Feeding batches from the slice store to a model, without decoding anything.

The store keeps every image as ``size × size`` uint8 in one memory-mapped array, so a batch is a
single fancy-indexing read of sorted row numbers (sorted reads touch the file in order and are
fast; the order of images *inside* a batch does not matter to SGD). Batches stay uint8 until they
reach the device: on a GPU only one byte per pixel crosses PCIe (from pinned memory, without
blocking), and the conversion to float, the ``/255`` scaling and an optional resize to a smaller
training resolution run on the device (:func:`hypermodal.inference.to_model_input`).

The epoch order comes from a generator seeded with ``(seed, epoch)``: a run resumed at epoch
``k`` sees exactly the batches an uninterrupted run would have seen, and one resumed after batch
``j`` of an epoch (``BatchFeeder.epoch(k, start_batch=j)``) skips the batches already done
without reading them. Under data parallelism every rank plans the same global batches and reads
its own piece of each (:func:`shard_rows`).

Training and evaluation both read the store through :class:`BatchFeeder`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

#: One batch as it leaves the loader: uint8 images (B, S, S), int64 labels (B,), int64 rows (B,).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Loader worker processes: ``None`` → 0 on the CPU (reading is ~1000× cheaper than the
    model there, and workers would steal its cores), up to 4 on CUDA."""
    if workers is not None:
        if workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {workers}")
        return int(workers)
    if device.type != "cuda":
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def shard_rows(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's piece of a global batch (pieces differ in length by at most one).

    Pass the batch in *visiting* (random) order and sort the piece afterwards: splitting a batch
    sorted by store row would hand each rank a few classes only (the store is ordered by label),
    and per-rank BatchNorm statistics would then depend on the class.
    """
    if world_size <= 1:
        return batch
    return np.array_split(np.asarray(batch), world_size)[rank]


def epoch_order(
    rows: np.ndarray,
    labels: np.ndarray,
    epoch: int,
    seed: int,
    *,
    shuffle: bool = True,
    balance: bool = False,
    max_images: int | None = None,
) -> np.ndarray:
    """Row indices an epoch visits, in order.

    Args:
        rows: candidate store rows (for example ``store.rows("train")``).
        labels: class index of every store row (indexed by row number).
        epoch: 0-based epoch number; with ``seed`` it fixes the order.
        seed: run seed.
        shuffle: ``False`` keeps ``rows`` as given (evaluation).
        balance: draw rows with replacement so every class present is equally likely
            (class-balanced sampling; off by default, as in the paper).
        max_images: cap on images per epoch (a fresh random subset each epoch).

    Returns:
        int64 array of store rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows) if max_images is None else min(len(rows), int(max_images))
    if not shuffle:
        return rows[:n]
    rng = np.random.default_rng([int(seed), int(epoch)])
    if balance and len(rows):
        row_labels = labels[rows]
        classes, inverse, counts = np.unique(row_labels, return_inverse=True, return_counts=True)
        weights = 1.0 / (len(classes) * counts[inverse])
        return rng.choice(rows, size=n, replace=True, p=weights / weights.sum())
    return rows[rng.permutation(len(rows))[:n]]


def batch_plan(
    order: np.ndarray,
    batch_size: int,
    *,
    drop_singleton: bool = False,
    world_size: int = 1,
    sort: bool = True,
) -> list[np.ndarray]:
    """Split an epoch order into batches, each sorted by row number for sequential reads.

    Args:
        order: rows in visiting order.
        batch_size: images per batch (the *global* batch under data parallelism).
        drop_singleton: drop a final batch that would leave a rank with one image or none
            (BatchNorm cannot train on it): fewer than ``2 · world_size`` images.
        world_size: processes the batches are split across (see
            :func:`shard_rows`).
        sort: sort each batch by row; ``False`` keeps the visiting order (a global batch is
            split across ranks *before* sorting, so every rank gets a random part of it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if sort:
        batches = [np.sort(b) for b in batches]
    if drop_singleton and batches and len(batches[-1]) < 2 * max(1, world_size):
        batches.pop()
    return batches


class BatchSource(Dataset):
    """Map-style dataset whose item ``i`` is the ``i``-th planned batch, read in one go.

    Used with ``DataLoader(batch_size=None)``: the loader's workers read whole batches, so there is
    no per-image Python overhead and no collation. A memory-mapped array is re-opened by file name
    in each worker instead of being pickled.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batches: list[np.ndarray]):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        rows = self.batches[index]
        x = np.ascontiguousarray(self.images[rows])
        return torch.from_numpy(x), torch.from_numpy(self.labels[rows]), torch.from_numpy(rows)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        images = self.images
        if isinstance(images, np.memmap) and images.filename:
            state["images"] = ("memmap", images.filename, images.shape, images.offset)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        images = state["images"]
        if isinstance(images, tuple) and images and images[0] == "memmap":
            _, filename, shape, offset = images
            state["images"] = np.memmap(
                filename, dtype=np.uint8, mode="r", shape=shape, offset=offset
            )
        self.__dict__.update(state)


class BatchFeeder:
    """Batches of one split of a store, epoch after epoch.

    Args:
        images: the store's uint8 images ``(N, S, S)`` (a memory map).
        labels: class index per store row.
        rows: rows this feeder draws from (for example ``store.rows("train")``).
        batch_size: images per batch.
        shuffle: reshuffle every epoch (training) or keep row order (evaluation).
        seed: run seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        balance: class-balanced sampling with replacement.
        max_images: per-epoch image cap.
        device: the model's device; pinned memory is used when it is CUDA.
        workers: loader worker processes (0 reads in the main process).
        drop_singleton: drop a trailing batch of one image (set for training); under data
            parallelism, one that would leave a rank fewer than two images.
        rank: this process's rank; it reads only its piece of every global batch.
        world_size: data-parallel processes. The global batch is ``world_size · batch_size``
            and every rank plans the same global batches (same ``seed``), so together the ranks
            see exactly what one process with batch ``world_size · batch_size`` sees.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        balance: bool = False,
        max_images: int | None = None,
        device: torch.device | None = None,
        workers: int = 0,
        drop_singleton: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < max(1, world_size):
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank = int(rank)
        self.world_size = max(1, int(world_size))
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.balance = balance
        self.max_images = max_images
        self.device = device or torch.device("cpu")
        self.workers = int(workers)
        self.drop_singleton = drop_singleton

    @property
    def global_batch_size(self) -> int:
        """Images per step over all ranks: ``world_size · batch_size``."""
        return self.batch_size * self.world_size

    def global_plan(self, epoch: int) -> list[np.ndarray]:
        """The global batches of one epoch in visiting order (identical on every rank).

        Not sorted: the store is ordered by split and label, so contiguous pieces of a *sorted*
        batch would give each rank only a few classes, and BatchNorm, which normalises per rank,
        would see class-dependent statistics. Each rank sorts its own random piece instead.
        """
        order = epoch_order(
            self.rows,
            self.labels,
            epoch,
            self.seed,
            shuffle=self.shuffle,
            balance=self.balance,
            max_images=self.max_images,
        )
        return batch_plan(
            order,
            self.global_batch_size,
            drop_singleton=self.drop_singleton,
            world_size=self.world_size,
            sort=False,
        )

    def plan(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of sorted store rows) of one epoch; all of them alone."""
        return [np.sort(shard_rows(b, self.rank, self.world_size)) for b in self.global_plan(epoch)]

    def global_sizes(self, epoch: int) -> list[int]:
        """Images in each global batch of ``epoch`` (over all ranks)."""
        return [len(b) for b in self.global_plan(epoch)]

    def num_images(self) -> int:
        """Images seen in one epoch over all ranks (the same for every epoch)."""
        n = len(self.rows) if self.max_images is None else min(len(self.rows), self.max_images)
        tail = n % self.global_batch_size
        if self.drop_singleton and 0 < tail < 2 * self.world_size:
            n -= tail
        return int(n)

    def __len__(self) -> int:
        """Batches (steps) per epoch (the same for every epoch and every rank)."""
        return -(-self.num_images() // self.global_batch_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Iterate over the batches of ``epoch``: uint8 images, labels, rows (all on the host).

        Args:
            epoch: 0-based epoch number.
            start_batch: skip the first ``start_batch`` (global) batches without reading their
                images (a run resumed mid-epoch); the rest are exactly the batches an
                uninterrupted iteration yields from there on.
        """
        if start_batch < 0:
            raise ValueError(f"start_batch must be ≥ 0, got {start_batch}")
        source = BatchSource(self.images, self.labels, self.plan(epoch)[start_batch:])
        if not len(source):
            return iter(())
        workers = min(self.workers, len(source))
        loader = DataLoader(
            source,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        return iter(loader)
