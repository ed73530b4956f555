"""The real files the fuzz suite mutates, held as bytes.

DICOM comes from pydicom's own test files (and pydicom-data for a real MONOCHROME1 radiograph):
uncompressed in each VR/endian flavour, multi-frame, and each codec (JPEG baseline, JPEG
extended, JPEG lossless, JPEG-LS, JPEG 2000, RLE). Files whose Modality is outside the class
vocabulary get one from it (the pixels and every other tag stay real), so that ``store`` decodes
every codec. NIfTI-1 and NIfTI-2 come from nibabel's test data; PNG, JPEG and TIFF are written
by Pillow from the pixels of real DICOM files.
"""

from __future__ import annotations

import functools
import gzip
import io
from dataclasses import dataclass

import numpy as np

from tests.helpers import nibabel_file, pydicom_file


@dataclass(frozen=True)
class Base:
    """One real file to mutate."""

    name: str  # short id, used in mutant names
    kind: str  # "dicom" | "nifti" | "raster"
    suffix: str  # the file name ending every mutant of it keeps
    codec: str  # what it exercises: "native", "jpeg-ls", "nifti2", "png", ...
    data: bytes


#: (id, pydicom test file, Modality to write or None to keep, codec)
DICOM_SOURCES: tuple[tuple[str, str, str | None, str], ...] = (
    ("ct", "CT_small.dcm", None, "native"),
    ("mr-implicit", "MR_small_implicit.dcm", None, "native-implicit"),
    ("mr-bigendian", "MR_small_bigendian.dcm", None, "native-big-endian"),
    ("emri", "emri_small.dcm", None, "native-multiframe"),
    ("rgb-jpeg", "SC_rgb_jpeg_dcmtk.dcm", "CR", "jpeg-baseline"),
    ("nm-jpeg-ext", "JPGExtended.dcm", "PT", "jpeg-extended"),
    ("nm-jpeg-ll", "JPEG-LL.dcm", "PT", "jpeg-lossless"),
    ("mr-jls", "MR_small_jpeg_ls_lossless.dcm", None, "jpeg-ls"),
    ("emri-jls", "emri_small_jpeg_ls_lossless.dcm", None, "jpeg-ls-multiframe"),
    ("mr-j2k", "MR_small_jp2klossless.dcm", None, "jpeg2000"),
    ("ct-j2k", "693_J2KI.dcm", None, "jpeg2000-lossy"),
    ("emri-j2k", "emri_small_jpeg_2k_lossless.dcm", None, "jpeg2000-multiframe"),
    ("mr-rle", "MR_small_RLE.dcm", None, "rle"),
    ("emri-rle", "emri_small_RLE.dcm", None, "rle-multiframe"),
)


def _dicom(file: str, modality: str | None) -> bytes:
    data = pydicom_file(file).read_bytes()
    if modality is None:
        return data
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Modality = modality
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _monochrome1() -> bytes:
    """A real computed radiograph (MONOCHROME1), every 8th pixel kept so it stays small."""
    import pydicom

    ds = pydicom.dcmread(pydicom_file("RG3_UNCR.dcm"))
    small = np.ascontiguousarray(ds.pixel_array[::8, ::8])
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(np.float64)
    lo, hi = np.percentile(a, (1, 99))
    return (np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def _pixels(file: str) -> np.ndarray:
    import pydicom

    return pydicom.dcmread(pydicom_file(file)).pixel_array


def _raster(arr: np.ndarray, fmt: str, mode: str | None = None, **save: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def load_bases() -> tuple[Base, ...]:
    """Every base file, in a fixed order (the generator's choices index into it)."""
    bases = [
        Base(name, "dicom", ".dcm", codec, _dicom(file, modality))
        for name, file, modality, codec in DICOM_SOURCES
    ]
    bases.append(Base("cr-mono1", "dicom", ".dcm", "native-monochrome1", _monochrome1()))
    nifti2 = nibabel_file("example_nifti2.nii.gz").read_bytes()
    bases += [
        Base("anat", "nifti", ".nii", "nifti1", nibabel_file("anatomical.nii").read_bytes()),
        Base("func-4d", "nifti", ".nii", "nifti1-4d", nibabel_file("functional.nii").read_bytes()),
        Base("nifti2", "nifti", ".nii", "nifti2", gzip.decompress(nifti2)),
        Base("nifti2-gz", "nifti", ".nii.gz", "nifti2-gzip", nifti2),
    ]
    ct = _to_uint8(_pixels("CT_small.dcm"))
    mr = _to_uint8(_pixels("MR_small.dcm"))
    rgb = _pixels("SC_rgb.dcm")
    mono1 = _pixels("RG3_UNCR.dcm")[::8, ::8].astype(np.uint16)
    bases += [
        Base("ct-png", "raster", ".png", "png", _raster(ct, "PNG")),
        Base("rgb-png", "raster", ".png", "png-rgb", _raster(rgb, "PNG")),
        Base("mr-jpg", "raster", ".jpg", "jpeg", _raster(mr, "JPEG", quality=90)),
        Base("ct-jpg", "raster", ".jpg", "jpeg", _raster(ct, "JPEG", quality=75)),
        Base("cr-tif", "raster", ".tif", "tiff-16bit", _raster(mono1, "TIFF")),
    ]
    return tuple(bases)
