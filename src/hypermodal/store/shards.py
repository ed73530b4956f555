"""The slice store cut into shards for object storage, and a streaming reader that trains from them.

A finished store (:mod:`hypermodal.store.build`) is one memory-mapped ``images.u8``: ideal on local
disk, wrong for object storage (one 321 GB object, one ranged GET per 49 KB image).
:func:`export_shards` cuts it into shard objects of a few hundred MB, each a raw block of
``size × size`` uint8 images (no container, no decode: a shard read is one GET and one
``np.frombuffer``)::

    DIR_OR_S3_URL/
      shards/<split>-<k:05d>.u8   raw uint8, shape (n_k, size, size); images of ONE split, drawn at
                                  random from the whole split (the export shuffles each split)
      shards.parquet              one row per shard: shard, split, images, bytes, crc32, sha256
      samples.parquet             one row per image: row (store row), split, label_index,
                                  shard (index into shards.parquet), position (image in the shard)
      manifest.parquet            the store's manifest, unchanged (row i = store row i)
      shards.json                 metadata (store.json's vocabulary/preprocess/split hash, shard
                                  size, export seed); written LAST: its presence means complete

Local folders and ``s3://`` prefixes are reached through one :mod:`pyarrow.fs` layer
(:mod:`hypermodal.store.shard_storage`); :class:`ShardSet` (:mod:`hypermodal.store.shard_set`)
opens the index and reads whole shards back.

:class:`ShardFeeder` (:mod:`hypermodal.store.shard_feeder`) reads one split back as batches
``(uint8 images, label_index, row)`` — the contract of
:class:`hypermodal.store.loader.BatchFeeder`. Its epoch order is a pure function of
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
images are read. Shards are read whole (one object each), checked against their size and CRC-32,
and prefetched by a thread pool one window ahead. CRC-32 runs at ≈ 2.5 GB/s here; SHA-256 at
≈ 0.3 GB/s on this CPU without SHA extensions, 8× slower than a raw shard read, so it is opt-in:
``verify="sha256"``.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from hypermodal.common.errors import ShardError
from hypermodal.common.progress import progress_bar
from hypermodal.store.format import MANIFEST_FILE, SPLITS, meta_json
from hypermodal.store.reader import SliceStore
from hypermodal.store.shard_feeder import EpochOrder, ShardFeeder, ShardTrainingData
from hypermodal.store.shard_set import (
    FORMAT,
    META_FILE,
    SAMPLES_FILE,
    SHARD_DIR,
    SHARDS_FILE,
    VERIFY,
    VERSION,
    ShardSet,
    is_shard_set,
)
from hypermodal.store.shard_storage import ShardStorage, is_s3_url, s3_filesystem

__all__ = [
    "DEFAULT_SHARD_MB",
    "FORMAT",
    "META_FILE",
    "SAMPLES_FILE",
    "SHARDS_FILE",
    "SHARD_DIR",
    "VERIFY",
    "VERSION",
    "EpochOrder",
    "ShardError",
    "ShardFeeder",
    "ShardSet",
    "ShardStorage",
    "ShardSummary",
    "ShardTrainingData",
    "export_shards",
    "images_per_shard",
    "is_s3_url",
    "is_shard_set",
    "s3_filesystem",
]

DEFAULT_SHARD_MB = 256
READ_BLOCK = 1024  # images copied from the store per write


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


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def _shard_plans(store: SliceStore, per_shard: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(shard name, store rows) of every shard: each split shuffled with ``seed``, then cut."""
    plans: list[tuple[str, np.ndarray]] = []
    for split in SPLITS:
        rows = store.rows(split)
        rng = np.random.default_rng([int(seed), SPLITS.index(split)])
        rows = rows[rng.permutation(len(rows))]
        for k, lo in enumerate(range(0, len(rows), per_shard)):
            # sorted inside a shard: the store is read in order; the reader reshuffles anyway
            plans.append((f"{SHARD_DIR}/{split}-{k:05d}.u8", np.sort(rows[lo : lo + per_shard])))
    return plans


def _write_shard(store: SliceStore, rows: np.ndarray, path: Path, bar: Any) -> tuple[int, str]:
    """Copy the store's ``rows`` into the local file ``path`` (synced); its CRC-32 and SHA-256."""
    digest = hashlib.sha256()
    crc = 0
    with open(path, "wb") as fh:
        for lo in range(0, len(rows), READ_BLOCK):
            block = np.ascontiguousarray(store.images[rows[lo : lo + READ_BLOCK]])
            data = memoryview(block).cast("B")
            digest.update(data)
            crc = zlib.crc32(data, crc)
            fh.write(data)
            bar.update(len(block))
        fh.flush()
        os.fsync(fh.fileno())
    return crc, digest.hexdigest()


def _samples_table(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if parts:
        return pd.concat(parts, ignore_index=True)
    empty = {"row": [], "split": [], "label_index": [], "shard": [], "position": []}
    return pd.DataFrame(empty).astype(
        {"row": "int64", "label_index": "int64", "shard": "int32", "position": "int32"}
    )


def export_shards(
    store_path: Path | str,
    out: str | Path,
    *,
    shard_mb: float = DEFAULT_SHARD_MB,
    seed: int = 0,
    filesystem: pafs.FileSystem | None = None,
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
        filesystem: a :class:`pyarrow.fs.FileSystem` to write through (default: the local one,
            or S3 with the environment's credentials and ``endpoint_url``).
        endpoint_url: S3-compatible endpoint when no file system is given.
        progress: show a progress bar.
    """
    start = time.perf_counter()
    store = SliceStore.open(store_path)
    size = store.preprocess.size
    per_shard = images_per_shard(size, shard_mb)
    loc = ShardStorage(out, filesystem=filesystem, endpoint_url=endpoint_url)
    if loc.exists(META_FILE):
        loc.delete(META_FILE)  # the old set is about to be overwritten: make it unreadable first
    labels = store.labels()
    plans = _shard_plans(store, per_shard, seed)
    shard_rows: list[dict[str, Any]] = []
    sample_parts: list[pd.DataFrame] = []
    bar = progress_bar(sum(len(r) for _, r in plans), progress, desc="shard", unit="img")
    # written to a temporary name, then renamed into place (same file system) or uploaded
    with loc.staging() as tmpdir:
        try:
            for shard_id, (name, rows) in enumerate(plans):
                split = name.split("/")[1].rsplit("-", 1)[0]
                tmp = tmpdir / f"{shard_id}.u8"
                crc, sha = _write_shard(store, rows, tmp, bar)
                loc.put_file(name, tmp)
                shard_rows.append(
                    {
                        "shard": name,
                        "split": split,
                        "images": len(rows),
                        "bytes": len(rows) * size * size,
                        "crc32": crc,
                        "sha256": sha,
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
    samples = _samples_table(sample_parts)
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
    loc.put_bytes(META_FILE, meta_json(meta).encode())
    return ShardSummary(
        out=str(out),
        shards=len(shard_rows),
        images=int(len(samples)),
        bytes=int(sum(s["bytes"] for s in shard_rows)),
        images_per_shard=per_shard,
        seconds=round(time.perf_counter() - start, 3),
    )
