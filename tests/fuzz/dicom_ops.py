"""Structure-aware DICOM mutations: header fields rewritten through pydicom, the Transfer Syntax
claim swapped under an unchanged body, and the codestream's own header (JPEG SOF, JPEG-LS SOF55,
JPEG 2000 SIZ, RLE segment table) rewritten inside the encapsulated fragments.

Each operation takes the file's bytes and a seeded generator and returns the new bytes and a
short description, or None when it does not apply to this file (the caller picks another).
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from collections.abc import Callable, Iterator

import numpy as np

#: Transfer Syntax UIDs a mutant may claim (the last one is no syntax at all)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.3.4.5.6.7",
)
PHOTOMETRIC = (
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "PALETTE COLOR",
    "",
    "BANANA",
)
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


@contextlib.contextmanager
def _lenient() -> Iterator[None]:
    """pydicom reads and writes whatever it is given, quietly."""
    from pydicom import config

    settings = config.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = config.IGNORE
    settings.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def _around(real: int) -> list[int]:
    """Values worth trying for a size whose true value is ``real`` (US range)."""
    values = [0, 1, 2, real // 2, real - 1, real + 1, real * 2, real * 8, 4096, 65535]
    return sorted({v for v in values if 0 <= v <= 65535})


def set_fields(data: bytes, values: dict[str, object]) -> bytes:
    """``data`` with the given header attributes set (``None`` deletes one), written in the
    file's own encoding."""
    import pydicom

    with _lenient():
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        for keyword, value in values.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        buf = io.BytesIO()
        ds.save_as(buf)
    return buf.getvalue()


def _field(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    import pydicom

    with _lenient():
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    rows, cols = int(ds.get("Rows", 64) or 64), int(ds.get("Columns", 64) or 64)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    choices: dict[str, list[object]] = {
        "Rows": _around(rows),
        "Columns": _around(cols),
        "NumberOfFrames": [
            str(v) for v in (0, 1, 2, frames + 1, frames * 2, 1000, 1_000_000, 99_999_999_999, -1)
        ],
        "BitsAllocated": [0, 1, 8, 12, 16, 24, 32, 64, 255],
        "BitsStored": [0, 1, 7, 12, 16, 31, 64],
        "HighBit": [0, 7, 15, 31, 63],
        "PixelRepresentation": [0, 1, 2, 255],
        "SamplesPerPixel": [0, 1, 2, 3, 4, 255],
        "PhotometricInterpretation": list(PHOTOMETRIC),
        "PlanarConfiguration": [0, 1, 2],
        "PixelData": [None],
        "RescaleSlope": ["0", "1e308", "-1", "nan"],
    }
    names = list(choices)
    picked = rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False)
    values = {}
    for k in picked:
        options = choices[names[k]]
        values[names[k]] = options[int(rng.integers(len(options)))]
    if "Rows" in values and "Columns" not in values and rng.random() < 0.5:
        values["Columns"] = values["Rows"]  # both sides wrong, as a re-labelled crop would be
    try:
        out = set_fields(data, values)
    except Exception:  # noqa: BLE001 - pydicom cannot write this combination: try another
        return None
    desc = ",".join(f"{k}={'<deleted>' if v is None else v}" for k, v in values.items())
    return out, desc


def meta_end(data: bytes) -> int | None:
    """Offset where the file meta group ends (None without a readable ``DICM`` preamble)."""
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        return None
    (length,) = struct.unpack("<I", data[140:144])
    return 144 + length


def set_transfer_syntax(data: bytes, uid: str) -> bytes | None:
    """``data`` claiming Transfer Syntax ``uid``; the data set after the meta group is unchanged."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    end = meta_end(data)
    if end is None:
        return None
    with _lenient():
        meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True).file_meta
        meta.TransferSyntaxUID = uid
        buf = DicomBytesIO()
        write_file_meta_info(buf, meta, enforce_standard=True)
    return data[:132] + buf.getvalue() + data[end:]


def _transfer_syntax(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    uid = TRANSFER_SYNTAXES[int(rng.integers(len(TRANSFER_SYNTAXES)))]
    out = set_transfer_syntax(data, uid)
    return None if out is None else (out, f"TransferSyntaxUID={uid}")


def fragments(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each encapsulated pixel data fragment, the offset table left out;
    empty for native pixel data."""
    at = data.rfind(PIXEL_DATA_TAG)
    if at < 0 or data[at + 8 : at + 12] != b"\xff\xff\xff\xff":
        return []
    pos, found = at + 12, []
    while pos + 8 <= len(data) and data[pos : pos + 4] == b"\xfe\xff\x00\xe0":
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        found.append((pos + 8, length))
        pos += 8 + length
    return found[1:]


def codestream_dims(data: bytes, start: int, end: int) -> tuple[int, int, int] | None:
    """(offset of the height field, its width in bytes, offset of the width field) of the first
    JPEG SOF, JPEG-LS SOF55 or JPEG 2000 SIZ marker in ``data[start:end]``."""
    seg = data[start:end]
    siz = seg.find(b"\xff\x4f\xff\x51")
    if siz >= 0:  # J2K SIZ: Lsiz Rsiz Xsiz(4) Ysiz(4)
        return start + siz + 12, 4, start + siz + 8
    if seg[:3] == b"\xff\xd8\xff":
        for marker in (b"\xff\xf7", b"\xff\xc0", b"\xff\xc1", b"\xff\xc2", b"\xff\xc3"):
            sof = seg.find(marker)
            if sof >= 0:  # Lf(2) P(1) Y(2) X(2)
                return start + sof + 5, 2, start + sof + 7
    return None


def patch_codestream(data: bytes, height: int | None, width: int | None, all_frames: bool):
    """``data`` whose codestream header (every fragment's, or the first one's) claims
    ``height``×``width``; None when the pixel data holds no codestream this knows."""
    out = bytearray(data)
    patched = False
    for offset, length in fragments(data)[: None if all_frames else 1]:
        dims = codestream_dims(data, offset, offset + length)
        if dims is None:
            continue
        at_h, size, at_w = dims
        fmt = ">I" if size == 4 else ">H"
        if height is not None:
            out[at_h : at_h + size] = struct.pack(fmt, height)
        if width is not None:
            out[at_w : at_w + size] = struct.pack(fmt, width)
        patched = True
    return bytes(out) if patched else None


def _codestream(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    frags = fragments(data)
    dims = codestream_dims(data, frags[0][0], frags[0][0] + frags[0][1]) if frags else None
    if dims is None:
        return None
    big = 16_777_215 if dims[1] == 4 else 65535
    values = (0, 1, 7, 32, 2048, big)
    h = values[int(rng.integers(len(values)))]
    w = values[int(rng.integers(len(values)))] if rng.random() < 0.4 else None
    every = bool(rng.random() < 0.5)
    out = patch_codestream(data, h, w, every)
    return None if out is None else (out, f"codestream height={h} width={w} all={every}")


def _rle_header(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    frags = fragments(data)
    if not frags or frags[0][1] < 64:
        return None
    offset = frags[0][0]
    (segments,) = struct.unpack("<I", data[offset : offset + 4])
    if segments > 15:
        return None  # not an RLE segment table
    out = bytearray(data)
    if rng.random() < 0.5:
        value = int(rng.choice([0, 1, 2, 3, 15, 16, 255, 2**32 - 1]))
        out[offset : offset + 4] = struct.pack("<I", value)
        return bytes(out), f"RLE segments={value}"
    k = int(rng.integers(1, 16))
    value = int(rng.choice([0, 1, 64, frags[0][1] - 1, frags[0][1] + 1000, 2**31]))
    out[offset + 4 * k : offset + 4 * k + 4] = struct.pack("<I", value)
    return bytes(out), f"RLE offset[{k}]={value}"


#: the DICOM operations with their weights
DICOM_OPS: tuple[tuple[str, float, Callable], ...] = (
    ("field", 0.55, _field),
    ("transfer-syntax", 0.15, _transfer_syntax),
    ("codestream", 0.2, _codestream),
    ("rle", 0.1, _rle_header),
)


def mutate_dicom_structure(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    """One structure-aware mutation of a DICOM file (None if none of the picks applied)."""
    weights = np.array([w for _, w, _ in DICOM_OPS])
    for _ in range(4):
        name, _, op = DICOM_OPS[int(rng.choice(len(DICOM_OPS), p=weights / weights.sum()))]
        done = op(data, rng)
        if done is not None:
            return done[0], f"{name}: {done[1]}"
    return None
