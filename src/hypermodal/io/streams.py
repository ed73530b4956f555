"""Files whose content may be compressed: the first bytes of the content, opening and closing.

:func:`read_head` gives the first bytes of a file's content (decompressed first when the file
is gzip-compressed) for sniffing; :func:`open_content` opens a file transparently un-gzipping
it; :func:`close_stream` closes a decompressing stream together with the file under it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO, BinaryIO, cast

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.constants import GZIP_MAGIC

__all__ = ["HEAD_SIZE", "close_stream", "open_content", "read_head"]

#: How many leading bytes (after gzip decompression) readers get to sniff.
HEAD_SIZE = 1024


def read_head(path: Path | str, size: int = HEAD_SIZE) -> tuple[bytes, bool]:
    """Return the first ``size`` bytes of a file's content, and whether it was gzip-compressed.

    Args:
        path: The file.
        size: How many bytes to return at most.

    Returns:
        ``(head, gzipped)``; for a gzip file ``head`` holds the first decompressed bytes.

    Raises:
        UnsupportedFileError: The path is a directory.
        CorruptFileError: The file cannot be read, or is a gzip file whose start is damaged.
    """
    path = Path(path)
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
        OSError: The file cannot be opened or read.
    """
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
