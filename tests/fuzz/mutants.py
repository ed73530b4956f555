"""A seeded generator of mutants of the real test files (:mod:`tests.fuzz.bases`).

Mutant ``i`` of seed ``s`` depends on ``(s, i)`` alone: the first 500 mutants of a seed are the
same whether 500 or 100,000 are made, so a failure found by the benchmark is reproduced by
making that one mutant again (:func:`make_mutant`). Mutations:

- byte flips (anywhere, or in the first 2 KB where the headers are), zeroed blocks, appended
  junk, truncations;
- structure-aware field mutations: DICOM attributes, Transfer Syntax and codestream headers
  (:mod:`tests.fuzz.dicom_ops`); NIfTI ``dim``, ``datatype``, ``bitpix``, ``vox_offset``,
  ``pixdim``, ``scl_slope`` and ``srow`` (inside the gzip stream of a ``.nii.gz``, which is
  recompressed); PNG IHDR size, depth and colour type (CRC recomputed or not); JPEG SOF size.

Base files are taken in turn (mutant ``i`` mutates base ``i mod len(bases)``) so that every
slice of 24 or more mutants holds each codec.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tests.fuzz.bases import Base, load_bases
from tests.fuzz.dicom_ops import codestream_dims, mutate_dicom_structure

#: the dataset.json of each kind's folder: NIfTI and raster files carry no modality
DATASET_LABELS = {"nifti": "MR", "raster": "XR"}
#: generic operations and the share of structure-aware mutations, with their weights
FAMILIES = (("valid", 0.04), ("flip", 0.3), ("truncate", 0.14), ("zero", 0.05))
FAMILIES += (("append", 0.04), ("structure", 0.43))


@dataclass(frozen=True)
class Mutant:
    """One generated file: where it is (relative to the corpus root) and how it was made."""

    index: int
    rel: str  # may hold surrogate escapes (a name that is not UTF-8)
    base: str
    codec: str
    mutation: str


# ------------------------------------------------------------------------------ generic ops
def flip(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    n = int(rng.choice([1, 2, 4, 8, 16, 64]))
    head = rng.random() < 0.6
    span = min(len(data), 2048) if head else len(data)
    out = bytearray(data)
    for pos in rng.integers(0, max(span, 1), size=n):
        if pos < len(out):
            out[pos] ^= int(rng.integers(1, 256))
    return bytes(out), f"flip {n} bytes in the {'header' if head else 'file'}"


def truncate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    if rng.random() < 0.7:
        keep = int(rng.integers(0, len(data)))
    else:  # a few bytes short, as an interrupted copy leaves a file
        keep = max(0, len(data) - int(rng.integers(1, 65)))
    return data[:keep], f"truncate to {keep} of {len(data)} bytes"


def zero_block(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    size = int(2 ** rng.integers(2, 14))
    at = int(rng.integers(0, max(len(data) - 1, 1)))
    out = bytearray(data)
    out[at : at + size] = bytes(len(out[at : at + size]))
    return bytes(out), f"zero {size} bytes at {at}"


def append(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    extra = rng.integers(0, 256, size=int(rng.integers(1, 8192)), dtype=np.uint8).tobytes()
    return data + extra, f"append {len(extra)} random bytes"


# ------------------------------------------------------------------------------------ NIfTI
#: field -> (offset, struct code, count) in a NIfTI-1 and a NIfTI-2 header
NIFTI1 = {
    "dim": (40, "h", 8),
    "datatype": (70, "h", 1),
    "bitpix": (72, "h", 1),
    "pixdim": (76, "f", 8),
    "vox_offset": (108, "f", 1),
    "scl_slope": (112, "f", 1),
    "srow_x": (280, "f", 4),
}
NIFTI2 = {
    "datatype": (12, "h", 1),
    "bitpix": (14, "h", 1),
    "dim": (16, "q", 8),
    "pixdim": (104, "d", 8),
    "vox_offset": (168, "q", 1),
    "scl_slope": (176, "d", 1),
    "srow_x": (400, "d", 4),
}
DATATYPES = (0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2304, 9999)


def nifti_layout(data: bytes) -> tuple[str, dict[str, tuple[int, str, int]]] | None:
    """(byte order, field table) of an uncompressed NIfTI-1/2 header; None if it is not one."""
    for order in "<>":
        if len(data) >= 4:
            size = struct.unpack(order + "i", data[:4])[0]
            if size == 348 and len(data) >= 348:
                return order, NIFTI1
            if size == 540 and len(data) >= 540:
                return order, NIFTI2
    return None


def nifti_get(data: bytes, name: str, k: int = 0) -> float:
    order, table = nifti_layout(data) or ("<", NIFTI1)
    offset, code, _ = table[name]
    size = struct.calcsize(code)
    return struct.unpack_from(order + code, data, offset + k * size)[0]


def nifti_set(data: bytes, name: str, k: int, value: float) -> bytes:
    """``data`` (an uncompressed NIfTI file) with element ``k`` of header field ``name`` set;
    integers too large for the field wrap as the C field would."""
    order, table = nifti_layout(data) or ("<", NIFTI1)
    offset, code, _ = table[name]
    size = struct.calcsize(code)
    if code in "hq":
        bits = 8 * size
        value = (int(value) + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)
    out = bytearray(data)
    struct.pack_into(order + code, out, offset + k * size, value)
    return bytes(out)


def _nifti_field(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    layout = nifti_layout(data)
    if layout is None:
        return None
    _, table = layout
    big = table is NIFTI2
    name = ("dim", "dim", "datatype", "bitpix", "vox_offset", "pixdim", "scl_slope", "srow_x")[
        int(rng.integers(8))
    ]
    k = int(rng.integers(table[name][2]))
    nan, inf = math.nan, math.inf
    if name == "dim" and k == 0:
        options: list[float] = [-1, 0, 1, 2, 5, 7, 8, 9, 100]
    elif name == "dim":
        real = int(nifti_get(data, "dim", k))
        huge = [2**31, 2**40, 2**62] if big else [32767, -32768]
        options = [0, 1, -1, real * 2, real * 1000, *huge]
    elif name == "datatype":
        options = list(DATATYPES)
    elif name == "bitpix":
        options = [0, 1, 8, 13, 64, 255]
    elif name == "vox_offset":
        options = [0, 1, 100, len(data) - 1, len(data), len(data) * 4, 2**31, -352]
        options += [] if big else [nan, inf]
    else:
        options = [0, -1, nan, inf, 1e30]
    value = options[int(rng.integers(len(options)))]
    return nifti_set(data, name, k, value), f"field: {name}[{k}]={value}"


def mutate_nifti(base: Base, rng: np.random.Generator, family: str) -> tuple[bytes, str] | None:
    """A NIfTI mutation; a ``.nii.gz`` is mutated inside its stream (and recompressed) unless a
    byte-level mutation of the compressed file itself was drawn."""
    gz = base.suffix.endswith(".gz")
    inner = gzip.decompress(base.data) if gz else base.data
    if family == "structure":
        done = _nifti_field(inner, rng)
    elif gz and rng.random() < 0.5:
        return GENERIC[family](base.data, rng)
    else:
        done = GENERIC[family](inner, rng)
    if done is None:
        return None
    return (gzip.compress(done[0], mtime=0) if gz else done[0]), done[1] + (" (in gzip)" * gz)


# ----------------------------------------------------------------------------------- raster
def png_set_ihdr(data: bytes, width: int, height: int, fix_crc: bool = True) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` (its CRC recomputed unless told not to)."""
    out = bytearray(data)
    struct.pack_into(">II", out, 16, width, height)
    if fix_crc:
        struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def _raster_field(data: bytes, rng: np.random.Generator) -> tuple[bytes, str] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        fix = bool(rng.random() < 0.8)
        if rng.random() < 0.7:
            sizes = [0, 1, 2, 65535, 100_000, 2**31 - 1]
            w, h = (int(rng.choice(sizes)) for _ in range(2))
            desc = f"field: IHDR {w}x{h} crc={'fixed' if fix else 'old'}"
            return png_set_ihdr(data, w, h, fix), desc
        out = bytearray(data)
        field = int(rng.integers(24, 29))  # depth, colour type, compression, filter, interlace
        out[field] = int(rng.choice([0, 1, 2, 3, 4, 6, 7, 16, 255]))
        if fix:
            struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
        return bytes(out), f"field: IHDR byte {field}={out[field]}"
    dims = codestream_dims(data, 0, len(data))
    if dims is None:
        return None
    at_h, _, at_w = dims
    h, w = (int(rng.choice([0, 1, 7, 4096, 65535])) for _ in range(2))
    out = bytearray(data)
    struct.pack_into(">H", out, at_h, h)
    struct.pack_into(">H", out, at_w, w)
    return bytes(out), f"field: SOF {w}x{h}"


# ------------------------------------------------------------------------------------ mutate
GENERIC = {"flip": flip, "truncate": truncate, "zero": zero_block, "append": append}


def mutate(base: Base, rng: np.random.Generator) -> tuple[bytes, str]:
    """One mutant of ``base`` and how it was made."""
    names = [n for n, _ in FAMILIES]
    weights = np.array([w for _, w in FAMILIES])
    family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    if family == "valid":
        return base.data, "none (a valid copy)"
    done: tuple[bytes, str] | None
    if base.kind == "nifti":
        done = mutate_nifti(base, rng, family)
    elif family != "structure":
        done = GENERIC[family](base.data, rng)
    elif base.kind == "dicom":
        done = mutate_dicom_structure(base.data, rng)
    else:
        done = _raster_field(base.data, rng)
    return done if done is not None else flip(base.data, rng)


def make_mutant(seed: int, index: int) -> tuple[Base, bytes, str]:
    """Mutant ``index`` of ``seed``: its base, bytes and description (deterministic)."""
    bases = load_bases()
    base = bases[index % len(bases)]
    data, how = mutate(base, np.random.default_rng([seed, index]))
    return base, data, how


def write_dataset_files(root: Path) -> None:
    """The ``dataset.json`` of each kind's folder (NIfTI and raster files need a label)."""
    for kind, label in DATASET_LABELS.items():
        (root / kind).mkdir(parents=True, exist_ok=True)
        info = {"name": kind, "label": label}
        (root / kind / "dataset.json").write_text(json.dumps(info))
    (root / "dicom").mkdir(parents=True, exist_ok=True)


def write_mutants(root: Path, seed: int, start: int, stop: int) -> list[Mutant]:
    """Write mutants ``start``..``stop - 1`` of ``seed`` under ``root/<kind>/``."""
    write_dataset_files(root)
    made: list[Mutant] = []
    for i in range(start, stop):
        base, data, how = make_mutant(seed, i)
        rel = f"{base.kind}/m{i:06d}-{base.name}-{how.split()[0].rstrip(':')}{base.suffix}"
        (root / rel).write_bytes(data)
        made.append(Mutant(i, rel, base.name, base.codec, how))
    return made


def write_manifest(path: Path, mutants: list[Mutant]) -> None:
    """How each file was made, one JSON line per mutant (outside the corpus folder)."""
    with open(path, "w", encoding="ascii") as fh:
        for m in mutants:
            fh.write(json.dumps(asdict(m)) + "\n")
