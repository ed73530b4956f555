"""What a DICOM file says about its size, checked before anything is allocated or decoded.

A native file's Rows × Columns × frames × samples × bits is checked against its pixel data
length (:mod:`~hypermodal.io.dicom.header`). For encapsulated pixel data the walk here reads
only item headers and the first bytes of each fragment: NumberOfFrames must not exceed the
number of fragments (every frame has at least one), and every JPEG, JPEG-LS or JPEG 2000
codestream that starts a fragment must describe the image the header describes (its own
height, width and components: JPEG SOFn, JPEG-LS SOF55, JPEG 2000 SIZ) — a codestream claiming
16,777,216 rows in a file whose Rows says 512 would make its decoder allocate gigabytes. One
decoded frame must also fit :attr:`~hypermodal.io.limits.Limits.max_image_bytes` and the file's
frames :attr:`~hypermodal.io.limits.Limits.max_images`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.limits import current_limits

__all__ = [
    "Codestream",
    "check_frames",
    "check_image_attributes",
    "codestream_shape",
    "frame_bytes",
    "iter_fragments",
]

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32
_SEQUENCE_END = 0xE0DDFFFE  # (FFFE,E0DD)
_HEAD = struct.Struct("<II")
#: bytes read from the start of each fragment to find its codestream header
_PEEK = 1024
#: JPEG start-of-frame markers (SOF0–SOF15 without DHT, JPG and DAC) and JPEG-LS SOF55
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class Codestream:
    """The image a compressed codestream says it holds.

    Attributes:
        kind: ``"JPEG"``, ``"JPEG-LS"`` or ``"JPEG 2000"``.
        rows: Its height (0: not given in the frame header, as JPEG allows with DNL).
        columns: Its width.
        components: Its number of components.
    """

    kind: str
    rows: int
    columns: int
    components: int


def codestream_shape(head: bytes) -> Codestream | None:
    """The image size a codestream's own header gives, from its first bytes.

    Args:
        head: The first bytes of a fragment (a few hundred are enough for any real header).

    Returns:
        The codestream's size, or None when ``head`` does not start a JPEG, JPEG-LS or JPEG
        2000 codestream whose frame header lies within ``head``.
    """
    if head.startswith(b"\xff\x4f\xff\x51"):
        return _j2k_siz(head, 4)
    if head.startswith(_JP2_SIGNATURE):  # a JP2 file: the codestream is in its jp2c box
        at = head.find(b"\xff\x4f\xff\x51")
        return _j2k_siz(head, at + 4) if at >= 0 else None
    if head.startswith(b"\xff\xd8"):
        return _jpeg_sof(head)
    return None


def _j2k_siz(head: bytes, pos: int) -> Codestream | None:
    # SIZ: Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2)
    if len(head) < pos + 38:
        return None
    xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", head, pos + 4)
    (csiz,) = struct.unpack_from(">H", head, pos + 36)
    return Codestream("JPEG 2000", max(ysiz - yo, 0), max(xsiz - xo, 0), csiz)


def _jpeg_sof(head: bytes) -> Codestream | None:
    pos, n = 2, len(head)
    while pos + 4 <= n:
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # TEM, RSTn: no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            return None
        (length,) = struct.unpack_from(">H", head, pos + 2)
        if marker in _SOF:
            if pos + 10 > n:
                return None
            rows, columns = struct.unpack_from(">HH", head, pos + 5)
            kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
            return Codestream(kind, rows, columns, head[pos + 9])
        pos += 2 + length
    return None


def frame_bytes(v: dict[str, Any]) -> int | None:
    """Bytes of one decoded frame at the file's own sample size (None: attributes missing)."""
    try:
        rows, columns = int(v["Rows"]), int(v["Columns"])
        bits = int(v.get("BitsAllocated") or 8)
        samples = int(v.get("SamplesPerPixel") or 1)
    except (KeyError, TypeError, ValueError):
        return None
    return rows * columns * samples * max((bits + 7) // 8, 1)


def iter_fragments(
    fp: IO[bytes], path: Path, start: int, size: int | None, every: bool = True
) -> Iterator[tuple[int, bytes]]:
    """The fragments of encapsulated pixel data: each one's value offset and first bytes.

    Reads item headers and up to 1 KB of each fragment (of the first only, unless ``every``),
    one fragment at a time; the basic offset table (the first item) is not a fragment. A
    missing sequence delimiter at the end of the file, or a cut last fragment, ends the walk
    without an error (decoders tolerate them; they say whether the frame decodes).

    Args:
        fp: The file (or decompressed stream); left at an unspecified position.
        path: The file (for the error).
        start: The offset of the pixel data value (its first item).
        size: The file's size, or None when unknown (a gzip stream).
        every: Read the first bytes of every fragment (else ``b""`` after the first).

    Yields:
        ``(offset, first bytes)`` per fragment, in order.

    Raises:
        CorruptFileError: Something other than an item where an item must be.
    """
    fp.seek(start)
    pos, first, count = start, True, 0
    while True:
        raw = fp.read(8)
        if len(raw) < 8:
            return
        tag, length = _HEAD.unpack(raw)
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise CorruptFileError(
                path, f"encapsulated pixel data: no item at byte {pos} (tag {tag:08x})"
            )
        value = pos + 8
        if first:
            first = False
        else:
            count += 1
            yield value, fp.read(min(length, _PEEK)) if every or count == 1 else b""
        pos = value + length
        if size is not None and pos > size:
            return
        fp.seek(pos)


def check_image_attributes(path: Path, v: dict[str, Any]) -> None:
    """Rows, Columns, SamplesPerPixel and BitsAllocated are positive integers (when given)."""
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated"):
        value = v.get(keyword)
        if value is None and keyword in ("SamplesPerPixel", "BitsAllocated"):
            continue
        try:
            number = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CorruptFileError(path, f"invalid {keyword} {value!r}") from None
        if number < 1:
            raise CorruptFileError(path, f"{keyword} is {number}: no image")


def check_frames(
    path: Path, v: dict[str, Any], frames: int, fragments: Iterable[tuple[int, bytes]] | None
) -> None:
    """Refuse a file whose frames cannot be what its header says, before decoding any.

    Args:
        path: The file (for the error).
        v: Its header values.
        frames: NumberOfFrames (1 when absent).
        fragments: Its encapsulated fragments (:func:`iter_fragments`), None for native data.

    Raises:
        CorruptFileError: Frames over the limit or more frames than fragments, or a
            codestream whose size is not the header's.
        UnsupportedFileError: One frame over the limit of
            :func:`~hypermodal.io.limits.current_limits`.
    """
    limits = current_limits()
    if frames > limits.max_images:
        raise CorruptFileError(
            path, f"NumberOfFrames {frames} is over the limit of {limits.max_images} per file"
        )
    one = frame_bytes(v)
    if one is not None and one > limits.max_image_bytes:
        raise UnsupportedFileError(
            path,
            f"one frame of {v['Rows']}×{v['Columns']}×{v.get('SamplesPerPixel') or 1} samples "
            f"at {v.get('BitsAllocated')} bits is {one} bytes decoded, over the limit of "
            f"{limits.max_image_bytes}",
        )
    if fragments is None:
        return
    rows, columns = int(v["Rows"]), int(v["Columns"])
    samples = int(v.get("SamplesPerPixel") or 1)
    count = 0
    for offset, head in fragments:
        count += 1
        # a single frame's codestream starts its first fragment; with several frames, the
        # fragments that start a codestream are checked (continuations hold codestream data)
        if count == 1 or frames > 1:
            _check_codestream(path, codestream_shape(head), offset, rows, columns, samples)
    if frames > count:
        raise CorruptFileError(
            path,
            f"NumberOfFrames says {frames}, the encapsulated pixel data hold {count} "
            "fragment(s) (at least one per frame)",
        )


def _check_codestream(
    path: Path, shape: Codestream | None, offset: int, rows: int, columns: int, samples: int
) -> None:
    if shape is None:
        return
    wrong_rows = shape.rows != rows and not (shape.kind == "JPEG" and shape.rows == 0)
    if wrong_rows or shape.columns != columns:
        raise CorruptFileError(
            path,
            f"{shape.kind} codestream at byte {offset} says {shape.rows}×{shape.columns}, "
            f"header says {rows}×{columns}",
        )
    if shape.components != samples:
        raise CorruptFileError(
            path,
            f"{shape.kind} codestream at byte {offset} has {shape.components} component(s), "
            f"header says SamplesPerPixel {samples}",
        )
