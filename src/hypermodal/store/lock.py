"""The store folder's guard: one build at a time, checked before anything is decoded.

:func:`store_folder` wraps every :func:`~hypermodal.store.build.build_store`: the folder must be
writable, the build holds the folder's exclusive lock (``out/.lock``; the kernel releases it even
after ``kill -9``), a second build into the same folder fails at once and changes nothing, the
temporary files a killed build left are removed, and the lock file is removed when the store is
finished (a finished store holds only its own files).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from hypermodal.common.errors import StoreError
from hypermodal.common.files import check_writable, exclusive_lock, remove_stale_temps
from hypermodal.store.format import JOURNAL_DIR, META_FILE

log = logging.getLogger(__name__)

#: the exclusive lock of a build in progress (removed when the store is finished)
LOCK_FILE = ".lock"


def _finished(out: Path) -> StoreError:
    return StoreError(f"{out} already holds a finished store; remove it or pass --force")


@contextlib.contextmanager
def store_folder(out: Path, replace: bool = False) -> Iterator[None]:
    """Hold ``out`` for one build; the lock file goes when the block ends without an error.

    Raises:
        StoreError: ``out`` already holds a finished store and ``replace`` is False.
        OutputError: ``out`` is a file, or cannot be written.
        LockedError: another build holds the lock (nothing is changed).
    """
    if (out / META_FILE).exists() and not replace:
        raise _finished(out)
    check_writable(out, folder=True)
    out.mkdir(parents=True, exist_ok=True)
    lock = exclusive_lock(out / LOCK_FILE, "store")
    try:
        if (out / META_FILE).exists():
            if not replace:  # another build finished between the check and the lock
                (out / LOCK_FILE).unlink(missing_ok=True)
                raise _finished(out)
            _empty(out)
        for folder in (out, out / JOURNAL_DIR):
            for path in remove_stale_temps(folder):
                log.info("removed %s, left by an interrupted build", path)
        yield
        (out / LOCK_FILE).unlink(missing_ok=True)
    finally:
        lock.close()


def _empty(out: Path) -> None:
    """Remove everything in ``out`` but the lock file."""
    for entry in out.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
