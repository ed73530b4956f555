"""A shard set's format and its reader: the index, and whole shards read back and checked.

The layout is described in :mod:`hypermodal.store.shards`.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from hypermodal.common.errors import ShardError
from hypermodal.labels import ClassVocabulary
from hypermodal.store.format import SPLITS
from hypermodal.store.shard_storage import ShardStorage, is_s3_url

FORMAT = "hypermodal-shards"
VERSION = 1
META_FILE = "shards.json"
SHARDS_FILE = "shards.parquet"
SAMPLES_FILE = "samples.parquet"
SHARD_DIR = "shards"
VERIFY = ("crc32", "sha256", "none")


def check_verify(verify: str) -> None:
    """:class:`ValueError` unless ``verify`` is one of :data:`VERIFY`."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")


@dataclass
class ShardSet:
    """An exported shard set, opened (metadata and index only; no shard is read)."""

    location: ShardStorage
    meta: dict[str, Any]
    shards: pd.DataFrame
    samples: pd.DataFrame

    @classmethod
    def open(
        cls,
        location: str | Path,
        *,
        filesystem: pafs.FileSystem | None = None,
        endpoint_url: str | None = None,
    ) -> ShardSet:
        """Open the shard set at a local folder or ``s3://bucket/prefix``.

        Args:
            location: where :func:`~hypermodal.store.shards.export_shards` wrote it.
            filesystem: a :class:`pyarrow.fs.FileSystem` to read it through (default: the
                local one, or S3 with the environment's credentials).
            endpoint_url: S3-compatible endpoint when no file system is given.
        """
        loc = ShardStorage(location, filesystem=filesystem, endpoint_url=endpoint_url)
        try:
            meta = json.loads(loc.read(META_FILE).to_pybytes())
        except ShardError:
            raise ShardError(
                f"{location} is not a finished shard set (no {META_FILE}); "
                "export one with `hypermodal shard`"
            ) from None
        if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
            raise ShardError(f"{location}: unsupported shard format {meta.get('format')!r}")
        shards = pd.read_parquet(io.BytesIO(loc.read(SHARDS_FILE)))
        # the split column is not loaded (a shard's split is in the shard index): at 6.4 M images
        # the four integer columns take ≈ 150 MB per process, an object-string column 400 MB more
        samples = pd.read_parquet(
            io.BytesIO(loc.read(SAMPLES_FILE)), columns=["row", "label_index", "shard", "position"]
        )
        if len(samples) != int(meta["num_images"]) or len(shards) != int(meta["num_shards"]):
            raise ShardError(f"{location}: index does not match {META_FILE}")
        return cls(loc, meta, shards, samples)

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def vocabulary(self) -> ClassVocabulary:
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
        check_verify(verify)
        info = self.shards.iloc[int(shard_id)]
        name = str(info["shard"])
        data = self.location.read(name)  # local: zero-copy from the page cache
        if data.size != int(info["bytes"]):
            raise ShardError(
                f"shard {self.location.where(name)} is corrupt: {data.size} bytes, "
                f"index says {int(info['bytes'])}"
            )
        if (verify == "crc32" and zlib.crc32(data) != int(info["crc32"])) or (
            verify == "sha256" and hashlib.sha256(data).hexdigest() != info["sha256"]
        ):
            raise ShardError(
                f"shard {self.location.where(name)} is corrupt: {verify.upper()} does not match "
                "the index"
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(-1, self.size, self.size)


def is_shard_set(location: str | Path) -> bool:
    """An ``s3://`` URL, or a local folder holding a finished shard set."""
    return is_s3_url(location) or (Path(location) / META_FILE).exists()
