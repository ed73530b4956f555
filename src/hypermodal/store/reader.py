"""A finished store, opened read-only.

Training reads ``images.u8`` through a memory map: no decoding, no per-file overhead, random
access at memory speed, and the OS page cache shares it between data-loader workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.rejects import read_errors
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.store.format import (
    ERRORS_FILE,
    IMAGES_FILE,
    MANIFEST_FILE,
    META_FILE,
    SPLITS,
    StoreError,
)


@dataclass
class SliceStore:
    """A finished store, opened read-only.

    Attributes:
        path: the store folder.
        images: memory-mapped uint8 array of shape (N, size, size).
        table: the manifest (one row per image, same order as ``images``).
        vocabulary: class order used for ``label_index``.
        preprocess: preprocessing applied to every image.
        meta: the whole ``store.json``.
    """

    path: Path
    images: np.ndarray
    table: pd.DataFrame
    vocabulary: ClassVocabulary
    preprocess: PreprocessConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | str) -> SliceStore:
        """Open the store at ``path``; :class:`StoreError` when it is unfinished or inconsistent."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise StoreError(
                f"{path} is not a finished store (no {META_FILE}); build it with `hypermodal store`"
            )
        meta = json.loads(meta_path.read_text())
        table = pd.read_parquet(path / MANIFEST_FILE)
        size = int(meta["preprocess"]["size"])
        n = int(meta["num_images"])
        if len(table) != n:
            raise StoreError(f"{path}: manifest has {len(table)} rows, store.json says {n}")
        expected = n * size * size
        actual = (path / IMAGES_FILE).stat().st_size
        if actual != expected:
            raise StoreError(f"{path}: {IMAGES_FILE} is {actual} bytes, expected {expected}")
        images = (
            np.memmap(path / IMAGES_FILE, dtype=np.uint8, mode="r", shape=(n, size, size))
            if n
            else np.zeros((0, size, size), dtype=np.uint8)
        )
        return cls(
            path=path,
            images=images,
            table=table,
            vocabulary=ClassVocabulary.from_dict(meta["vocabulary"]),
            preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
            meta=meta,
        )

    def __len__(self) -> int:
        return len(self.table)

    @property
    def split_hash(self) -> str:
        return str(self.meta.get("split_hash", ""))

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row indices of images that were stored successfully, optionally of one split."""
        mask = self.table["ok"].to_numpy(dtype=bool, copy=True)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
            mask &= (self.table["split"] == split).to_numpy()
        return np.flatnonzero(mask)

    def labels(self) -> np.ndarray:
        """``label_index`` for every row (int64)."""
        return self.table["label_index"].to_numpy(dtype=np.int64)


def store_errors(path: Path | str) -> list[dict]:
    """The images a store could not decode (its ``errors.jsonl``), with their reasons."""
    return read_errors(Path(path) / ERRORS_FILE)
