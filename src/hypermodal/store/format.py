"""The store folder's format: file names, the ``store.json`` writer and the row writer.

Layout of a store folder::

    images.u8          raw uint8 array, shape (N, size, size), C order; row i is manifest row i
    manifest.parquet   one row per image: the catalog columns + ``split``, ``label_index``, ``ok``
                       and ``stats`` (the image's intensity statistics in its own units, for
                       the feature model; NaN for a failed image)
    store.json         metadata (classes, preprocessing, split hash, counts, versions); written
                       last, so its presence means the store is complete
    journal/           one marker per finished chunk, so an interrupted build resumes
    errors.jsonl       images that could not be decoded, with their reasons

Every builder (:func:`~hypermodal.store.build.build_store`,
:func:`~hypermodal.store.build.write_store_arrays`, :func:`~hypermodal.store.stream.stream_build`)
writes ``store.json`` through :func:`write_meta` and pixels through :func:`write_rows`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import StoreError
from hypermodal.common.files import write_text_atomic
from hypermodal.split import SPLITS

#: The manifest column of per-image intensity statistics (:data:`~hypermodal.evidence.STAT_NAMES`).
STATS_COLUMN = "stats"

if TYPE_CHECKING:
    from hypermodal.labels import ClassVocabulary
    from hypermodal.preprocess import PreprocessConfig

__all__ = [
    "ERRORS_FILE",
    "IMAGES_FILE",
    "JOURNAL_DIR",
    "MANIFEST_FILE",
    "META_FILE",
    "PLAN_FILE",
    "SPLITS",
    "StoreError",
    "frame_hash",
    "images_per_class_per_split",
    "meta_json",
    "write_meta",
    "sync_rows",
    "write_rows",
]

IMAGES_FILE = "images.u8"
MANIFEST_FILE = "manifest.parquet"
META_FILE = "store.json"
JOURNAL_DIR = "journal"
ERRORS_FILE = "errors.jsonl"
PLAN_FILE = "plan.parquet"


def meta_json(meta: Mapping[str, Any]) -> str:
    """The text of a metadata file (``store.json``, a shard set's ``shards.json``)."""
    return json.dumps(meta, indent=2, default=str)


def write_meta(
    out: Path,
    *,
    num_images: int,
    num_ok: int,
    vocabulary: ClassVocabulary,
    preprocess: PreprocessConfig,
    split_hash: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out/store.json`` (atomically) and return what it holds.

    The keys come in this order: ``num_images``, ``num_ok``, ``vocabulary``, ``preprocess``,
    ``split_hash``, then the keys of ``extra`` in their order (what the builder records about its
    run, such as ``plan_hash`` and ``summary``, then the caller's own keys). A key of ``extra``
    that is already present takes the new value and keeps its place.
    """
    meta: dict[str, Any] = {
        "num_images": num_images,
        "num_ok": num_ok,
        "vocabulary": vocabulary.to_dict(),
        "preprocess": preprocess.to_dict(),
        "split_hash": split_hash,
        **(extra or {}),
    }
    write_text_atomic(out / META_FILE, meta_json(meta))
    return meta


def write_rows(fd: int, lo: int, images: np.ndarray) -> None:
    """Write ``images`` (rows ``lo``, ``lo + 1``, ...) into the open ``images.u8``; sync to disk.

    Args:
        fd: a file descriptor of ``images.u8`` opened for writing.
        lo: store row of ``images[0]``.
        images: uint8 ``(n, size, size)`` (a memory map is written without loading it).
    """
    data = memoryview(np.ascontiguousarray(images, dtype=np.uint8)).cast("B")
    offset = lo * images.shape[1] * images.shape[2]
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
    sync_rows(fd)


def sync_rows(fd: int) -> None:
    """Flush the open ``images.u8`` to disk (its data; ``fsync`` where ``fdatasync`` is missing)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def frame_hash(table: pd.DataFrame, columns: Iterable[str]) -> str:
    """A stable SHA-256 over the given columns of a table (used for split and catalog hashes)."""
    h = hashlib.sha256()
    for col in columns:
        h.update(col.encode())
        h.update(
            pd.util.hash_pandas_object(table[col].astype(str), index=False).to_numpy().tobytes()
        )
    return h.hexdigest()[:16]


def images_per_class_per_split(
    table: pd.DataFrame, classes: Iterable[str]
) -> dict[str, dict[str, int]]:
    """{split: {class: images}} for every split and class (zeros included); labels of the
    table outside ``classes`` follow, sorted."""
    counts = table.groupby(["split", "label"]).size()
    names = list(classes)
    names += sorted(set(table["label"]) - set(names))
    return {s: {c: int(counts.get((s, c), 0)) for c in names} for s in SPLITS}
