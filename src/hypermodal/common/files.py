"""Atomic file writes, output checks, stale temporary files, exclusive locks and file digests.

Every output is written to a temporary name in its own folder (``.<name>.<pid>.<random>.tmp``),
flushed and renamed into place (:func:`atomic_path`), so a reader never sees half a file. The
process id in the name lets the next run tell the leftovers of a killed run from the files of a
run still going (:func:`remove_stale_temps`). A full disk while writing raises
:class:`~hypermodal.common.errors.DiskFullError` naming the file, and :func:`check_writable`
says before any work starts that an output location cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from hypermodal.common.errors import DiskFullError, LockedError, OutputError

#: the ``errno`` values that mean "no room left" (a full disk, an exhausted quota)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full, whoever raised it.

    pyarrow and some C libraries report ``ENOSPC`` in the message only, so the text is checked
    when ``errno`` is not set.
    """
    if isinstance(exc, DiskFullError):
        return True
    if not isinstance(exc, OSError):
        return False
    if exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On error the temporary file is removed and ``path`` is untouched.

    Raises:
        DiskFullError: the disk filled up while the file was written, flushed or renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path) from exc
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_with(path: Path | str, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and rename the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextlib.contextmanager
def open_atomic(path: Path | str, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


_RANDOM = re.compile(r"[A-Za-z0-9_]+")


def _temp_owners(entry: str) -> list[tuple[str, int | None]]:
    """Who may own a temporary name of :func:`atomic_path`: ``(file name, process id)`` for
    ``.<name>.<pid>.<random>.tmp``, ``(file name, None)`` for ``.<name>.<random>.tmp`` of older
    versions; both readings when a name fits both; none for any other name."""
    if not entry.startswith(".") or not entry.endswith(TEMP_SUFFIX):
        return []
    head, sep, rand = entry[1 : -len(TEMP_SUFFIX)].rpartition(".")
    if not sep or not head or not _RANDOM.fullmatch(rand):
        return []
    owners: list[tuple[str, int | None]] = []
    name, sep, pid = head.rpartition(".")
    if sep and name and pid.isdigit():
        owners.append((name, int(pid)))
    owners.append((head, None))
    return owners


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(folder: Path | str, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporary files that killed runs left in ``folder``; return what was removed.

    Only names :func:`atomic_path` makes are touched: for the files ``names`` (every file when
    ``None``), and only when the process that made them is gone (names of older versions carry
    no process id and count as stale). Sub-folders are not entered.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else set(names)
    removed: list[Path] = []
    for entry in os.scandir(folder):
        owners = _temp_owners(entry.name)
        if wanted is not None:
            owners = [o for o in owners if o[0] in wanted]
        if not owners or not entry.is_file(follow_symlinks=False):
            continue
        pid = owners[0][1]
        if pid is not None and _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path, what: Path) -> None:
    """Write and remove one byte in ``folder``, or say why ``what`` cannot be written there."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".hypermodal-probe.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(folder) from exc
        raise OutputError(f"cannot write {what}: {folder}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, b"\0")
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(folder) from exc
        raise OutputError(f"cannot write {what}: {folder}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def check_writable(
    path: Path | str, folder: bool = False, suffixes: Iterable[str] = (), what: str = "the output"
) -> Path:
    """Check before any work that ``path`` can be written; return it.

    ``folder=False``: ``path`` is a file to write (it may exist: it is replaced), and must end in
    one of ``suffixes`` when given (``what`` names it in that message). ``folder=True``: ``path``
    is a folder to write into (it may exist). Nothing is created: the folder that will hold the
    output, or its closest existing ancestor, gets a one-byte probe file that is removed at once.

    Raises:
        OutputError: ``path`` is a folder where a file is wanted (or the reverse), an ancestor is
            a file, the extension does not match, or the location is read-only or not allowed.
        DiskFullError: the location has no room left even for the probe.
    """
    path = Path(path)
    wanted = tuple(s.lower() for s in suffixes)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file, not a folder to write into")
    if not folder and path.is_dir():
        raise OutputError(f"{path} is a folder; give the name of the file to write")
    if wanted and path.suffix.lower() not in wanted:
        kinds = " or ".join(wanted)
        raise OutputError(f"{path}: {what} is written as {kinds}; give a file name ending in it")
    start = path if folder else path.parent
    existing = _nearest_existing(start)
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file, not a folder")
    _probe(existing, path)
    return path


def reserve_space(path: Path | str, size: int) -> None:
    """Allocate the first ``size`` bytes of the existing file ``path`` on disk now, so that
    writing them later (through a memory map, where a full disk kills the writer with
    ``SIGBUS``) cannot run out of room. Where the file system cannot allocate ahead, the file
    stays as it is.

    Raises:
        DiskFullError: the disk has less than ``size`` bytes free for the file.
    """
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def exclusive_lock(path: Path, what: str, folder: Path | None = None) -> Any:
    """Hold an exclusive lock on the file ``path`` (released by the kernel even after
    ``kill -9``); keep the returned handle open for as long as the lock is needed. The holder's
    process id is written into the file, so the refusal can name it.

    Args:
        path: the lock file (created when missing; it may stay after the lock is released).
        what: the kind of run, for the message (``"store"``, ``"fetch"``).
        folder: the folder the lock guards, for the message (default: ``path``'s folder).

    Raises:
        LockedError: another process (or another handle of this one) holds the lock; nothing
            is changed.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip()
        fh.close()
        by = f" (pid {holder})" if holder.isdigit() else ""
        guarded = path.parent if folder is None else folder
        raise LockedError(
            f"{guarded} is locked by another {what} run{by}; wait for it to finish"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``sha256``, ``md5``, … as :func:`hashlib.new` names them)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()
