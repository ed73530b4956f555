"""Putting one file at its place in the sorted tree, never overwriting anything.

Each way of placing a file is atomic and refuses an existing name: ``os.symlink`` and
``os.link`` fail on a name that exists, and a copy is written to a temporary name beside its
target (the names :func:`hypermodal.common.files.atomic_path` uses, so a killed run's leftovers
are recognised and removed) and then hard-linked into place. A name that is taken by the same
file (the same inode, a link to the same source, or the same bytes) means the file is already
placed — a rerun after an interruption resumes without duplicates; a name taken by a different
file gives the next free name (``scan_2.dcm``).
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from hypermodal.common.files import TEMP_SUFFIX
from hypermodal.sort.names import numbered

Mode = Literal["symlink", "hardlink", "copy"]
MODES: tuple[str, ...] = ("symlink", "hardlink", "copy")
#: the most de-duplicated names tried for one file
MAX_ALTERNATIVES = 10_000


def same_file(source: str, target: str) -> bool:
    """Whether the existing ``target`` already is ``source``: the same inode (a hard link, or a
    symlink that leads to it) or a regular file with the same bytes."""
    try:
        if os.path.samefile(source, target):
            return True
        if os.path.islink(target):
            return False  # a link to some other file
        s, t = os.stat(source), os.stat(target)
    except OSError:
        return False
    return s.st_size == t.st_size and filecmp.cmp(source, target, shallow=False)


def _copy(source: str, target: str) -> None:
    folder, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        shutil.copymode(source, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)  # refuses an existing name, unlike a rename
        except OSError as exc:
            if exc.errno in (errno.EEXIST,):
                raise
            if os.path.lexists(target):  # a file system without hard links
                raise FileExistsError(errno.EEXIST, "exists", target) from None
            os.rename(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _make(source: str, target: str, mode: Mode) -> None:
    if mode == "symlink":
        os.symlink(os.path.abspath(source), target)
    elif mode == "hardlink":
        os.link(source, target)
    else:
        _copy(source, target)


def free_name(source: str, target: str, taken: set[str] | None = None) -> tuple[str, bool]:
    """The name ``source`` goes to: ``target`` or its first free (or already-same) alternative.

    Args:
        source: The file to place.
        target: Where it should go.
        taken: Names given to other files of this run not yet made (a dry run makes none).

    Returns:
        ``(name, already)``: ``already`` when that name already holds the same file.
    """
    taken = taken if taken is not None else set()
    folder, name = os.path.split(target)
    for n in range(1, MAX_ALTERNATIVES + 1):
        candidate = target if n == 1 else os.path.join(folder, numbered(name, n))
        if candidate in taken:
            continue
        if not os.path.lexists(candidate):
            return candidate, False
        if same_file(source, candidate):
            return candidate, True
    raise FileExistsError(errno.EEXIST, f"{MAX_ALTERNATIVES} names taken", target)


def place(source: str, target: str, mode: Mode) -> tuple[str, str]:
    """Place ``source`` at ``target`` (or its first free alternative), never overwriting.

    Returns:
        ``(where it is, status)``: status ``"placed"``, ``"renamed"`` (a different file held
        the name, it went to the next free one) or ``"already"`` (it was there already).

    Raises:
        OSError: It cannot be placed (a hard link across file systems, no permission, …).
    """
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    for _ in range(MAX_ALTERNATIVES):
        where, already = free_name(source, target)
        if already:
            return where, "already"
        try:
            _make(source, where, mode)
        except FileExistsError:
            continue  # taken between the look and the make (another run): look again
        return where, "placed" if where == target else "renamed"
    raise FileExistsError(errno.EEXIST, "no free name", target)
