"""DICOM reader (pydicom ≥ 3).

The header is read with ``stop_before_pixels=True`` from an open file, which then sits at the
pixel data element: its tag and length are read directly (a few bytes), so a missing or truncated
pixel data element is noticed without decoding anything. Images are decoded one frame at a time by
handing that same open file to the transfer syntax's pydicom decoder, so a file is parsed once per
call and frames that were not asked for are never decoded. Only the elements the reader uses are
kept while parsing (``specific_tags``), and the plain text/US header values are decoded from their
raw bytes: together about 1.5× faster than a plain ``dcmread(stop_before_pixels=True)`` followed
by attribute access.

Fast path (most archive files): a little-endian file with a preamble (implicit or explicit VR)
is walked straight from one read of its first 16 KB (struct over bytes, ~4–5× faster than the
pydicom parse above, see ``_walk_plain``), and native single-sample MONOCHROME frames of 8/16/32
bits are read with one ``readinto`` each instead of going through pydicom's decoder. Both give
exactly what the general path gives (``tests/test_build_fastpath.py``); anything unusual (big
endian, deflate, a modality LUT, functional groups, a zero-length number, tags out of order) takes
the general path.

Each frame is converted to a ``float32`` 2D array in modality units:

1. the modality LUT is applied — Rescale Slope/Intercept (per frame from the functional groups of
   enhanced multi-frame files, else shared, else top level) or a Modality LUT Sequence;
2. MONOCHROME1 is inverted within the modality range, so bright = dense for every file;
3. colour becomes grey: the Y channel for YBR_*, ITU-R BT.601 luminance for RGB and
   PALETTE COLOR (after the palette is applied).

Example:
    >>> reader = DicomReader()
    >>> reader.header(path).num_images                                    # doctest: +SKIP
    1
    >>> index, image = next(reader.images(path))                          # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, ClassVar, cast

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, as_pixel_options, get_decoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.base import FileHeader

try:  # private, but what pydicom.pixels itself uses; without it every read goes through dcmread
    from pydicom.filereader import _read_file_meta_info
except ImportError:  # pragma: no cover - a future pydicom
    _read_file_meta_info = None

__all__ = ["DicomReader", "LUMA_WEIGHTS", "sniff_dicom"]

#: ITU-R BT.601 luma weights (R, G, B), the same as Pillow's ``convert("L")`` and DICOM YBR_FULL.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_GZIP_MAGIC = b"\x1f\x8b"
_PIXEL_TAGS = {
    (0x7FE0, 0x0010): "PixelData",
    (0x7FE0, 0x0008): "FloatPixelData",
    (0x7FE0, 0x0009): "DoubleFloatPixelData",
}
_UNDEFINED_LENGTH = 0xFFFFFFFF
# explicit-VR codes whose element header has 2 reserved bytes and a 4-byte length
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_ALL_VRS = _LONG_VRS | {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FD",
    b"FL",
    b"IS",
    b"LO",
    b"LT",
    b"PN",
    b"SH",
    b"SL",
    b"SS",
    b"ST",
    b"TM",
    b"UI",
    b"UL",
    b"US",
}
_NO_META_SYNTAX = {  # (implicit VR, little endian) -> transfer syntax, for files without meta
    (True, True): UID("1.2.840.10008.1.2"),
    (False, True): UID("1.2.840.10008.1.2.1"),
    (False, False): UID("1.2.840.10008.1.2.2"),
}
# Only these elements are kept when parsing (others are skipped, not converted): ~25 % faster
_HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "Manufacturer",
    "SeriesDescription",
    "BodyPartExamined",
    "ImageType",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
)
HEADER_TAGS: list[int] = [0x00080005] + [  # Specific Character Set first, as dcmread does
    tag_for_keyword(k)  # type: ignore[misc]
    for k in _HEADER_KEYWORDS
]
# Image Pixel module elements of VR US (binary unsigned short); all the other header elements
# are text (CS, LO, SH, UI, IS, DS)
_US_KEYWORDS = frozenset(
    {
        "SamplesPerPixel",
        "PlanarConfiguration",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    }
)
_TAG_KEYWORDS = dict(zip(HEADER_TAGS[1:], _HEADER_KEYWORDS, strict=True))
#: for decoding: the header's elements plus what pixel processing reads (modality LUT, palette,
#: functional groups for per-frame rescale, extended offset table). Kept short on purpose:
#: pydicom normalises the whole list on every read.
_PIXEL_KEYWORDS = (
    "RescaleType",
    "ModalityLUTSequence",
    "PaletteColorLookupTableUID",
    *(
        f"{colour}PaletteColorLookupTable{part}"
        for colour in ("Red", "Green", "Blue", "Alpha")
        for part in ("Descriptor", "Data")
    ),
    *(f"Segmented{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue", "Alpha")),
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
PIXEL_TAGS: list[int] = sorted(
    set(HEADER_TAGS) | {tag_for_keyword(k) for k in _PIXEL_KEYWORDS}  # type: ignore[misc]
)


def sniff_dicom(head: bytes) -> bool:
    """True when ``head`` (the first bytes, decompressed if gzipped) looks like DICOM.

    Accepts the DICOM file format ("DICM" at offset 128) and bare datasets without preamble or
    file meta, recognised by walking the first few data elements: even group numbers in
    ascending order and, for explicit VR, valid VR codes.

    Args:
        head: The first bytes of the file (at least 132 for the preamble test).

    Returns:
        Whether the bytes look like a DICOM file or a bare DICOM dataset.
    """
    if head[128:132] == b"DICM":
        return True
    return _looks_like_bare_dataset(head)


def _looks_like_bare_dataset(head: bytes) -> bool:
    for little in (True, False):
        for explicit in (True, False):
            if not little and not explicit:
                continue
            if _walk_elements(head, little=little, explicit=explicit) >= 2:
                return True
    return False


def _walk_elements(head: bytes, *, little: bool, explicit: bool, limit: int = 4) -> int:
    """Count plausible leading data elements (stop at ``limit`` or the end of ``head``)."""
    order = "<" if little else ">"
    pos, count, last = 0, 0, -1
    while count < limit and pos + 8 <= len(head):
        group, elem = struct.unpack_from(f"{order}HH", head, pos)
        tag = (group << 16) | elem
        if group % 2 or not 0x0002 <= group <= 0x7FE0 or tag <= last:
            return 0 if count == 0 else count
        if count == 0 and group not in (0x0002, 0x0008):
            return 0
        if explicit:
            vr = head[pos + 4 : pos + 6]
            if vr not in _ALL_VRS:
                return 0 if count == 0 else count
            if vr in _LONG_VRS:
                if pos + 12 > len(head):
                    return count + 1
                (length,) = struct.unpack_from(f"{order}I", head, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(f"{order}H", head, pos + 6)
                pos += 8
        else:
            (length,) = struct.unpack_from(f"{order}I", head, pos + 4)
            pos += 8
            if length != _UNDEFINED_LENGTH and length > 0x10000:
                return 0 if count == 0 else count
        count += 1
        last = tag
        if length == _UNDEFINED_LENGTH:
            return count  # a sequence: can't skip it cheaply, and that's evidence enough
        pos += length
    return count


def _at_pixel_data(tag: Any, vr: str | None, length: int) -> bool:
    return int(tag) in (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _read_fast(fp: BinaryIO, tags: list[int]) -> Dataset | None:
    """Parse a standard DICOM file (preamble, file meta, common transfer syntax) up to its pixel
    data without ``dcmread``'s FileDataset overhead (~1/3 of the time for a typical header).

    Returns None, with ``fp`` rewound, for anything else (no preamble, no transfer syntax in the
    file meta, deflate, unknown syntax): the caller then uses ``dcmread``.
    """
    if _read_file_meta_info is None:
        return None
    fp.seek(128)
    if fp.read(4) != b"DICM":
        fp.seek(0)
        return None
    file_meta = _read_file_meta_info(fp)
    ts = file_meta.get("TransferSyntaxUID")
    try:
        uid = UID(str(ts)) if ts else None
        usable = (
            uid is not None and uid.is_transfer_syntax and uid != DeflatedExplicitVRLittleEndian
        )
        implicit, little = (uid.is_implicit_VR, uid.is_little_endian) if usable else (None, None)
    except ValueError:  # a private transfer syntax pydicom knows nothing about
        usable = False
    if not usable:
        fp.seek(0)
        return None
    ds = read_dataset(fp, implicit, little, stop_when=_at_pixel_data, specific_tags=tags)
    ds.file_meta = file_meta
    return ds


def _open(path: Path) -> tuple[BinaryIO, bool]:
    """Open ``path`` for reading, transparently un-gzipping ``.dcm.gz``-style files."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    try:
        magic = raw.read(2)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if magic == _GZIP_MAGIC:
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")), True
    return raw, False


def _close(fp: IO[bytes]) -> None:
    inner = getattr(fp, "fileobj", None)
    fp.close()
    if inner is not None:
        inner.close()


def _text(v: dict[str, Any], keyword: str) -> str | None:
    value = v.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _values(v: dict[str, Any], keyword: str) -> list[str]:
    value = v.get(keyword)
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [v.strip().upper() for v in str(value).split("\\")]
    return [str(v).strip().upper() for v in value]


def _header_values(ds: Dataset) -> dict[str, Any]:
    """The header elements' values, decoded straight from the raw bytes where that is safe.

    pydicom's general element conversion costs ~10 µs an element; the header needs ~20 plain
    text or unsigned-short values, which are decoded here directly (text as Latin-1, stripped;
    multi-valued text as a list). Anything unusual falls back to pydicom's conversion.
    """
    little = ds.original_encoding[1] is not False
    values: dict[str, Any] = {}
    for tag, keyword in _TAG_KEYWORDS.items():
        raw = ds.get_item(tag)
        if raw is None:
            continue
        value = getattr(raw, "value", None)
        if not isinstance(value, bytes):  # already converted (or odd): use pydicom's value
            values[keyword] = ds[tag].value
            continue
        values[keyword] = _raw_value(keyword, value, little)
    return values


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    return _NO_META_SYNTAX.get((bool(implicit), bool(little)))


class _PixelElement:
    """Where the pixel data element starts, as read from the bytes after the header."""

    def __init__(self, keyword: str, vr: str | None, length: int, value_offset: int) -> None:
        self.keyword = keyword
        self.vr = vr
        self.length = length
        self.value_offset = value_offset

    @property
    def encapsulated(self) -> bool:
        return self.length == _UNDEFINED_LENGTH


def _read_pixel_element(fp: IO[bytes], ts: UID) -> _PixelElement | None:
    """Read the pixel data element's tag and length at the current position (None if absent)."""
    start = fp.tell()
    data = fp.read(12)
    if len(data) < 8:
        return None
    order = "<" if ts.is_little_endian else ">"
    group, elem = struct.unpack_from(f"{order}HH", data)
    keyword = _PIXEL_TAGS.get((group, elem))
    if keyword is None:
        return None
    # some writers put an implicit-VR pixel element in an explicit-VR dataset: no VR letters
    if ts.is_implicit_VR or not data[4:6].isalpha():
        (length,) = struct.unpack_from(f"{order}I", data, 4)
        return _PixelElement(keyword, None, length, start + 8)
    if len(data) < 12:
        raise ValueError("file ends inside the pixel data element header")
    vr = data[4:6].decode("ascii", "replace")
    (length,) = struct.unpack_from(f"{order}I", data, 8)
    return _PixelElement(keyword, vr, length, start + 12)


def _expected_pixel_bytes(v: dict[str, Any], frames: int) -> int | None:
    try:
        rows, cols = int(v["Rows"]), int(v["Columns"])
        bits = int(v["BitsAllocated"])
        samples = int(v.get("SamplesPerPixel") or 1)
    except (KeyError, TypeError, ValueError):
        return None
    photometric = str(v.get("PhotometricInterpretation") or "").strip()
    if photometric == "YBR_FULL_422":  # native 4:2:2 stores two samples per pixel
        samples = 2
    total_bits = rows * cols * samples * frames * bits
    return (total_bits + 7) // 8


def _frame_count(v: dict[str, Any], path: Path) -> int:
    value = v.get("NumberOfFrames")
    if value is None or str(value).strip() == "":
        return 1
    try:
        frames = int(str(value).strip())
    except ValueError:
        raise CorruptFileError(path, f"invalid NumberOfFrames {str(value)!r}") from None
    return max(frames, 1)


def _codec_hint(ts: UID) -> str:
    if ts in (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    ):
        return (
            "install python-gdcm (a hypermodal dependency); 12-bit JPEG and some JPEG-LS "
            "files need the opt-in GPL extra: pip install 'hypermodal[gpl]' "
            "(pylibjpeg-libjpeg)"
        )
    if ts.startswith("1.2.840.10008.1.2.4.20") or ts.startswith("1.2.840.10008.1.2.4.9"):
        return "install pylibjpeg and pylibjpeg-openjpeg (hypermodal dependencies)"
    if ts == "1.2.840.10008.1.2.5":
        return "install pylibjpeg-rle (a hypermodal dependency)"
    return "no codec for it is known to hypermodal"


def _check_codec(path: Path, ts: UID, v: dict[str, Any]) -> None:
    """Raise :class:`UnsupportedFileError` when no installed codec can decode ``ts``."""
    if not ts.is_compressed:
        return
    name = f"{ts.name} ({ts})" if ts.name != str(ts) else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedFileError(
            path, f"transfer syntax {name} is not supported (video or unknown compression)"
        ) from None
    if not decoder.is_available:
        raise UnsupportedFileError(
            path, f"no codec installed for transfer syntax {name}: {_codec_hint(ts)}"
        )
    # GDCM and Pillow cannot do 12-bit JPEG Extended; only the GPL libjpeg plugin can
    if ts == "1.2.840.10008.1.2.4.51" and "pylibjpeg" not in decoder.available_plugins:
        bits = v.get("BitsStored") or v.get("BitsAllocated") or 8
        if int(bits) > 8:
            raise UnsupportedFileError(
                path,
                f"transfer syntax {name} with {int(bits)}-bit samples needs the opt-in GPL "
                "codec: pip install 'hypermodal[gpl]' (pylibjpeg-libjpeg)",
            )


# -- the plain-file fast path -------------------------------------------------------------------
# Most archive files are little-endian DICOM files with a preamble and native (uncompressed) or
# encapsulated pixel data. For them the data elements up to the pixel data are walked here over
# one in-memory read of the file's head (struct.unpack_from on a buffer, ~5× cheaper per element
# than pydicom's file-object parser), keeping the raw bytes of the wanted elements only. Anything
# unexpected (unknown VR, tags out of order, zero-length numbers, big endian, deflate, a wanted
# sequence, …) returns None and the file goes through pydicom exactly as before.
_PLAIN_SYNTAXES = {
    "1.2.840.10008.1.2": True,  # implicit VR little endian
    "1.2.840.10008.1.2.1": False,  # explicit VR little endian
}
_HEAD_READ = 16384
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_IMPLICIT = struct.Struct("<HHI")
_TEXT_VRS = frozenset(
    {
        b"AE",
        b"AS",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"ST",
        b"TM",
        b"UC",
        b"UI",
        b"UR",
        b"UT",
    }
)
_HEADER_TAG_SET = frozenset(HEADER_TAGS)
_UNUSED_BY_FAST_PATH = frozenset({0x00281054})  # Rescale Type


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
        if length != _UNDEFINED_LENGTH:
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
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise _NeedMore
                (length,) = _U32.unpack_from(buf, pos + 8)
                pos += 12
            elif vr in _ALL_VRS:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                pos += 8
            else:
                raise ValueError("unknown VR")
            if length == _UNDEFINED_LENGTH:
                if vr != b"SQ":
                    raise ValueError("undefined length outside a sequence")
                pos = _skip_sequence(buf, pos, explicit, depth + 1)
                continue
        else:
            (length,) = _U32.unpack_from(buf, pos + 4)
            pos += 8
            if length == _UNDEFINED_LENGTH:
                pos = _skip_sequence(buf, pos, explicit, depth + 1)
                continue
        pos += length


def _walk_plain(
    buf: bytes, tags: frozenset[int]
) -> tuple[dict[int, bytes], UID, _PixelElement] | None:
    """Walk a plain little-endian DICOM file's head (see above); None: use pydicom."""
    n = len(buf)
    if n < 144 or buf[128:132] != b"DICM":
        return None
    pos, ts = 132, None
    while True:  # file meta: always explicit VR little endian
        if pos + 8 > n:
            raise _NeedMore
        group, elem, vr, short = _EXPLICIT_SHORT.unpack_from(buf, pos)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            if pos + 12 > n:
                raise _NeedMore
            (length,) = _U32.unpack_from(buf, pos + 8)
            start = pos + 12
        elif vr in _ALL_VRS:
            length, start = short, pos + 8
        else:
            return None
        if length == _UNDEFINED_LENGTH:
            return None
        if elem == 0x0010:
            if start + length > n:
                raise _NeedMore
            ts = buf[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    implicit = _PLAIN_SYNTAXES.get(ts or "")
    if implicit is None:
        return None
    # Locals and one loop per VR style: this loop runs once per data element (~250 in a CT).
    raw: dict[int, bytes] = {}
    last = -1
    header_tags, undefined = _HEADER_TAG_SET, _UNDEFINED_LENGTH
    if not implicit:
        unpack_short, unpack_u32 = _EXPLICIT_SHORT.unpack_from, _U32.unpack_from
        long_vrs, all_vrs, text_vrs = _LONG_VRS, _ALL_VRS, _TEXT_VRS
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
                    return raw, UID(ts), _PixelElement("PixelData", vr.decode(), length, pos + 12)
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
    unpack_implicit = _IMPLICIT.unpack_from
    while True:
        if pos + 8 > n:
            raise _NeedMore
        group, elem, length = unpack_implicit(buf, pos)
        tag = (group << 16) | elem
        if tag <= last or tag >= 0x7FE00008:
            if tag == 0x7FE00010 and tag > last and length != undefined:
                return raw, UID(ts), _PixelElement("PixelData", None, length, pos + 8)
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


def _parse_plain(
    fp: IO[bytes], tags: list[int]
) -> tuple[dict[str, Any], UID, _PixelElement] | None:
    """Header values, transfer syntax and pixel element of a plain file (None: use pydicom)."""
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
            fp.seek(0)
            continue
        if found is None:
            return None
        raw, ts, pixel = found
        values: dict[str, Any] = {}
        for tag, keyword in _TAG_KEYWORDS.items():
            value = raw.get(tag)
            if value is not None:
                values[keyword] = _raw_value(keyword, value, True)
        fp.seek(pixel.value_offset)
        return values, ts, pixel


def _raw_value(keyword: str, value: bytes, little: bool) -> Any:
    """A header element's value from its raw bytes (US as int, text as str or list of str)."""
    if keyword in _US_KEYWORDS:
        if len(value) < 2:
            return None
        return int.from_bytes(value[:2], "little" if little else "big")
    text = value.decode("latin-1").strip(" \x00")
    return [part.strip() for part in text.split("\\")] if "\\" in text else text


class _Opened:
    """A parsed header with the file still open at the start of the pixel data value."""

    def __init__(self, path: Path, tags: list[int]) -> None:
        self.path = path
        self.tags = tags
        try:
            self.fp, self.gzipped = _open(path)
        except OSError as exc:
            raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        path, fp = self.path, self.fp
        try:
            head = fp.read(1024)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CorruptFileError(path, f"unreadable gzip stream ({exc})") from None
        if not head:
            raise UnsupportedFileError(path, "empty file")
        if not sniff_dicom(head):
            raise UnsupportedFileError(path, "not a DICOM file")
        self.fast = False
        self.v: dict[str, Any]
        if not self.gzipped:
            fp.seek(0)
            try:
                found = _parse_plain(fp, self.tags)
            except (OSError, ValueError, struct.error):
                found = None
            if found is not None:  # the common case: every check below still runs
                self.fast = True
                self.v, self.ts, self.pixel = found
                self.ds = Dataset()
                self.deflated = False
                self._check()
                return
        fp.seek(0)
        try:
            ds = _read_fast(fp, self.tags)
            if ds is None:  # not a plain DICOM file: let dcmread sort it out
                ds = pydicom.dcmread(
                    fp, stop_before_pixels=True, force=True, specific_tags=self.tags
                )
        except InvalidDicomError as exc:
            raise UnsupportedFileError(path, f"not a DICOM file ({exc})") from None
        except (EOFError, OSError, struct.error, gzip.BadGzipFile) as exc:
            raise CorruptFileError(path, f"truncated or malformed header ({exc})") from None
        self.ds = ds
        self.v = _header_values(ds)
        ts = _transfer_syntax(ds)
        if ts is None:
            raise CorruptFileError(path, "cannot determine the transfer syntax")
        self.ts = ts
        self.frames = 1
        if ts == DeflatedExplicitVRLittleEndian:
            # the dataset is a deflate stream: position tells nothing; read the rest of it
            self.pixel = None
            self.deflated = True
        else:
            self.deflated = False
            try:
                self.pixel = _read_pixel_element(fp, ts)
            except (ValueError, struct.error) as exc:
                raise CorruptFileError(path, f"truncated file ({exc})") from None
        self._check()

    def _check(self) -> None:
        path, v = self.path, self.v
        self.frames = 1
        if self.pixel is None and not self.deflated:
            ds = self.ds
            meta = getattr(ds, "file_meta", None)
            sop = v.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
            sop_name = UID(str(sop)).name if sop else ""
            if "Rows" in v or "Image Storage" in sop_name:
                raise CorruptFileError(path, "truncated file: image attributes but no pixel data")
            if not sop:
                raise CorruptFileError(path, "truncated or incomplete dataset (no SOP Class UID)")
            if str(sop).startswith("1.2.840.10008.") and sop_name == str(sop):
                # a standard-root UID that pydicom doesn't know: most likely cut off mid-value
                raise CorruptFileError(path, f"truncated file: incomplete SOP Class UID {sop}")
            raise UnsupportedFileError(path, "no pixel data")
        if v.get("Rows") is None or v.get("Columns") is None:
            raise CorruptFileError(path, "pixel data without Rows/Columns")
        self.frames = _frame_count(v, path)
        if self.pixel is not None and not self.pixel.encapsulated:
            self._check_native_length()
        _check_codec(path, self.ts, v)

    def _check_native_length(self) -> None:
        """Catch truncated native pixel data from the element length and the file size."""
        pixel = self.pixel
        assert pixel is not None
        if pixel.keyword != "PixelData":
            return
        expected = _expected_pixel_bytes(self.v, self.frames)
        if expected is not None and pixel.length < expected:
            raise CorruptFileError(
                self.path,
                f"pixel data holds {pixel.length} bytes, {expected} needed for "
                f"{self.frames} frame(s)",
            )
        if not self.gzipped:
            size = os.fstat(self.fp.fileno()).st_size
            end = pixel.value_offset + pixel.length
            if size < end:
                raise CorruptFileError(
                    self.path, f"truncated file: pixel data ends at byte {end}, file has {size}"
                )

    def close(self) -> None:
        fp = getattr(self, "fp", None)
        if fp is not None:
            _close(fp)
            self.fp = None  # type: ignore[assignment]


def _number(value: Any, default: float) -> float:
    """A DS value (text, possibly blank or multi-valued) as float."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or str(value).strip() == "":
        return default
    return float(value)


def _functional_rescale(ds: Dataset, keyword: str, index: int) -> tuple[float, float] | None:
    groups = ds.get(keyword)
    if not groups:
        return None
    if keyword == "PerFrameFunctionalGroupsSequence":
        if index >= len(groups):
            return None
        item = groups[index]
    else:
        item = groups[0]
    transform = item.get("PixelValueTransformationSequence")
    if not transform:
        return None
    t = transform[0]
    if "RescaleSlope" not in t and "RescaleIntercept" not in t:
        return None
    return _number(t.get("RescaleSlope"), 1.0), _number(t.get("RescaleIntercept"), 0.0)


def _stored_range(v: dict[str, Any]) -> tuple[float, float]:
    bits = int(v.get("BitsStored") or v.get("BitsAllocated") or 16)
    if int(v.get("PixelRepresentation") or 0):
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


_PIXEL_OPTION_NAMES = {
    "SamplesPerPixel": "samples_per_pixel",
    "PhotometricInterpretation": "photometric_interpretation",
    "PlanarConfiguration": "planar_configuration",
    "Rows": "rows",
    "Columns": "columns",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
}


def _pixel_options(v: dict[str, Any], ds: Dataset, frames: int) -> dict[str, Any]:
    """Decoder options from the already-decoded header values (as ``as_pixel_options`` does)."""
    opts = {name: v[k] for k, name in _PIXEL_OPTION_NAMES.items() if v.get(k) is not None}
    if not all(isinstance(x, int | str) for x in opts.values()):
        opts = as_pixel_options(ds)  # unusual values: let pydicom interpret them
    opts["number_of_frames"] = frames
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        opts["extended_offsets"] = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return opts


class _Transform:
    """Per-file pixel processing: modality LUT, MONOCHROME1 inversion, colour to grey."""

    def __init__(
        self, ds: Dataset, v: dict[str, Any], path: Path, *, float_pixels: bool = False
    ) -> None:
        self.ds = ds
        self.v = v
        self.path = path
        self.float_pixels = float_pixels
        self.photometric = str(v.get("PhotometricInterpretation") or "MONOCHROME2").upper()
        self.has_lut = "ModalityLUTSequence" in ds and bool(ds.ModalityLUTSequence)
        self.per_frame = "PerFrameFunctionalGroupsSequence" in ds
        self.shared = (
            _functional_rescale(ds, "SharedFunctionalGroupsSequence", 0)
            if "SharedFunctionalGroupsSequence" in ds
            else None
        )
        top = None
        if v.get("RescaleSlope") is not None or v.get("RescaleIntercept") is not None:
            top = _number(v.get("RescaleSlope"), 1.0), _number(v.get("RescaleIntercept"), 0.0)
        self.fixed = self.shared or top

    def rescale(self, index: int) -> tuple[float, float] | None:
        """(slope, intercept) for frame ``index``: per-frame groups, shared groups, top level."""
        if self.per_frame:
            found = _functional_rescale(self.ds, "PerFrameFunctionalGroupsSequence", index)
            if found is not None:
                return found
        return self.fixed

    def __call__(self, arr: np.ndarray, index: int, photometric: str) -> np.ndarray:
        photometric = photometric.strip().upper()
        if arr.ndim == 3:
            return self._grey(arr, photometric)
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(arr, self.ds)
            return self._grey(rgb, "RGB")
        if self.has_lut:
            out = np.asarray(apply_modality_lut(arr, self.ds), dtype=np.float32)
        else:
            out = arr.astype(np.float32)  # a new, writeable array: the steps below are in place
            rescale = self.rescale(index)
            if rescale is not None:
                if rescale[0] != 1.0:
                    out *= np.float32(rescale[0])
                if rescale[1] != 0.0:
                    out += np.float32(rescale[1])
        if photometric == "MONOCHROME1":
            out = self._invert(out, index)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _invert(self, out: np.ndarray, index: int) -> np.ndarray:
        """Mirror values within the modality range (so bright = dense, units kept)."""
        if self.float_pixels:  # Float/Double Float Pixel Data: no stored range to mirror in
            lo, hi = float(out.min()), float(out.max())
        else:
            smin, smax = _stored_range(self.v)
            if self.has_lut:
                ends = np.asarray(
                    apply_modality_lut(np.array([smin, smax], dtype=np.int64), self.ds),
                    dtype=np.float64,
                )
            else:
                rescale = self.rescale(index) or (1.0, 0.0)
                ends = np.array([smin, smax]) * rescale[0] + rescale[1]
            lo, hi = float(ends.min()), float(ends.max())
        np.subtract(np.float32(lo + hi), out, out=out)
        return out

    @staticmethod
    def _grey(arr: np.ndarray, photometric: str) -> np.ndarray:
        if photometric.startswith("YBR"):
            return np.ascontiguousarray(arr[..., 0], dtype=np.float32)
        if arr.shape[-1] < 3:
            return np.ascontiguousarray(arr[..., 0], dtype=np.float32)
        return np.ascontiguousarray(arr[..., :3].astype(np.float32, copy=False) @ LUMA_WEIGHTS)


def _native_layout(opened: _Opened) -> tuple[np.dtype, int, int, int] | None:
    """``(dtype, rows, columns, unused high bits)`` when ``opened``'s frames can be read straight
    from the file: a plain little-endian file (the fast header walk), native ``PixelData``, one
    sample per pixel, MONOCHROME1/2, 8/16/32 bits allocated, no modality LUT or functional
    groups. Everything else goes through pydicom's decoder."""
    if not opened.fast or opened.pixel is None or opened.pixel.encapsulated:
        return None
    v = opened.v
    try:
        samples, rows, cols = v["SamplesPerPixel"], v["Rows"], v["Columns"]
        allocated, stored = v["BitsAllocated"], v["BitsStored"]
        signed, photometric = v["PixelRepresentation"], v["PhotometricInterpretation"]
    except KeyError:
        return None
    numbers = (samples, rows, cols, allocated, stored, signed)
    if not all(type(x) is int for x in numbers) or not isinstance(photometric, str):
        return None
    if (
        samples != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
        or allocated not in (8, 16, 32)
        or not 1 <= stored <= allocated
        or signed not in (0, 1)
        or not 0 < rows <= 0xFFFF
        or not 0 < cols <= 0xFFFF
    ):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    return dtype, rows, cols, allocated - stored


def _read_native(
    opened: _Opened, wanted: list[int], layout: tuple[np.dtype, int, int, int]
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames read with one ``readinto`` each: the same arrays pydicom's native decoder gives
    (little-endian integers, unused high bits cleared or sign-extended), then the transform."""
    dtype, rows, cols, unused = layout
    pixel = opened.pixel
    assert pixel is not None
    transform = _Transform(opened.ds, opened.v, opened.path)
    photometric = transform.photometric
    frame_bytes = rows * cols * dtype.itemsize
    fp = opened.fp
    for index in wanted:
        fp.seek(pixel.value_offset + index * frame_bytes)
        arr = np.empty((rows, cols), dtype=dtype)
        if fp.readinto(memoryview(arr).cast("B")) != frame_bytes:  # type: ignore[attr-defined]
            raise CorruptFileError(opened.path, f"pixel data ended before frame {index}")
        if unused:
            np.left_shift(arr, unused, out=arr)
            np.right_shift(arr, unused, out=arr)
        try:
            image = transform(arr, index, photometric)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise CorruptFileError(
                opened.path, f"invalid pixel attributes ({type(exc).__name__}: {exc})"
            ) from None
        yield index, image


def _decode_error(path: Path, ts: UID, exc: Exception) -> CorruptFileError | UnsupportedFileError:
    message = " ".join(str(exc).split())
    if "does not support" in message or "no pixel data plugins" in message.lower():
        return UnsupportedFileError(
            path,
            f"the installed codecs cannot decode transfer syntax {ts.name} ({ts}): "
            f"{message[:200]}; {_codec_hint(ts)}",
        )
    return CorruptFileError(path, f"cannot decode pixel data ({ts.name}): {message[:300]}")


#: SeriesDescription words that name a scout when ImageType does not say LOCALIZER
#: (Siemens "AAHead_Scout", GE "3-pl loc", Philips "Survey", CT "Topogram"/"Scanogram").
_SCOUT_WORDS = re.compile(r"(scout|locali[sz]er|survey|topogram|scanogram|\bloc\b|3-?pl)", re.I)


def is_localizer(image_type: Iterable[str], series_description: str | None) -> bool:
    """True for localizer/scout images, which look like radiographs but are CT/MR."""
    if "LOCALIZER" in {str(v).upper() for v in image_type}:
        return True
    return bool(series_description and _SCOUT_WORDS.search(series_description))


class DicomReader:
    """Reader for DICOM files (also bare datasets without preamble and gzip-wrapped files).

    Attributes:
        name: ``"dicom"``.
        extensions: Suffixes tried when content sniffing is inconclusive.
    """

    name: ClassVar[str] = "dicom"
    extensions: ClassVar[tuple[str, ...]] = (".dcm", ".dicom", ".dic", ".ima", ".dcm.gz")

    def sniff(self, path: Path, head: bytes) -> bool:
        """True for "DICM" at offset 128 or a plausible bare dataset (see :func:`sniff_dicom`)."""
        return sniff_dicom(head)

    def header(self, path: Path) -> FileHeader:
        """Read DICOM metadata without pixel data.

        Args:
            path: The file (may be gzip-compressed).

        Returns:
            The file's header; ``num_images`` is NumberOfFrames (1 when absent).

        Raises:
            UnsupportedFileError: Not DICOM, no pixel data (SR, RTSTRUCT, …), or no installed
                codec for its transfer syntax (the reason names the syntax and what to install).
            CorruptFileError: Truncated or malformed file.
        """
        path = Path(path)
        opened = _Opened(path, HEADER_TAGS)
        try:
            return self._header_from(opened)
        finally:
            opened.close()

    def _header_from(self, opened: _Opened) -> FileHeader:
        ds = opened.v
        image_type = _values(ds, "ImageType")
        extra: dict[str, Any] = {
            "sop_class": _text(ds, "SOPClassUID"),
            "series_description": _text(ds, "SeriesDescription"),
            "manufacturer": _text(ds, "Manufacturer"),
            "image_type": "\\".join(image_type) or None,
            "bits_stored": int(ds["BitsStored"]) if ds.get("BitsStored") is not None else None,
            "samples_per_pixel": int(ds.get("SamplesPerPixel") or 1),
            "gzip": opened.gzipped,
        }
        try:
            rows, columns = int(ds["Rows"]), int(ds["Columns"])
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(opened.path, f"invalid Rows/Columns ({exc})") from None
        return FileHeader(
            path=str(opened.path),
            format="dicom",
            num_images=opened.frames,
            rows=rows,
            columns=columns,
            modality=_text(ds, "Modality"),
            patient=_text(ds, "PatientID"),
            study=_text(ds, "StudyInstanceUID"),
            series=_text(ds, "SeriesInstanceUID"),
            instance=_text(ds, "SOPInstanceUID"),
            body_part=_text(ds, "BodyPartExamined"),
            localizer=is_localizer(image_type, extra["series_description"]),
            photometric=_text(ds, "PhotometricInterpretation"),
            transfer_syntax=str(opened.ts),
            extra=extra,
        )

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode frames one at a time, in the order of ``indices`` (all frames when None).

        Args:
            path: The file (may be gzip-compressed).
            indices: Frame numbers (0-based) to decode; others are skipped without decoding.

        Yields:
            ``(index, image)``: ``image`` is 2D ``float32`` in modality units (rescale applied,
            MONOCHROME1 inverted, colour converted to grey).

        Raises:
            IndexError: An index outside ``[0, NumberOfFrames)`` (raised before decoding).
            UnsupportedFileError: No pixel data, or no codec for the transfer syntax.
            CorruptFileError: Truncated or undecodable pixel data.
        """
        path = Path(path)
        opened = _Opened(path, PIXEL_TAGS)
        try:
            frames = opened.frames
            wanted = list(range(frames)) if indices is None else [int(i) for i in indices]
            for i in wanted:
                if not 0 <= i < frames:
                    raise IndexError(f"{path}: frame {i} out of range for {frames} frame(s)")
            if not wanted:
                return
            yield from self._decode(opened, wanted)
        finally:
            opened.close()

    def _decode(self, opened: _Opened, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        path, ts = opened.path, opened.ts
        native = _native_layout(opened)
        if native is not None:
            yield from _read_native(opened, wanted, native)
            return
        try:
            src, opts, transform = self._prepare(opened)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise CorruptFileError(
                path, f"invalid pixel attributes ({type(exc).__name__}: {exc})"
            ) from None
        iterator = get_decoder(ts).iter_array(src, indices=wanted, raw=True, validate=True, **opts)
        for index in wanted:
            try:
                arr, meta = next(iterator)
            except StopIteration:
                raise CorruptFileError(path, f"pixel data ended before frame {index}") from None
            except (UnsupportedFileError, CorruptFileError):
                raise
            except (ValueError, RuntimeError, EOFError, OSError, struct.error) as exc:
                raise _decode_error(path, ts, exc) from None
            photometric = str(meta.get("photometric_interpretation", transform.photometric))
            try:
                image = transform(arr, index, photometric)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                raise CorruptFileError(
                    path, f"invalid pixel attributes ({type(exc).__name__}: {exc})"
                ) from None
            yield index, image

    @staticmethod
    def _prepare(opened: _Opened) -> tuple[Any, dict[str, Any], _Transform]:
        """Decoder source and options, and the per-file transform."""
        path = opened.path
        if opened.deflated:
            # a deflated dataset can't be positioned into: read it whole (rare syntax)
            opened.fp.seek(0)
            ds = pydicom.dcmread(opened.fp, force=True)
            if "PixelData" not in ds and "FloatPixelData" not in ds:
                raise UnsupportedFileError(path, "no pixel data")
            return ds, {}, _Transform(ds, opened.v, path)
        pixel = opened.pixel
        assert pixel is not None
        opened.fp.seek(pixel.value_offset)
        opts = _pixel_options(opened.v, opened.ds, opened.frames)
        opts["transfer_syntax_uid"] = opened.ts
        opts["pixel_keyword"] = pixel.keyword
        if pixel.vr is not None:
            opts["pixel_vr"] = pixel.vr
        float_pixels = pixel.keyword != "PixelData"
        return opened.fp, opts, _Transform(opened.ds, opened.v, path, float_pixels=float_pixels)
