"""The plain-file fast path: a DICOM header walked straight from the file's first bytes.

Most archive files are little-endian DICOM files with a preamble and native (uncompressed) or
encapsulated pixel data. For them the data elements up to the pixel data are walked here over
one in-memory read of the file's head (``struct.unpack_from`` on a buffer, ~5× cheaper per
element than pydicom's file-object parser), keeping the raw bytes of the wanted elements only.
Anything unexpected (unknown VR, tags out of order, zero-length numbers, big endian, deflate, a
wanted sequence, …) gives None and the file goes through pydicom instead. This is an
accelerator only: both ways give the same header, images and errors
(``tests/io/test_dicom_fastpath.py`` compares them).
"""

from __future__ import annotations

import struct
from typing import IO, Any

from pydicom.uid import UID

from hypermodal.io.dicom.tags import (
    ALL_VRS,
    HEADER_TAGS,
    LONG_VRS,
    TAG_KEYWORDS,
    UNDEFINED_LENGTH,
    PixelElement,
    raw_value,
)
from hypermodal.io.limits import current_limits

_PLAIN_SYNTAXES = {
    "1.2.840.10008.1.2": True,  # implicit VR little endian
    "1.2.840.10008.1.2.1": False,  # explicit VR little endian
}
_HEAD_READ = 16384
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_IMPLICIT = struct.Struct("<HHI")
_TEXT_VRS = frozenset(b"AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
_HEADER_TAG_SET = frozenset(HEADER_TAGS)
_UNUSED_BY_FAST_PATH = frozenset({0x00281054})  # Rescale Type

#: what a walk finds: the wanted elements' raw values, and the pixel data element
_Found = tuple[dict[int, bytes], PixelElement]


class _NeedMore(Exception):
    """The walk ran past the bytes read so far."""


def _skip_sequence(buf: bytes, pos: int, explicit: bool, depth: int = 0) -> int:
    """Position after an undefined-length sequence whose first item starts at ``pos``."""
    if depth > 16:
        raise ValueError("sequences nested too deep")
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise _NeedMore
        group, elem = _TAG.unpack_from(buf, pos)
        (length,) = _U32.unpack_from(buf, pos + 4)
        if group != 0xFFFE:
            raise ValueError("not an item")
        if elem == 0xE0DD:  # sequence delimiter
            return pos + 8
        if elem != 0xE000:
            raise ValueError("not an item")
        if length != UNDEFINED_LENGTH:
            pos += 8 + length
            continue
        pos = _skip_item(buf, pos + 8, explicit, depth)


def _skip_item(buf: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Position after an undefined-length item whose first element starts at ``pos``."""
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise _NeedMore
        group, elem = _TAG.unpack_from(buf, pos)
        if group == 0xFFFE:
            if elem != 0xE00D:
                raise ValueError("unexpected delimiter in item")
            return pos + 8
        if explicit:
            vr = buf[pos + 4 : pos + 6]
            if vr in LONG_VRS:
                if pos + 12 > n:
                    raise _NeedMore
                (length,) = _U32.unpack_from(buf, pos + 8)
                pos += 12
            elif vr in ALL_VRS:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                pos += 8
            else:
                raise ValueError("unknown VR")
            if length == UNDEFINED_LENGTH:
                if vr != b"SQ":
                    raise ValueError("undefined length outside a sequence")
                pos = _skip_sequence(buf, pos, explicit, depth + 1)
                continue
        else:
            (length,) = _U32.unpack_from(buf, pos + 4)
            pos += 8
            if length == UNDEFINED_LENGTH:
                pos = _skip_sequence(buf, pos, explicit, depth + 1)
                continue
        pos += length


def _walk_file_meta(buf: bytes) -> tuple[int, str | None] | None:
    """Walk the file meta group (always explicit VR little endian) after "DICM".

    Returns:
        The position of the first dataset element and the transfer syntax (None when not
        written), or None for anything unusual.
    """
    n = len(buf)
    pos, ts = 132, None
    while True:
        if pos + 8 > n:
            raise _NeedMore
        group, elem, vr, short = _EXPLICIT_SHORT.unpack_from(buf, pos)
        if group != 0x0002:
            return pos, ts
        if vr in LONG_VRS:
            if pos + 12 > n:
                raise _NeedMore
            (length,) = _U32.unpack_from(buf, pos + 8)
            start = pos + 12
        elif vr in ALL_VRS:
            length, start = short, pos + 8
        else:
            return None
        if length == UNDEFINED_LENGTH:
            return None
        if elem == 0x0010:
            if start + length > n:
                raise _NeedMore
            ts = buf[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length


def dataset_start(buf: bytes) -> int | None:
    """Offset of the first data element after the preamble and file meta held in ``buf``.

    Returns:
        The offset, or None when the file meta is unusual or runs past ``buf``.
    """
    try:
        meta = _walk_file_meta(buf)
    except (_NeedMore, struct.error):
        return None
    return None if meta is None else meta[0]


def _walk_explicit(buf: bytes, pos: int, tags: frozenset[int]) -> _Found | None:
    """Walk explicit-VR little-endian data elements from ``pos`` to the pixel data."""
    # Locals and one loop per VR style: this loop runs once per data element (~250 in a CT).
    n = len(buf)
    raw: dict[int, bytes] = {}
    last = -1
    header_tags, undefined = _HEADER_TAG_SET, UNDEFINED_LENGTH
    unpack_short, unpack_u32 = _EXPLICIT_SHORT.unpack_from, _U32.unpack_from
    long_vrs, all_vrs, text_vrs = LONG_VRS, ALL_VRS, _TEXT_VRS
    while True:
        if pos + 12 > n:
            raise _NeedMore
        group, elem, vr, length = unpack_short(buf, pos)
        tag = (group << 16) | elem
        if tag <= last or tag >= 0x7FE00008:  # out of order, pixel data, or past it
            if tag == 0x7FE00010 and tag > last and vr in (b"OB", b"OW"):
                (length,) = unpack_u32(buf, pos + 8)
                if length == undefined:
                    return None
                return raw, PixelElement("PixelData", vr.decode(), length, pos + 12)
            return None
        last = tag
        if vr in long_vrs:
            (length,) = unpack_u32(buf, pos + 8)
            start = pos + 12
            if length == undefined:
                if vr != b"SQ" or tag in tags:
                    return None
                pos = _skip_sequence(buf, start, True)
                continue
        elif vr in all_vrs:
            start = pos + 8
        else:
            return None
        pos = start + length
        if tag in tags:
            # a pixel-processing element (LUT, functional groups) or an empty number:
            # pydicom decides what it means
            if tag not in header_tags or (length == 0 and vr not in text_vrs):
                return None
            if pos > n:
                raise _NeedMore
            raw[tag] = buf[start:pos]


def _walk_implicit(buf: bytes, pos: int, tags: frozenset[int]) -> _Found | None:
    """Walk implicit-VR little-endian data elements from ``pos`` to the pixel data."""
    n = len(buf)
    raw: dict[int, bytes] = {}
    last = -1
    header_tags, undefined = _HEADER_TAG_SET, UNDEFINED_LENGTH
    unpack_implicit = _IMPLICIT.unpack_from
    while True:
        if pos + 8 > n:
            raise _NeedMore
        group, elem, length = unpack_implicit(buf, pos)
        tag = (group << 16) | elem
        if tag <= last or tag >= 0x7FE00008:
            if tag == 0x7FE00010 and tag > last and length != undefined:
                return raw, PixelElement("PixelData", None, length, pos + 8)
            return None
        last = tag
        start = pos + 8
        if length == undefined:
            if tag in tags:
                return None
            pos = _skip_sequence(buf, start, False)
            continue
        pos = start + length
        if tag in tags:
            if tag not in header_tags or length == 0:
                return None
            if pos > n:
                raise _NeedMore
            raw[tag] = buf[start:pos]


def _walk_plain(
    buf: bytes, tags: frozenset[int]
) -> tuple[dict[int, bytes], UID, PixelElement] | None:
    """Walk a plain little-endian DICOM file's head; None: use pydicom."""
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    meta = _walk_file_meta(buf)
    if meta is None:
        return None
    pos, ts = meta
    implicit = _PLAIN_SYNTAXES.get(ts or "")
    if implicit is None:
        return None
    found = (_walk_implicit if implicit else _walk_explicit)(buf, pos, tags)
    if found is None:
        return None
    raw, pixel = found
    return raw, UID(ts), pixel


def parse_plain(fp: IO[bytes], tags: list[int]) -> tuple[dict[str, Any], UID, PixelElement] | None:
    """Header values, transfer syntax and pixel element of a plain file (None: use pydicom).

    Args:
        fp: The file, positioned at its start; on success it is left at the pixel data value.
        tags: The tags wanted (:data:`~hypermodal.io.dicom.tags.HEADER_TAGS` or
            :data:`~hypermodal.io.dicom.tags.PIXEL_TAGS`).

    Returns:
        ``(values, transfer syntax, pixel element)``, or None when the file is not plain.

    Raises:
        OSError, ValueError, struct.error: Unreadable or malformed bytes (the caller then
            reads the file with pydicom, which says what is wrong).
    """
    # Rescale Type is read by nothing here (pydicom's modality LUT code only uses the LUT
    # sequence or slope/intercept), so a CT that has it (most do: "HU") stays on the fast path.
    wanted = frozenset(tags) - _UNUSED_BY_FAST_PATH
    size = _HEAD_READ
    while True:
        buf = fp.read(size)
        try:
            found = _walk_plain(buf, wanted)
        except _NeedMore:
            if len(buf) < size:  # the whole file is in buf: it is truncated; pydicom says how
                return None
            size *= 8
            if size > current_limits().max_header_bytes:  # pydicom reads it, with its guard
                return None
            fp.seek(0)
            continue
        if found is None:
            return None
        raw, ts, pixel = found
        values: dict[str, Any] = {}
        for tag, keyword in TAG_KEYWORDS.items():
            value = raw.get(tag)
            if value is not None:
                values[keyword] = raw_value(keyword, value, True)
        fp.seek(pixel.value_offset)
        return values, ts, pixel
