"""Files whose content may be compressed: the first bytes of the content, opening and closing.

:func:`check_regular` refuses FIFOs, sockets, devices and directories from their status, before
anything opens them (every reader goes through it);
:func:`read_head` gives the first bytes of a file's content (decompressed first when the file
is gzip-compressed) for sniffing; :func:`open_content` opens a file transparently un-gzipping
it; :func:`close_stream` closes a decompressing stream together with the file under it.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from pathlib import Path
from typing import IO, BinaryIO, cast

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.constants import GZIP_MAGIC

__all__ = ["HEAD_SIZE", "check_regular", "close_stream", "open_content", "read_head"]

#: How many leading bytes (after gzip decompression) readers get to sniff.
HEAD_SIZE = 1024


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_regular(path: Path | str) -> None:
    """Refuse anything but a regular file (or a link to one), from its status alone.

    A FIFO blocks whoever opens it until a writer comes, a device may never end or act when
    opened: neither is ever opened here.

    Args:
        path: The path.

    Raises:
        UnsupportedFileError: A directory, FIFO, socket or device.
        CorruptFileError: The path cannot be looked up (missing, a broken link, no permission).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise UnsupportedFileError(path, "a directory, not a file")
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise UnsupportedFileError(path, f"{kind}, not a regular file: not opened")


def read_head(path: Path | str, size: int = HEAD_SIZE) -> tuple[bytes, bool]:
    """Return the first ``size`` bytes of a file's content, and whether it was gzip-compressed.

    Args:
        path: The file.
        size: How many bytes to return at most.

    Returns:
        ``(head, gzipped)``; for a gzip file ``head`` holds the first decompressed bytes.

    Raises:
        UnsupportedFileError: The path is a directory, FIFO, socket or device.
        CorruptFileError: The file cannot be read, or is a gzip file whose start is damaged.
    """
    path = Path(path)
    check_regular(path)
    try:
        with open(path, "rb") as fp:
            raw = fp.read(size)
            if raw[:2] != GZIP_MAGIC:
                return raw, False
            inflater = zlib.decompressobj(wbits=31)
            out = b""
            chunk = raw
            while len(out) < size:
                out += inflater.decompress(chunk, size - len(out))
                chunk = inflater.unconsumed_tail or fp.read(65536)
                if not chunk or inflater.eof:
                    break
            return out[:size], True
    except zlib.error as exc:
        raise CorruptFileError(path, f"damaged gzip stream ({exc})") from None
    except IsADirectoryError:
        raise UnsupportedFileError(path, "a directory, not a file") from None
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None


def open_content(path: Path) -> tuple[BinaryIO, bool]:
    """Open ``path`` for reading, transparently un-gzipping ``.dcm.gz``-style files.

    Args:
        path: The file.

    Returns:
        ``(stream, gzipped)``; close the stream with :func:`close_stream`.

    Raises:
        UnsupportedFileError: A directory, FIFO, socket or device (never opened).
        OSError: The file cannot be opened or read.
    """
    check_regular(path)
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller
    try:
        magic = raw.read(2)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if magic == GZIP_MAGIC:
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")), True
    return raw, False


def close_stream(stream: IO[bytes]) -> None:
    """Close ``stream`` and, for a gzip or bzip2 stream over a file object, that file too."""
    inner = getattr(stream, "fileobj", None) or getattr(stream, "_fp", None)
    stream.close()
    if inner is not None and hasattr(inner, "close"):
        inner.close()
