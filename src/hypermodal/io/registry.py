"""Pick the reader for a file, and read through it with one error contract.

:func:`reader_for` sniffs the file's first bytes (decompressing them first when the file is
gzip-compressed), asking each registered reader in turn; when no reader recognises the content
it falls back to the file name's suffix. :func:`read_header` and :func:`iter_images` dispatch to
that reader and turn any unexpected exception (a native decoder's panic, a ``BaseException``,
included; Ctrl-C and ``SystemExit`` pass) into :class:`CorruptFileError`, so callers only
ever have to catch :class:`ImageReadError` (plus :class:`IndexError` for an image index out of
range, which is a caller's mistake, not a file's). A FIFO, socket or device is refused from
its status, never opened. A path may be given as the file system has it or as an output wrote
it (:func:`~hypermodal.common.paths.path_text`, for names that are not UTF-8): headers and
errors name the file by that text.

Readers are plain objects kept in an ordered list; add or replace one with
:func:`register_reader`:

    >>> from hypermodal.io.nifti import NiftiReader
    >>> register_reader(NiftiReader(volumes="all"))  # replaces the default NIfTI reader
    NiftiReader(volumes='all')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hypermodal.common.errors import CorruptFileError, ImageReadError, UnsupportedFileError
from hypermodal.common.paths import local_path, path_text
from hypermodal.io.base import FileHeader, Reader
from hypermodal.io.dicom import DicomReader
from hypermodal.io.metaimage import MetaImageReader
from hypermodal.io.nifti import NiftiReader
from hypermodal.io.nrrd import NrrdReader
from hypermodal.io.raster import RasterReader
from hypermodal.io.streams import HEAD_SIZE, read_head

__all__ = [
    "HEAD_SIZE",
    "iter_images",
    "read_head",
    "read_header",
    "reader_for",
    "register_reader",
    "registered_readers",
    "unregister_reader",
]

_MAX_REASON = 300

# Order matters only when two readers claim the same bytes: DICOM comes first because a DICOM
# preamble may legally hold a TIFF header (dual-personality files).
_READERS: list[Reader] = [
    DicomReader(),
    NiftiReader(),
    NrrdReader(),
    MetaImageReader(),
    RasterReader(),
]


def register_reader(reader: Reader | type[Reader], *, first: bool = False) -> Reader:
    """Add a reader, or replace the registered reader that has the same ``name``.

    Args:
        reader: A reader instance, or a reader class (instantiated without arguments).
        first: Put a new reader ahead of the others (it is then asked first when sniffing).
            A replacement keeps its predecessor's place unless ``first`` is set.

    Returns:
        The registered instance.
    """
    instance: Reader = reader() if isinstance(reader, type) else reader
    for pos, existing in enumerate(_READERS):
        if existing.name == instance.name:
            if first:
                del _READERS[pos]
                _READERS.insert(0, instance)
            else:
                _READERS[pos] = instance
            return instance
    if first:
        _READERS.insert(0, instance)
    else:
        _READERS.append(instance)
    return instance


def unregister_reader(name: str) -> Reader | None:
    """Remove the registered reader called ``name``.

    Args:
        name: The reader's ``name``.

    Returns:
        The removed reader, or None when none had that name.
    """
    for pos, existing in enumerate(_READERS):
        if existing.name == name:
            return _READERS.pop(pos)
    return None


def registered_readers() -> tuple[Reader, ...]:
    """The registered readers, in the order they are asked."""
    return tuple(_READERS)


def _suffix_match(name: str, reader: Reader) -> int:
    """Length of the longest of ``reader.extensions`` that ``name`` ends with (0: none)."""
    return max((len(ext) for ext in reader.extensions if ext and name.endswith(ext)), default=0)


def reader_for(path: Path | str) -> Reader:
    """Choose the reader for a file: by content first, then by file-name suffix.

    Args:
        path: The file.

    Returns:
        The registered reader that recognises the file.

    Raises:
        UnsupportedFileError: Empty file, a directory, FIFO, socket or device (never opened),
            or not a recognised image format.
        CorruptFileError: The file cannot be read.
    """
    path = Path(path)
    head, gzipped = read_head(path)
    if not head:
        if gzipped:
            raise CorruptFileError(path, "gzip file with no content")
        raise UnsupportedFileError(path, "empty file")
    for reader in _READERS:
        if reader.sniff(path, head):
            return reader
    name = path.name.lower()
    best, best_len = None, 0
    for reader in _READERS:
        length = _suffix_match(name, reader)
        if length > best_len:
            best, best_len = reader, length
    if best is not None:
        return best
    if gzipped:
        raise UnsupportedFileError(path, "gzip file whose content is not a recognised image format")
    raise UnsupportedFileError(path, "not a recognised image format")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


def _as_text(exc: ImageReadError, text: str) -> ImageReadError:
    """``exc`` naming the file by its text form (see :mod:`hypermodal.common.paths`)."""
    if exc.path == text and path_text(exc.reason) == exc.reason:
        return exc
    return type(exc)(text, path_text(exc.reason))


def read_header(path: Path | str) -> FileHeader:
    """Read a file's metadata through its reader, without decoding pixels.

    Args:
        path: The file, or its text form as written in an output
            (:func:`~hypermodal.common.paths.local_path`).

    Returns:
        The reader's :class:`FileHeader`; its ``path`` is the text form.

    Raises:
        UnsupportedFileError: Not an image format any reader handles, no pixel data, or not a
            regular file (a FIFO, socket or device is never opened).
        CorruptFileError: Anything else that went wrong, with a one-line reason.
    """
    text = path_text(path)
    path = local_path(path)
    try:
        reader = reader_for(path)
        try:
            header = reader.header(path)
        except (ImageReadError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - the contract: only ImageReadError escapes
            raise CorruptFileError(text, _one_line(exc)) from exc
    except ImageReadError as exc:
        raise _as_text(exc, text) from exc.__cause__
    extent = (header.num_images, header.rows, header.columns)
    if min(extent) < 1 or max(extent) > 2**31 - 1:
        raise CorruptFileError(
            text,
            f"header describes no image ({header.num_images} image(s) of "
            f"{header.rows}×{header.columns})",
        )
    header.path = text
    return header


def iter_images(
    path: Path | str, indices: Iterable[int] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, image)`` for a file's 2D images (all when ``indices`` is None).

    The reader is chosen immediately (so an unrecognised file fails at the call); decoding
    happens one image at a time as the iterator is advanced, and images not asked for are not
    decoded.

    Args:
        path: The file, or its text form as written in an output
            (:func:`~hypermodal.common.paths.local_path`).
        indices: 0-based image numbers wanted, yielded in the order given.

    Returns:
        An iterator of ``(index, float32 2D array)``.

    Raises:
        UnsupportedFileError: Not a recognised format or not a regular file (at the call), or
            unreadable content.
        CorruptFileError: Any failure while reading, with a one-line reason.
        IndexError: An index out of range (raised before anything is decoded).
    """
    text = path_text(path)
    path = local_path(path)
    try:
        reader = reader_for(path)
    except ImageReadError as exc:
        raise _as_text(exc, text) from None
    return _guarded(reader, path, text, None if indices is None else list(indices))


def _guarded(
    reader: Reader, path: Path, text: str, indices: list[int] | None
) -> Iterator[tuple[int, np.ndarray]]:
    try:
        yield from reader.images(path, indices)
    except ImageReadError as exc:
        raise _as_text(exc, text) from exc.__cause__
    except (IndexError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the contract: only ImageReadError escapes
        raise CorruptFileError(text, _one_line(exc)) from exc
