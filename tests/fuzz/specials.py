"""Files that are not plain images, and the mutants the issue describes one by one.

:func:`write_specials` lays out, beside the mutants: an empty file and one cut to 0 bytes by
``truncate``, a FIFO, a socket, a link to a device, a dangling link, a link to itself, a folder
link that loops, a folder link to files outside the corpus (followed once), names starting with
``.``, names that are not UTF-8 (a file and a folder), a folder named like a file, 200 MB of
zeros after a DICOM preamble, and sparse giants made with ``truncate`` (a DICOM file followed by
gigabytes of zeros, a huge but consistent NIfTI volume).

:func:`write_issue_mutants` writes each file the issue was found with: JPEG-LS with Rows/Columns
above the real image, 16-bit RLE with Rows/Columns below it, a JPEG 2000 codestream claiming
16.7 M rows under DICOM Rows 512, NumberOfFrames 99,999,999,999 and 1,000,000, NIfTI-2 with dim
2^31 and 2^40, a valid ``.nii.gz`` whose superior axis is the first (gigabytes when inflated), a
PNG whose IHDR claims 100,000 × 100,000, pydicom's own broken files, and the mutants the
benchmark found to fail (:data:`FOUND`).

``scale`` is ``"ci"`` (sizes a CI run can afford) or ``"full"`` (the sizes of the issue).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.fuzz.bases import load_bases
from tests.fuzz.dicom_ops import patch_codestream, set_fields
from tests.fuzz.mutants import make_mutant, nifti_set, png_set_ihdr
from tests.helpers import pydicom_file

GIB = 1 << 30
#: scale -> sizes of the giants
SIZES = {
    "ci": {"axis_first": (160, 2000, 2000), "sparse_dcm": 2 * GIB, "sparse_nii": (1024, 1024, 256)},
    "full": {
        "axis_first": (400, 2000, 2000),
        "sparse_dcm": 64 * GIB,
        "sparse_nii": (2048, 2048, 2048),
    },
}
NOT_UTF8 = os.fsdecode(b"name-\xff\xfe")
#: mutants the benchmark found to fail, made again from (seed, index) so that CI keeps them
FOUND = (
    (0, 5128, "NIfTI-1 4D with dim[3] = 0: cataloged with no image, neither a row nor an error"),
    (0, 7312, "NIfTI-1 4D, 2 bytes flipped in the header: cataloged with no image"),
)


@dataclass(frozen=True)
class Special:
    rel: str  # relative to the corpus root (may hold surrogate escapes)
    what: str


def _base(name: str) -> bytes:
    return next(b.data for b in load_bases() if b.name == name)


def _write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _socket_file(path: Path) -> bool:
    """Leave a Unix socket file at ``path`` (bound in a short folder when the path is too long
    for a socket address, then renamed); False where the system does not allow it."""
    with contextlib.suppress(OSError):
        if len(os.fsencode(path)) < 100:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(os.fsencode(path))
            return True
        short = Path(tempfile.mkdtemp(prefix="fz", dir=path.parent))
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.fsencode(short / "s"))
        os.rename(short / "s", path)
        short.rmdir()
        return True
    return False


def write_axis_first_gz(path: Path, shape: tuple[int, int, int]) -> None:
    """A valid float32 ``.nii.gz`` of ``shape`` whose first voxel axis is superior, written as
    concatenated gzip members so that gigabytes of voxels take a second and a few MB."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    hdr.set_qform(affine, 1)
    hdr.set_sform(affine, 1)
    hdr["vox_offset"] = 352
    head = hdr.binaryblock + b"\x00" * 4
    ramp = np.linspace(0, 1000, shape[0] * shape[1], dtype=np.float32).tobytes()
    total = int(np.prod(shape)) * 4 - len(ramp)
    chunk = 64 << 20
    zeros = gzip.compress(bytes(chunk), compresslevel=9, mtime=0)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(head + ramp, mtime=0))  # some structure in the first voxels
        for _ in range(total // chunk):
            fh.write(zeros)
        fh.write(gzip.compress(bytes(total % chunk), mtime=0))


def write_sparse_nifti(path: Path, shape: tuple[int, int, int]) -> None:
    """A consistent uint8 NIfTI-1 volume of ``shape`` whose voxels are a hole (``truncate``)."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    hdr.set_sform(np.eye(4), 1)
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\x00" * 4)
    os.truncate(path, 352 + int(np.prod(shape)))


def write_specials(root: Path, outside: Path, scale: str = "ci") -> list[Special]:
    """Lay out the special files under ``root`` (and two real files in ``outside``, reached
    through a folder link)."""
    sizes = SIZES[scale]
    ct, mr, emri = _base("ct"), _base("mr-implicit"), _base("emri")
    made: list[Special] = []

    def add(rel: str, what: str) -> Path:
        made.append(Special(rel, what))
        return root / rel

    sp = root / "special"
    sp.mkdir(parents=True, exist_ok=True)
    _write(root, "special/empty.dcm", b"")
    add("special/empty.dcm", "empty file")
    os.truncate(_write(root, "nifti/truncated-to-zero.nii", _base("anat")), 0)
    add("nifti/truncated-to-zero.nii", "0 bytes by truncate")
    os.mkfifo(add("special/pipe.dcm", "FIFO"))
    if _socket_file(sp / "socket.dcm"):
        add("special/socket.dcm", "Unix socket")
    os.symlink("/dev/zero", add("special/device.dcm", "link to a character device"))
    os.symlink("does-not-exist.dcm", add("special/dangling.dcm", "dangling link"))
    os.symlink("selfloop.dcm", add("special/selfloop.dcm", "link to itself"))
    os.symlink(".", add("special/loop", "folder link to its own folder"))
    _write(outside, "ct.dcm", ct)
    _write(outside, "mr.dcm", mr)
    os.symlink(outside.resolve(), add("special/linked", "folder link outside"))
    _write(root, "special/.hidden.dcm", mr)
    add("special/.hidden.dcm", "name starting with a dot")
    _write(root, "special/.dotdir/inside.dcm", ct)
    add("special/.dotdir/inside.dcm", "in a folder starting with a dot")
    _write(root, f"dicom/{NOT_UTF8}.dcm", ct)
    add(f"dicom/{NOT_UTF8}.dcm", "file name not UTF-8")
    _write(root, f"special/{NOT_UTF8}/inside.dcm", mr)
    add(f"special/{NOT_UTF8}/inside.dcm", "folder name not UTF-8")
    _write(root, "special/folder.dcm/inner.dcm", emri)
    add("special/folder.dcm/inner.dcm", "in a folder named like a file")
    os.truncate(_write(root, "special/preamble-zeros.dcm", bytes(128) + b"DICM"), 200 << 20)
    add("special/preamble-zeros.dcm", "200 MB of zeros after a DICOM preamble")
    os.truncate(_write(root, "special/sparse-tail.dcm", ct), sizes["sparse_dcm"])
    add("special/sparse-tail.dcm", f"CT_small followed by a hole to {sizes['sparse_dcm']} bytes")
    write_sparse_nifti(root / "nifti/sparse-volume.nii", sizes["sparse_nii"])
    add("nifti/sparse-volume.nii", f"consistent uint8 volume {sizes['sparse_nii']}, all hole")
    return made


def write_issue_mutants(root: Path, scale: str = "ci") -> list[Special]:
    """Each file of the issue's list, built the way the issue describes it."""
    made: list[Special] = []

    def add(rel: str, data: bytes, what: str) -> None:
        _write(root, rel, data)
        made.append(Special(rel, what))

    jls, rle, ct = _base("mr-jls"), _base("mr-rle"), _base("ct")
    for side in (128, 4096):
        data = set_fields(jls, {"Rows": side, "Columns": side})
        add(f"dicom/issue-jls-rows-{side}.dcm", data, f"JPEG-LS 64x64, Rows {side}")
    for side in (32, 63):
        data = set_fields(rle, {"Rows": side, "Columns": side})
        add(f"dicom/issue-rle16-rows-{side}.dcm", data, f"RLE 64x64, Rows {side}")
    j2k = patch_codestream(_base("ct-j2k"), 16_777_215, None, all_frames=True)
    assert j2k is not None
    add("dicom/issue-j2k-siz-16.7M-rows.dcm", j2k, "J2K SIZ Ysiz 16,777,215, Rows 512")
    frames = set_fields(ct, {"NumberOfFrames": "99999999999"})
    add("dicom/issue-frames-99999999999.dcm", frames, "native CT, NumberOfFrames 99,999,999,999")
    frames = set_fields(rle, {"NumberOfFrames": "1000000"})
    add("dicom/issue-rle-frames-1000000.dcm", frames, "7.8 KB RLE, NumberOfFrames 1,000,000")
    for power in (31, 40):
        data = nifti_set(_base("nifti2"), "dim", 1, 2**power)
        add(f"nifti/issue-nifti2-dim-2^{power}.nii", data, f"NIfTI-2 dim[1] = 2^{power}")
    shape = SIZES[scale]["axis_first"]
    write_axis_first_gz(root / "nifti/issue-axis-first.nii.gz", shape)
    made.append(Special("nifti/issue-axis-first.nii.gz", f"valid float32 {shape}, S axis first"))
    bomb = png_set_ihdr(_base("ct-png"), 100_000, 100_000)
    add("raster/issue-png-ihdr-100000.png", bomb, "PNG IHDR 100,000 x 100,000")
    for name in ("MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"):
        add(f"dicom/real-{name}", pydicom_file(name).read_bytes(), "pydicom's own broken file")
    for seed, index, what in FOUND:
        base, data, how = make_mutant(seed, index)
        add(f"{base.kind}/found-s{seed}-m{index:06d}{base.suffix}", data, f"{what} ({how})")
    return made
