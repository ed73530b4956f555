"""Open a DICOM file and parse its header, leaving the file at the pixel data value.

The header is read with ``stop_before_pixels`` semantics from an open file, which then sits at
the pixel data element: its tag and length are read directly (a few bytes), so a missing or
truncated pixel data element is noticed without decoding anything. Only the elements the
reader uses are kept while parsing (``specific_tags``). A plain little-endian file with a
preamble is first tried with the direct header walk of
:mod:`hypermodal.io.dicom.fast_header`; everything else goes through pydicom.

The parse is bounded: zero bytes (or command elements) where data elements should be are
refused at once, and a header that runs past
:attr:`~hypermodal.io.limits.Limits.max_header_bytes` or 100,000 elements without reaching its
pixel data is given up (200 MB of zeros after a preamble took pydicom ~70 s). Before anything is
decoded the image attributes are checked: Rows × Columns × frames × samples × bits against the
native pixel data length, and NumberOfFrames and each codestream's own size against the
encapsulated fragments (:mod:`~hypermodal.io.dicom.sizes`).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import IO, Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.dicom.codec import check_codec
from hypermodal.io.dicom.fast_header import dataset_start, parse_plain
from hypermodal.io.dicom.sizes import check_frames, check_image_attributes, iter_fragments
from hypermodal.io.dicom.sniff import sniff_dicom
from hypermodal.io.dicom.tags import PIXEL_ELEMENTS, PixelElement, header_values
from hypermodal.io.limits import current_limits
from hypermodal.io.streams import close_stream, open_content

try:  # private, but what pydicom.pixels itself uses; without it every read goes through dcmread
    from pydicom.filereader import _read_file_meta_info
except ImportError:  # pragma: no cover - a future pydicom
    _read_file_meta_info = None

_NO_META_SYNTAX = {  # (implicit VR, little endian) -> transfer syntax, for files without meta
    (True, True): UID("1.2.840.10008.1.2"),
    (False, True): UID("1.2.840.10008.1.2.1"),
    (False, False): UID("1.2.840.10008.1.2.2"),
}


#: top-level data elements a header may have before its pixel data (real ones: a few hundred)
_MAX_ELEMENTS = 100_000
_PIXEL_TAG_SET = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))


class _HeaderProblem(Exception):
    """The header cannot be a header: it runs past the limits, or holds zero bytes."""


class _StopAtPixels:
    """pydicom's ``stop_when``: stop at the pixel data element; give up on a header that holds
    an element of group 0000 (zero bytes: 200 MB of them parse as 26 million empty elements;
    command elements never belong in a stored file) or runs past
    :attr:`~hypermodal.io.limits.Limits.max_header_bytes` or :data:`_MAX_ELEMENTS` top-level
    elements."""

    def __init__(self, fp: IO[bytes]) -> None:
        self.fp = fp
        self.limit = current_limits().max_header_bytes
        self.count = 0

    def __call__(self, tag: Any, vr: str | None, length: int) -> bool:
        tag = int(tag)
        if tag in _PIXEL_TAG_SET:
            return True
        self.count += 1
        if tag >> 16 == 0:
            raise _HeaderProblem("zero bytes (group 0000) where a data element should be")
        if self.count > _MAX_ELEMENTS:
            raise _HeaderProblem(f"more than {_MAX_ELEMENTS} data elements before the pixel data")
        if self.count % 256 == 0 and self.fp.tell() > self.limit:
            raise _HeaderProblem(f"no pixel data within the first {self.limit} bytes")
        return False


def _dataset_start_problem(head: bytes) -> str | None:
    """Why the bytes where a file's data elements start cannot start a dataset (None: fine)."""
    pos = dataset_start(head) if head[128:132] == b"DICM" else 0
    if pos is None:
        return None  # a long or unusual file meta: pydicom reads it
    first = head[pos : pos + 8]
    if len(first) < 8:
        return None
    if first == bytes(8):
        return f"zero bytes where the data elements should start (byte {pos})"
    if first[:2] == b"\x00\x00":
        return f"command elements (group 0000) where the data elements should start (byte {pos})"
    return None


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
    ds = read_dataset(fp, implicit, little, stop_when=_StopAtPixels(fp), specific_tags=tags)
    ds.file_meta = file_meta
    return ds


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    return _NO_META_SYNTAX.get((bool(implicit), bool(little)))


def _read_pixel_element(fp: IO[bytes], ts: UID) -> PixelElement | None:
    """Read the pixel data element's tag and length at the current position (None if absent)."""
    start = fp.tell()
    data = fp.read(12)
    if len(data) < 8:
        return None
    order = "<" if ts.is_little_endian else ">"
    group, elem = struct.unpack_from(f"{order}HH", data)
    keyword = PIXEL_ELEMENTS.get((group, elem))
    if keyword is None:
        return None
    # some writers put an implicit-VR pixel element in an explicit-VR dataset: no VR letters
    if ts.is_implicit_VR or not data[4:6].isalpha():
        (length,) = struct.unpack_from(f"{order}I", data, 4)
        return PixelElement(keyword, None, length, start + 8)
    if len(data) < 12:
        raise ValueError("file ends inside the pixel data element header")
    vr = data[4:6].decode("ascii", "replace")
    (length,) = struct.unpack_from(f"{order}I", data, 8)
    return PixelElement(keyword, vr, length, start + 12)


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


class OpenedFile:
    """A parsed header with the file still open at the start of the pixel data value.

    Args:
        path: The file (may be gzip-compressed).
        tags: The tags to keep (``HEADER_TAGS`` or ``PIXEL_TAGS``).
        fast_path: Try the direct header walk first (plain, uncompressed files only).
        every_frame: Check the codestream header of every encapsulated frame against the
            header (to decode them); else of the first only (for the header, which the decode
            checks again).

    Attributes:
        fp: The open file, positioned at the pixel data value (not for deflated files).
        gzipped: Whether the file is gzip-compressed.
        fast: Whether the header came from the direct walk (``ds`` is then empty).
        v: Header values by keyword.
        ds: The parsed dataset (pixel-processing elements included with ``PIXEL_TAGS``).
        ts: The transfer syntax.
        pixel: The pixel data element (None for a deflated dataset).
        deflated: Whether the dataset is a deflate stream.
        frames: Number of frames (1 when NumberOfFrames is absent).

    Raises:
        UnsupportedFileError: Not DICOM, no pixel data, or no codec for the transfer syntax.
        CorruptFileError: Truncated or malformed file.
    """

    def __init__(
        self, path: Path, tags: list[int], *, fast_path: bool = True, every_frame: bool = True
    ) -> None:
        self.path = path
        self.tags = tags
        self.every_frame = every_frame
        try:
            self.fp, self.gzipped = open_content(path)
        except OSError as exc:
            raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None
        try:
            self._parse(fast_path)
        except BaseException:
            self.close()
            raise

    def _parse(self, fast_path: bool) -> None:
        path, fp = self.path, self.fp
        try:
            head = fp.read(1024)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CorruptFileError(path, f"unreadable gzip stream ({exc})") from None
        if not head:
            raise UnsupportedFileError(path, "empty file")
        if not sniff_dicom(head):
            raise UnsupportedFileError(path, "not a DICOM file")
        problem = _dataset_start_problem(head)
        if problem is not None:
            raise CorruptFileError(path, problem)
        self.fast = False
        self.v: dict[str, Any]
        if fast_path and not self.gzipped:
            fp.seek(0)
            try:
                found = parse_plain(fp, self.tags)
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
            if ds is None:  # not a plain DICOM file: let pydicom sort it out
                ds = read_partial(
                    fp, stop_when=_StopAtPixels(fp), force=True, specific_tags=self.tags
                )
        except InvalidDicomError as exc:
            raise UnsupportedFileError(path, f"not a DICOM file ({exc})") from None
        except _HeaderProblem as exc:
            raise CorruptFileError(path, f"malformed header: {exc}") from None
        except (EOFError, OSError, struct.error, gzip.BadGzipFile) as exc:
            raise CorruptFileError(path, f"truncated or malformed header ({exc})") from None
        self.ds = ds
        self.v = header_values(ds)
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
        check_image_attributes(path, v)
        self.frames = _frame_count(v, path)
        if self.pixel is not None and not self.pixel.encapsulated:
            self._check_native_length()
        check_codec(path, self.ts, v)
        fragments = None
        if self.pixel is not None and self.pixel.encapsulated:
            size = None if self.gzipped else os.fstat(self.fp.fileno()).st_size
            start = self.pixel.value_offset
            fragments = iter_fragments(self.fp, path, start, size, self.every_frame)
        check_frames(path, v, self.frames, fragments)

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
        """Close the file (safe to call twice)."""
        fp = getattr(self, "fp", None)
        if fp is not None:
            close_stream(fp)
            self.fp = None  # type: ignore[assignment]
