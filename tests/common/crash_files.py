"""Real files that crash real decoders, and what the crash tests share.

The issue's two decoder crashes, built from pydicom's own test files:

- :func:`jls_abort_file`: a JPEG-LS file whose Rows/Columns (128×128) exceed its real image
  (64×64): GDCM aborts the process decoding it (``SIGABRT``);
- :func:`rle_panic_file`: a 16-bit RLE file whose Rows/Columns (32×32) are under its real size
  (64×64): pylibjpeg-rle raises a Rust panic (``PanicException``, a ``BaseException``).

hypermodal's readers now refuse the first before decoding (its codestream says 64×64) and catch
the second, so neither reaches a stage's worker through them. :class:`NativeDecodingEngine` puts
the crash back where isolation must handle it: its workers first decode each file of an item
with pydicom's decoders directly (GDCM, pylibjpeg), as a reader without those checks would, then
do the stage's own work (see :func:`_decode_then` for files named to hang or to abort late).
:class:`StuckEngine`'s workers never return, holding the GIL.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hypermodal.common.engines import LocalEngine
from hypermodal.common.isolation import heartbeat
from tests.helpers import pydicom_file


def _rewrite_size(src: str, dst: Path, rows: int, columns: int) -> Path:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom_file(src))
        ds.Rows, ds.Columns = rows, columns
        dst.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dst)
    return dst


def jls_abort_file(dst: Path) -> Path:
    """MR_small's JPEG-LS lossless file (64×64) with Rows/Columns 128×128: GDCM aborts."""
    return _rewrite_size("MR_small_jpeg_ls_lossless.dcm", dst, 128, 128)


def rle_panic_file(dst: Path) -> Path:
    """MR_small's 16-bit RLE file (64×64) with Rows/Columns 32×32: pylibjpeg-rle panics."""
    return _rewrite_size("MR_small_RLE.dcm", dst, 32, 32)


# ------------------------------------------------------------------ worker functions (pickled)
def native_decode(path: str) -> int:
    """Decode a DICOM file's pixels with pydicom's own decoders, bypassing hypermodal's checks."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(pydicom.dcmread(path).pixel_array.size)


def abort(_: Any) -> None:
    os.abort()


def segfault(_: Any) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def killed(_: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does


def allocate(mb: int) -> int:
    import numpy as np

    return int(np.ones(mb * 2**20, dtype=np.uint8).sum())


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def stuck(_: Any) -> None:
    """Never return, inside C code that holds the GIL (a decoder in an endless loop)."""
    re.match(r"(a+)+$", "a" * 64 + "b")


def square(x: int) -> int:
    return x * x


def _item_paths(work: Any) -> list[str]:
    """The files of a stage's work item: a catalog chunk, a store chunk, or a predict file."""
    if isinstance(work, tuple) and len(work) == 2 and isinstance(work[0], list):
        return [t.path for t in work[0]]  # catalog: (tasks, vocabulary)
    if isinstance(work, tuple) and len(work) == 6:
        return [f[0] for f in work[4]]  # store: (images, n, size, chunk, files, preprocess)
    if isinstance(work, str):
        return [work]  # predict's header pass, file by file: the path
    if isinstance(work, list) and all(isinstance(p, str) for p in work):
        return list(work)  # predict's header pass: a chunk of paths
    return [work[0]]  # predict's decoding: (path, image numbers, preprocess)


def _decode_then(fn: Callable[[Any], Any], work: Any) -> Any:
    """Decode the item's DICOM files natively, then do the stage's work. A file whose name
    holds ``hang`` never finishes decoding; one whose name holds ``abort-after`` aborts the
    worker after the stage's work on it was done (its rows already written)."""
    paths = _item_paths(work)
    for path in paths:
        heartbeat()  # as the stages do before each file: the time limit is per file
        if "hang" in Path(path).name:
            stuck(path)
        if path.endswith(".dcm"):
            try:
                native_decode(path)
            except Exception:  # noqa: BLE001 - only a crash or a panic matters here
                pass
    result = fn(work)
    if any("abort-after" in Path(p).name for p in paths):
        os.abort()
    return result


def _stuck_then(fn: Callable[[Any], Any], work: Any) -> Any:
    stuck(work)
    return fn(work)  # pragma: no cover - never reached


class _WrappingEngine(LocalEngine):
    """A :class:`LocalEngine` whose workers run ``before`` on each item, then the stage's work."""

    before: Callable[[Callable[[Any], Any], Any], Any]

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        return super().map(functools.partial(type(self).before, fn), items)

    def map_unordered(
        self, fn: Callable[[Any], Any], items: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        return super().map_unordered(functools.partial(type(self).before, fn), items)


class NativeDecodingEngine(_WrappingEngine):
    """Workers that decode every DICOM file of an item with pydicom's decoders first."""

    before = staticmethod(_decode_then)


class StuckEngine(_WrappingEngine):
    """Workers that never finish an item."""

    before = staticmethod(_stuck_then)


# --------------------------------------------------------------------------- processes
def descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (from ``/proc``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] != "Z":
                parents[int(entry.name)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and has not ended (a zombie has ended)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return text[0].decode(), int(text[1])


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    """Poll ``check`` every 50 ms for up to ``seconds``; its last answer."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()
