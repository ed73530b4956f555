"""Store: every cataloged 2D image preprocessed once to 224x224 uint8, read without decoding.

Build one from catalog rows (:func:`build_store`), from arrays (:func:`write_store_arrays`) or
straight from a plan (:func:`hypermodal.store.stream.stream_build`); open it with
:class:`SliceStore`; cut it into shards for object storage with
:func:`hypermodal.store.shards.export_shards`.
"""

from __future__ import annotations

from hypermodal.store.build import StoreSummary, build_store, write_store_arrays
from hypermodal.store.format import (
    ERRORS_FILE,
    IMAGES_FILE,
    JOURNAL_DIR,
    MANIFEST_FILE,
    META_FILE,
    SPLITS,
    STATS_COLUMN,
    StoreError,
    frame_hash,
    images_per_class_per_split,
)
from hypermodal.store.reader import SliceStore, store_errors

__all__ = [
    "ERRORS_FILE",
    "IMAGES_FILE",
    "JOURNAL_DIR",
    "MANIFEST_FILE",
    "META_FILE",
    "SPLITS",
    "STATS_COLUMN",
    "SliceStore",
    "StoreError",
    "StoreSummary",
    "build_store",
    "frame_hash",
    "images_per_class_per_split",
    "store_errors",
    "write_store_arrays",
]
