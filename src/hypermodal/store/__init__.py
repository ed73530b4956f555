"""Store: every cataloged 2D image preprocessed once to 224x224 uint8, read without decoding."""

from __future__ import annotations

from hypermodal.store.build import (
    ERRORS_FILE,
    IMAGES_FILE,
    JOURNAL_DIR,
    MANIFEST_FILE,
    META_FILE,
    SPLITS,
    SliceStore,
    StoreError,
    build_store,
    images_per_class_per_split,
    store_errors,
    write_store_arrays,
)

__all__ = [
    "ERRORS_FILE",
    "IMAGES_FILE",
    "JOURNAL_DIR",
    "MANIFEST_FILE",
    "META_FILE",
    "SPLITS",
    "SliceStore",
    "StoreError",
    "build_store",
    "images_per_class_per_split",
    "store_errors",
    "write_store_arrays",
]
