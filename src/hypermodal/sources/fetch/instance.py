"""DICOM instances as servers send them, with or without a file meta header.

A PACS may hold (and send through WADO-RS) instances that are a bare data set: no 128-byte
preamble, no ``DICM``, no group 0002 (Orthanc keeps files as they were uploaded, and a data
set written with ``write_like_original`` has none). pydicom refuses them unless told
``force=True``, and ``force=True`` alone accepts anything. :func:`read_instance` first checks
that the bytes begin like a data set (an even group at or below 0x0010 followed by a VR or a
plausible length), then reads them with ``force=True`` and asks for the UIDs every instance
has. :func:`write_instance` writes the file back with a standard file meta header (its
transfer syntax is the one the data set was read in), so every later reader sees ordinary
Part 10 files.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

from hypermodal.common.errors import FetchError

__all__ = [
    "has_file_meta",
    "looks_like_dataset",
    "read_instance",
    "read_instance_file",
    "write_instance",
]

_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}  # fmt: skip


def has_file_meta(data: bytes) -> bool:
    """Whether ``data`` starts with the 128-byte preamble and ``DICM`` of a Part 10 file."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def looks_like_dataset(data: bytes) -> bool:
    """Whether ``data`` begins like a bare DICOM data set (little endian, explicit or implicit
    VR): the first tag has an even group from 0002 to 0010 and is followed by a VR or by a
    length that fits in the data."""
    if len(data) < 8:
        return False
    group, _ = struct.unpack("<HH", data[:4])
    if group % 2 or not 0x0002 <= group <= 0x0010:
        return False
    if data[4:6] in _VRS:
        return True
    (length,) = struct.unpack("<I", data[4:8])
    return length <= len(data) - 8


def read_instance(data: bytes, name: str, stop_before_pixels: bool = False) -> Any:
    """The data set in ``data`` (a Part 10 file, or a bare data set that passes
    :func:`looks_like_dataset`).

    Raises:
        FetchError: neither a Part 10 file nor a data set, or one without SOPInstanceUID or
            SOPClassUID.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    force = not has_file_meta(data)
    if force and not looks_like_dataset(data):
        raise FetchError(f"{name} does not parse as DICOM (no file meta header, and no data set)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, struct.error) as exc:
        raise FetchError(f"{name} does not parse as DICOM: {exc}") from exc
    missing = [k for k in ("SOPInstanceUID", "SOPClassUID") if not ds.get(k)]
    if missing:
        raise FetchError(f"{name} has no {' or '.join(missing)}")
    return ds


def _transfer_syntax(ds: Any) -> str:
    """The transfer syntax a data set without a file meta header was read in."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    elem = ds.get("PixelData") if "PixelData" in ds else None
    if elem is not None and getattr(elem, "is_undefined_length", False):
        raise FetchError(
            "compressed pixel data without a file meta header: its transfer syntax is unknown"
        )
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def write_instance(data: bytes, dest: Path, name: str) -> Any:
    """Write the instance in ``data`` to ``dest`` (through a temporary name) as a Part 10 file
    and return its data set (read without pixel data): a Part 10 file byte for byte, a bare
    data set with the file meta header it lacked.

    Raises:
        FetchError: as :func:`read_instance`, or a bare data set whose encoding is unknown.
    """
    from pydicom.dataset import FileMetaDataset

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        if has_file_meta(data):
            ds = read_instance(data, name, stop_before_pixels=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
        else:
            ds = read_instance(data, name)
            meta = getattr(ds, "file_meta", None) or FileMetaDataset()
            meta.TransferSyntaxUID = _transfer_syntax(ds)
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta = meta
            ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ds


def read_instance_file(path: Path) -> Any:
    """The header of the instance file ``path`` (no pixel data), with or without a file meta
    header (see :func:`read_instance`).

    Raises:
        FetchError: not DICOM, or no SOPInstanceUID/SOPClassUID.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise FetchError(f"{path.name} cannot be read: {exc}") from exc
    force = not has_file_meta(head)
    if force and not looks_like_dataset(head):
        raise FetchError(
            f"{path.name} does not parse as DICOM (no file meta header, and no data set)"
        )
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, struct.error) as exc:
        raise FetchError(f"{path.name} does not parse as DICOM: {exc}") from exc
    missing = [k for k in ("SOPInstanceUID", "SOPClassUID") if not ds.get(k)]
    if missing:
        raise FetchError(f"{path.name} has no {' or '.join(missing)}")
    return ds
