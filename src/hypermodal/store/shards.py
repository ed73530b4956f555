"""The slice store cut into shards for object storage, and a streaming reader that trains from them.

A finished store (:mod:`hypermodal.store.build`) is one memory-mapped ``images.u8``: ideal on local disk,
wrong for object storage (one 321 GB object, one ranged GET per 49 KB image). :func:`export_shards`
cuts it into shard objects of a few hundred MB, each a raw block of ``size × size`` uint8 images
(no container, no decode: a shard read is one GET and one ``np.frombuffer``)::

    DIR_OR_S3_URL/
      shards/<split>-<k:05d>.u8   raw uint8, shape (n_k, size, size); images of ONE split, drawn at
                                  random from the whole split (the export shuffles each split)
      shards.parquet              one row per shard: shard, split, images, bytes, crc32, sha256
      samples.parquet             one row per image: row (store row), split, label_index,
                                  shard (index into shards.parquet), position (image in the shard)
      manifest.parquet            the store's manifest, unchanged (row i = store row i)
      shards.json                 metadata (store.json's vocabulary/preprocess/split hash, shard
                                  size, export seed); written LAST: its presence means complete

:class:`ShardFeeder` reads one split back as batches ``(uint8 images, label_index, row)`` — the
contract of :class:`hypermodal.train.data.BatchFeeder`. Its epoch order is a pure function of
``(seed, epoch)`` and is computed before any byte is read:

1. the split's shards are permuted with ``rng(seed, epoch)``;
2. the images of that shard sequence are cut into ``world_size`` contiguous pieces whose sizes
   differ by at most one (rank ``r`` takes piece ``r``): disjoint, complete, equal step counts
   under DDP (no hang on unequal shards); a shard on a piece boundary is read by both ranks;
3. each rank groups its shards into windows of ``buffer_shards`` shards and permutes the images
   of each window with ``rng(seed, epoch, rank, window)``: the shuffle buffer. Together with the
   export-time shuffle (every shard is a random sample of its split) a batch mixes images from
   ``buffer_shards`` random shards of the whole corpus.

Resuming at batch ``k`` of an epoch recomputes that order and starts at its ``k``-th batch: windows
already consumed are never read; in the current window only shards that still hold unvisited
images are read. Shards are read whole (one GET each), checked against their SHA-256 and size,
and prefetched by a thread pool one window ahead. Reads check a shard's size and CRC-32 (≈ 2.5 GB/s
here; SHA-256 runs at ≈ 0.3 GB/s on this CPU without SHA extensions, 8× slower than a raw shard
read, so it is opt-in: ``verify="sha256"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import ShardError
from hypermodal.common.files import atomic_path
from hypermodal.common.progress import progress_bar
from hypermodal.store.build import MANIFEST_FILE, SPLITS, SliceStore

log = logging.getLogger(__name__)

FORMAT = "hypermodal-shards"
VERSION = 1
META_FILE = "shards.json"
SHARDS_FILE = "shards.parquet"
SAMPLES_FILE = "samples.parquet"
SHARD_DIR = "shards"
DEFAULT_SHARD_MB = 256
VERIFY = ("crc32", "sha256", "none")


# --------------------------------------------------------------------------------------------
# where shards live: a local folder or an s3:// prefix


def is_s3_url(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) selects an S3-compatible store.

    The client's connection pool is sized for the prefetch threads.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
        config=Config(max_pool_connections=32, retries={"max_attempts": 5, "mode": "standard"}),
    )


class _Location:
    """Read and write named objects under a local folder or an ``s3://bucket/prefix``."""

    def __init__(self, location: str | Path, client: Any = None, endpoint_url: str | None = None):
        self.url = str(location).rstrip("/")
        self.s3 = is_s3_url(location)
        if self.s3:
            bucket, _, prefix = self.url[len("s3://") :].partition("/")
            if not bucket:
                raise ValueError(f"{location!r}: expected s3://bucket/prefix")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self.client = client or s3_client(endpoint_url)
        else:
            self.root = Path(location)

    def where(self, name: str) -> str:
        return f"{self.url}/{name}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> bytes:
        """The whole object; :class:`ShardError` when it is missing."""
        if self.s3:
            from botocore.exceptions import ClientError

            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
                return body.read()
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise ShardError(f"{self.where(name)} is missing") from None
                raise ShardError(f"{self.where(name)}: {exc}") from exc
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            raise ShardError(f"{self.where(name)} is missing") from None

    def map(self, name: str) -> np.ndarray:
        """A local object as a read-only uint8 memory map; :class:`ShardError` when missing."""
        path = self.root / name
        if not path.exists():
            raise ShardError(f"{self.where(name)} is missing")
        if not path.stat().st_size:
            return np.zeros(0, dtype=np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r")

    def exists(self, name: str) -> bool:
        if self.s3:
            from botocore.exceptions import ClientError

            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(name))
                return True
            except ClientError:
                return False
        return (self.root / name).exists()

    def put_file(self, name: str, path: Path) -> None:
        """Move a finished local file into place (rename locally, upload to S3)."""
        if self.s3:
            self.client.upload_file(str(path), self.bucket, self._key(name))
            path.unlink()
        else:
            dest = self.root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)

    def put_bytes(self, name: str, data: bytes) -> None:
        if self.s3:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        else:
            with atomic_path(self.root / name) as tmp:
                tmp.write_bytes(data)

    def delete(self, name: str) -> None:
        if self.s3:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        else:
            (self.root / name).unlink(missing_ok=True)


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# export


@dataclass
class ShardSummary:
    out: str
    shards: int
    images: int
    bytes: int
    images_per_shard: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def images_per_shard(size: int, shard_mb: float) -> int:
    """Images of ``size × size`` uint8 that fit ``shard_mb`` MiB (at least one)."""
    if shard_mb <= 0:
        raise ValueError(f"shard size must be > 0 MB, got {shard_mb}")
    return max(1, int(shard_mb * 2**20) // (size * size))


def export_shards(
    store_path: Path | str,
    out: str | Path,
    *,
    shard_mb: float = DEFAULT_SHARD_MB,
    seed: int = 0,
    client: Any = None,
    endpoint_url: str | None = None,
    progress: bool = False,
) -> ShardSummary:
    """Cut a finished store into shards under a folder or an ``s3://bucket/prefix``.

    Every usable image (``ok``) of every split goes into exactly one shard of its split; each
    split is shuffled with ``seed`` first, so every shard is a random sample of its split. The
    metadata file is written last (and removed first), so a reader never sees a half export.

    Args:
        store_path: a finished store (``hypermodal store``).
        out: local folder or ``s3://bucket/prefix``.
        shard_mb: shard size in MiB (256 → 5,349 images at 224²).
        seed: export shuffle seed (recorded in ``shards.json``).
        client: a boto3 S3 client (default: one from the environment / ``endpoint_url``).
        endpoint_url: S3-compatible endpoint when no client is given.
        progress: show a progress bar.
    """
    start = time.perf_counter()
    store = SliceStore.open(store_path)
    size = store.preprocess.size
    per_shard = images_per_shard(size, shard_mb)
    loc = _Location(out, client=client, endpoint_url=endpoint_url)
    if loc.exists(META_FILE):
        loc.delete(META_FILE)  # the old set is about to be overwritten: make it unreadable first
    labels = store.labels()
    plans: list[tuple[str, np.ndarray]] = []
    for split in SPLITS:
        rows = store.rows(split)
        rng = np.random.default_rng([int(seed), SPLITS.index(split)])
        rows = rows[rng.permutation(len(rows))]
        for k, lo in enumerate(range(0, len(rows), per_shard)):
            # sorted inside a shard: the store is read in order; the reader reshuffles anyway
            plans.append((f"{SHARD_DIR}/{split}-{k:05d}.u8", np.sort(rows[lo : lo + per_shard])))
    shard_rows: list[dict[str, Any]] = []
    sample_parts: list[pd.DataFrame] = []
    total = sum(len(r) for _, r in plans)
    bar = progress_bar(total, progress, desc="shard", unit="img")
    if not loc.s3:
        loc.root.mkdir(parents=True, exist_ok=True)
    # written to a temporary name, then renamed into place (same file system) or uploaded
    tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=None if loc.s3 else loc.root))
    try:
        for shard_id, (name, rows) in enumerate(plans):
            split = name.split("/")[1].rsplit("-", 1)[0]
            digest = hashlib.sha256()
            crc = 0
            tmp = tmpdir / f"{shard_id}.u8"
            with open(tmp, "wb") as fh:
                for lo in range(0, len(rows), 1024):
                    block = np.ascontiguousarray(store.images[rows[lo : lo + 1024]])
                    data = memoryview(block).cast("B")
                    digest.update(data)
                    crc = zlib.crc32(data, crc)
                    fh.write(data)
                    bar.update(len(block))
                fh.flush()
                os.fsync(fh.fileno())
            loc.put_file(name, tmp)
            shard_rows.append(
                {
                    "shard": name,
                    "split": split,
                    "images": len(rows),
                    "bytes": len(rows) * size * size,
                    "crc32": crc,
                    "sha256": digest.hexdigest(),
                }
            )
            sample_parts.append(
                pd.DataFrame(
                    {
                        "row": rows,
                        "split": split,
                        "label_index": labels[rows],
                        "shard": np.full(len(rows), shard_id, dtype=np.int32),
                        "position": np.arange(len(rows), dtype=np.int32),
                    }
                )
            )
    finally:
        bar.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    samples = (
        pd.concat(sample_parts, ignore_index=True)
        if sample_parts
        else pd.DataFrame(
            {"row": [], "split": [], "label_index": [], "shard": [], "position": []}
        ).astype({"row": "int64", "label_index": "int64", "shard": "int32", "position": "int32"})
    )
    loc.put_bytes(SHARDS_FILE, _parquet_bytes(pd.DataFrame(shard_rows)))
    loc.put_bytes(SAMPLES_FILE, _parquet_bytes(samples))
    loc.put_bytes(MANIFEST_FILE, (Path(store_path) / MANIFEST_FILE).read_bytes())
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "size": size,
        "num_images": int(len(samples)),
        "num_shards": len(shard_rows),
        "images_per_shard": per_shard,
        "export_seed": int(seed),
        "store": str(store_path),
        "vocabulary": store.meta.get("vocabulary"),
        "preprocess": store.meta.get("preprocess"),
        "split_hash": store.split_hash,
        "images_per_split": {s: int((samples["split"] == s).sum()) for s in SPLITS},
    }
    loc.put_bytes(META_FILE, json.dumps(meta, indent=2, default=str).encode())
    return ShardSummary(
        out=str(out),
        shards=len(shard_rows),
        images=int(len(samples)),
        bytes=int(sum(s["bytes"] for s in shard_rows)),
        images_per_shard=per_shard,
        seconds=round(time.perf_counter() - start, 3),
    )


# --------------------------------------------------------------------------------------------
# reading


@dataclass
class ShardSet:
    """An exported shard set, opened (metadata and index only; no shard is read)."""

    location: _Location
    meta: dict[str, Any]
    shards: pd.DataFrame
    samples: pd.DataFrame

    @classmethod
    def open(
        cls, location: str | Path, *, client: Any = None, endpoint_url: str | None = None
    ) -> ShardSet:
        loc = _Location(location, client=client, endpoint_url=endpoint_url)
        try:
            meta = json.loads(loc.read(META_FILE))
        except ShardError:
            raise ShardError(
                f"{location} is not a finished shard set (no {META_FILE}); "
                "export one with `hypermodal shard`"
            ) from None
        if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
            raise ShardError(f"{location}: unsupported shard format {meta.get('format')!r}")
        shards = pd.read_parquet(_bytes_io(loc.read(SHARDS_FILE)))
        # the split column is not loaded (a shard's split is in the shard index): at 6.4 M images
        # the four integer columns take ≈ 150 MB per process, an object-string column 400 MB more
        samples = pd.read_parquet(
            _bytes_io(loc.read(SAMPLES_FILE)), columns=["row", "label_index", "shard", "position"]
        )
        if len(samples) != int(meta["num_images"]) or len(shards) != int(meta["num_shards"]):
            raise ShardError(f"{location}: index does not match {META_FILE}")
        return cls(loc, meta, shards, samples)

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def vocabulary(self) -> Any:
        from hypermodal.labels import ClassVocabulary

        return ClassVocabulary.from_dict(self.meta["vocabulary"])

    def split_shards(self, split: str) -> np.ndarray:
        """Shard ids (indices into :attr:`shards`) of one split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero((self.shards["split"] == split).to_numpy())

    def read_shard(self, shard_id: int, verify: str = "crc32") -> np.ndarray:
        """One whole shard as a read-only ``(n, size, size)`` uint8 array, checked.

        Args:
            shard_id: row of :attr:`shards`.
            verify: ``"crc32"`` (fast), ``"sha256"`` or ``"none"``; the size is always checked.
        """
        if verify not in VERIFY:
            raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
        info = self.shards.iloc[int(shard_id)]
        name = str(info["shard"])
        data: Any
        if verify == "none" and not self.location.s3:
            data = self.location.map(name)  # unchecked local shard: zero-copy from the page cache
        else:
            data = self.location.read(name)
        if len(data) != int(info["bytes"]):
            raise ShardError(
                f"shard {self.location.where(name)} is corrupt: {len(data)} bytes, "
                f"index says {int(info['bytes'])}"
            )
        if (verify == "crc32" and zlib.crc32(data) != int(info["crc32"])) or (
            verify == "sha256" and hashlib.sha256(data).hexdigest() != info["sha256"]
        ):
            raise ShardError(
                f"shard {self.location.where(name)} is corrupt: {verify.upper()} does not match "
                "the index"
            )
        flat = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        return flat.reshape(-1, self.size, self.size)


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


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

    Same contract as :class:`hypermodal.train.data.BatchFeeder`: ``epoch(e)`` yields
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
        client: Any = None,
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
            else ShardSet.open(shards, client=client, endpoint_url=endpoint_url)
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
        if verify not in VERIFY:
            raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
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
    """A shard set seen through the part of :class:`~hypermodal.store.build.SliceStore` that
    training needs (class order, preprocessing, split hash, labels per split), so that
    ``hypermodal train`` takes a shard folder or ``s3://`` URL wherever it takes a store."""

    def __init__(self, shard_set: ShardSet):
        from hypermodal.preprocess import PreprocessConfig

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


def is_shard_set(location: str | Path) -> bool:
    """An ``s3://`` URL, or a local folder holding a finished shard set."""
    return is_s3_url(location) or (Path(location) / META_FILE).exists()
