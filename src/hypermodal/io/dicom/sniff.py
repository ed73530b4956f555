"""Recognise DICOM from a file's first bytes: the file format, or a bare dataset."""

from __future__ import annotations

import struct

from hypermodal.io.dicom.tags import ALL_VRS, LONG_VRS, UNDEFINED_LENGTH


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
            if vr not in ALL_VRS:
                return 0 if count == 0 else count
            if vr in LONG_VRS:
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
            if length != UNDEFINED_LENGTH and length > 0x10000:
                return 0 if count == 0 else count
        count += 1
        last = tag
        if length == UNDEFINED_LENGTH:
            return count  # a sequence: can't skip it cheaply, and that's evidence enough
        pos += length
    return count
