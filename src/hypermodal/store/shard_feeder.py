"""Training from a shard set: :class:`ShardFeeder` streams one split as shuffled batches.

The epoch order (see :mod:`hypermodal.store.shards`) is a pure function of
``(seed, epoch, rank, world_size)`` and is computed before any byte is read, so a run resumed at
batch ``k`` of an epoch starts exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from hypermodal.common.errors import ShardError
from hypermodal.preprocess import PreprocessConfig
from hypermodal.store.shard_set import ShardSet, check_verify


def _split_sizes(total: int, parts: int) -> np.ndarray:
    """Boundaries of ``parts`` contiguous pieces of ``total`` items, sizes differing by ≤ 1."""
    q, r = divmod(total, parts)
    sizes = np.full(parts, q, dtype=np.int64)
    sizes[:r] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


@dataclass
class EpochOrder:
    """What one rank visits in one epoch, computed without reading any shard.

    Attributes:
        segments: ``(k, 3)`` int64 — shard id, first and end position read from it.
        windows: ``(w + 1,)`` int64 — segment boundaries of the shuffle windows.
        items: ``(n, 2)`` int64 — (segment, position in shard) of every image, in visiting order.
        window_end: ``(w,)`` int64 — item index after the last item of each window.
        batch_bounds: ``(steps + 1,)`` int64 — item boundaries of the batches.
    """

    segments: np.ndarray
    windows: np.ndarray
    items: np.ndarray
    window_end: np.ndarray
    batch_bounds: np.ndarray


class ShardFeeder:
    """Batches of one split of a shard set, epoch after epoch, for one data-parallel rank.

    Same contract as :class:`hypermodal.store.loader.BatchFeeder`: ``epoch(e)`` yields
    ``(uint8 images (B, S, S), int64 label_index (B,), int64 store row (B,))`` on the host;
    ``len(feeder)`` is the number of steps per epoch, equal on every rank; ``num_images()`` and
    ``global_sizes(e)`` describe the global batches.

    Args:
        shards: an opened :class:`ShardSet`, a local folder or an ``s3://`` URL.
        split: ``"train"``, ``"validate"`` or ``"test"``.
        batch_size: images per batch on this rank (the global batch is ``world_size ×``).
        shuffle: shuffle shards and images (training); ``False`` reads shards in index order.
        seed: run seed; epoch ``e``'s order depends only on ``(seed, e, rank, world_size)``.
        buffer_shards: shards whose images are mixed together (the shuffle buffer; memory is
            about ``2 × buffer_shards × shard size`` with prefetch).
        rank, world_size: data parallelism; ranks get disjoint pieces covering the split.
        merge_singleton: fold a final batch of one image into the previous batch (BatchNorm
            cannot train on one image) instead of yielding it.
        verify: shard check: ``"crc32"`` (fast), ``"sha256"`` or ``"none"`` (sizes are always
            checked).
        threads: shard downloads in flight.
        pin_memory: return pinned tensors (for asynchronous copies to a GPU).
        filesystem: a :class:`pyarrow.fs.FileSystem` to read ``shards`` through when it is a
            location (default: the local one, or S3 with the environment's credentials).
        endpoint_url: S3-compatible endpoint when no file system is given.
    """

    def __init__(
        self,
        shards: ShardSet | str | Path,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        buffer_shards: int = 4,
        rank: int = 0,
        world_size: int = 1,
        merge_singleton: bool = False,
        verify: str = "crc32",
        threads: int = 4,
        pin_memory: bool = False,
        filesystem: pafs.FileSystem | None = None,
        endpoint_url: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < max(1, world_size):
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if buffer_shards < 1:
            raise ValueError(f"buffer_shards must be ≥ 1, got {buffer_shards}")
        self.set = (
            shards
            if isinstance(shards, ShardSet)
            else ShardSet.open(shards, filesystem=filesystem, endpoint_url=endpoint_url)
        )
        self.split = split
        self.shard_ids = self.set.split_shards(split)
        self.shard_images = self.set.shards["images"].to_numpy(dtype=np.int64)
        samples = self.set.samples
        by_shard = samples[np.isin(samples["shard"].to_numpy(), self.shard_ids)].sort_values(
            ["shard", "position"], kind="stable"
        )
        starts = np.concatenate([[0], np.cumsum(self.shard_images[self.shard_ids])])
        # sample number (in by_shard order) of position 0 of every shard of this split
        self._shard_start = np.full(len(self.shard_images), -1, dtype=np.int64)
        self._shard_start[self.shard_ids] = starts[:-1]
        self._labels = by_shard["label_index"].to_numpy(dtype=np.int64)
        self._rows = by_shard["row"].to_numpy(dtype=np.int64)
        if len(self._rows) != starts[-1]:
            raise ShardError(f"{self.set.location.url}: samples do not match shards for {split}")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.buffer_shards = int(buffer_shards)
        self.rank = int(rank)
        self.world_size = max(1, int(world_size))
        self.merge_singleton = merge_singleton
        check_verify(verify)
        self.verify = verify
        self.threads = max(1, int(threads))
        self.pin_memory = pin_memory

    # --- sizes (the same on every rank) ---------------------------------------------------

    def num_images(self) -> int:
        """Images of the split: every one is visited once per epoch over all ranks."""
        return int(self.shard_images[self.shard_ids].sum())

    def _steps(self) -> int:
        q = self.num_images() // self.world_size  # the smallest rank piece
        full, rem = divmod(q, self.batch_size)
        if rem == 0 or (rem == 1 and full >= 1 and self.merge_singleton):
            return max(full, 1 if self.num_images() else 0)
        return full + 1

    def __len__(self) -> int:
        """Steps per epoch, equal on every rank."""
        return self._steps()

    def global_sizes(self, epoch: int) -> list[int]:
        """Images in each global batch (all ranks together) of ``epoch``."""
        bounds = _split_sizes(self.num_images(), self.world_size)
        sizes = np.zeros(self._steps(), dtype=np.int64)
        for r in range(self.world_size):
            sizes += np.diff(self._batch_bounds(int(bounds[r + 1] - bounds[r])))
        return sizes.tolist()

    def _batch_bounds(self, n: int) -> np.ndarray:
        steps = self._steps()
        if steps == 0:
            return np.zeros(1, dtype=np.int64)
        bounds = np.minimum(np.arange(steps + 1, dtype=np.int64) * self.batch_size, n)
        bounds[-1] = n  # the last batch takes the rest (one extra image on larger pieces)
        return bounds

    # --- the order ------------------------------------------------------------------------

    def order(self, epoch: int) -> EpochOrder:
        """This rank's visiting order for ``epoch`` (a pure function of seed, epoch, rank)."""
        shard_seq = self.shard_ids.copy()
        if self.shuffle:
            rng = np.random.default_rng([self.seed, int(epoch)])
            shard_seq = shard_seq[rng.permutation(len(shard_seq))]
        counts = self.shard_images[shard_seq]
        ends = np.cumsum(counts)
        starts = ends - counts
        bounds = _split_sizes(int(ends[-1]) if len(ends) else 0, self.world_size)
        lo, hi = int(bounds[self.rank]), int(bounds[self.rank + 1])
        segments = []
        for sid, s, e in zip(shard_seq.tolist(), starts.tolist(), ends.tolist(), strict=True):
            a, b = max(s, lo), min(e, hi)
            if a < b:
                segments.append((sid, a - s, b - s))
        seg = np.array(segments, dtype=np.int64).reshape(-1, 3)
        windows = np.unique(np.append(np.arange(0, len(seg), self.buffer_shards), len(seg))).astype(
            np.int64
        )
        parts, window_end, done = [], [], 0
        for w in range(len(windows) - 1):
            idx = [
                np.stack([np.full(e - s, k), np.arange(s, e)], axis=1)
                for k, (_, s, e) in enumerate(seg[windows[w] : windows[w + 1]], start=windows[w])
            ]
            block = np.concatenate(idx).astype(np.int64)
            if self.shuffle:
                rng = np.random.default_rng([self.seed, int(epoch), self.rank, w, 1])
                block = block[rng.permutation(len(block))]
            parts.append(block)
            done += len(block)
            window_end.append(done)
        items = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        return EpochOrder(
            segments=seg,
            windows=windows,
            items=items,
            window_end=np.array(window_end, dtype=np.int64),
            batch_bounds=self._batch_bounds(len(items)),
        )

    def plan(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` as store rows (nothing is read)."""
        o = self.order(epoch)
        rows = self._item_rows(o, o.items)
        return [rows[a:b] for a, b in zip(o.batch_bounds[:-1], o.batch_bounds[1:], strict=True)]

    def _item_rows(self, o: EpochOrder, items: np.ndarray) -> np.ndarray:
        return self._rows[self._sample_of(o, items)]

    def _sample_of(self, o: EpochOrder, items: np.ndarray) -> np.ndarray:
        return self._shard_start[o.segments[items[:, 0], 0]] + items[:, 1]

    # --- reading --------------------------------------------------------------------------

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        """Iterate over the batches of ``epoch`` from batch ``start_batch`` (mid-epoch resume).

        Yields ``(images uint8 (B, S, S), label_index int64 (B,), store row int64 (B,))`` as
        torch tensors on the host.
        """
        o = self.order(epoch)
        steps = len(o.batch_bounds) - 1
        if not 0 <= start_batch <= steps:
            raise ValueError(f"start_batch {start_batch} outside 0..{steps}")
        return self._iterate(o, start_batch)

    def _iterate(self, o: EpochOrder, start_batch: int) -> Iterator[Any]:
        import torch

        steps = len(o.batch_bounds) - 1
        first_item = int(o.batch_bounds[start_batch])
        # only segments that still hold unvisited items are read
        needed = np.zeros(len(o.segments), dtype=bool)
        needed[np.unique(o.items[first_item:, 0])] = True
        window_of_seg = np.searchsorted(o.windows, np.arange(len(o.segments)), side="right") - 1
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="shard-read")
        loaded: dict[int, Future] = {}

        def request(w: int) -> None:
            if w >= len(o.windows) - 1:
                return
            for k in range(int(o.windows[w]), int(o.windows[w + 1])):
                if needed[k] and k not in loaded:
                    loaded[k] = pool.submit(self.set.read_shard, int(o.segments[k, 0]), self.verify)

        try:
            for b in range(start_batch, steps):
                a, e = int(o.batch_bounds[b]), int(o.batch_bounds[b + 1])
                items = o.items[a:e]
                w_first = int(np.searchsorted(o.window_end, a, side="right"))
                w_last = int(np.searchsorted(o.window_end, e - 1, side="right"))
                for w in range(w_first, w_last + 2):  # this batch's windows and one ahead
                    request(w)
                for k in [k for k in loaded if window_of_seg[k] < w_first]:
                    del loaded[k]  # consumed windows: drop their shards
                out = np.empty((len(items), self.set.size, self.set.size), dtype=np.uint8)
                segs = items[:, 0]
                for k in np.unique(segs):
                    sel = np.flatnonzero(segs == k)
                    out[sel] = loaded[int(k)].result()[items[sel, 1]]
                samples = self._sample_of(o, items)
                x = torch.from_numpy(out)
                if self.pin_memory:
                    x = x.pin_memory()
                yield (
                    x,
                    torch.from_numpy(self._labels[samples]),
                    torch.from_numpy(self._rows[samples]),
                )
        finally:
            for f in loaded.values():
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


class ShardTrainingData:
    """A shard set seen through the part of :class:`~hypermodal.store.reader.SliceStore` that
    training needs (class order, preprocessing, split hash, labels per split), so that
    ``hypermodal train`` takes a shard folder or ``s3://`` URL wherever it takes a store."""

    def __init__(self, shard_set: ShardSet):
        self.set = shard_set
        self.vocabulary = shard_set.vocabulary()
        self.preprocess = PreprocessConfig.from_dict(
            shard_set.meta.get("preprocess") or {"size": shard_set.size}
        )
        self.split_hash = str(shard_set.meta.get("split_hash", ""))
        self.meta = shard_set.meta
        shard_split = shard_set.shards["split"].to_numpy()
        self._split_of_sample = shard_split[shard_set.samples["shard"].to_numpy()]
        self._labels = shard_set.samples["label_index"].to_numpy(dtype=np.int64)

    def rows(self, split: str) -> np.ndarray:
        """Sample numbers of one split (only their count and labels are used by training)."""
        return np.flatnonzero(self._split_of_sample == split)

    def labels(self) -> np.ndarray:
        return self._labels
