"""The DICOM fast path gives exactly what the general path gives.

Plain little-endian files are walked without pydicom's parser and native frames are read
straight from the file; every header and image must equal what the pydicom path
(``DicomReader(fast_path=False)``) gives, and bad files must fail with the same error.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from hypermodal.io.dicom import DicomReader
from hypermodal.sources.synthetic import write_synthetic
from tests.helpers import pydicom_file

READER = DicomReader()
GENERAL = DicomReader(fast_path=False)


def _outcome(reader: DicomReader, path: Path, what: str) -> tuple:
    try:
        if what == "header":
            return ("ok", reader.header(path).to_dict())
        return ("ok", [(i, a.dtype.str, a.shape, a.tobytes()) for i, a in reader.images(path)])
    except Exception as exc:  # noqa: BLE001 - the exact outcome is what is compared
        return ("error", type(exc).__name__, str(exc))


def _both_ways(path: Path) -> tuple[tuple, tuple, tuple, tuple]:
    fast_header, fast_images = _outcome(READER, path, "header"), _outcome(READER, path, "images")
    slow_header, slow_images = _outcome(GENERAL, path, "header"), _outcome(GENERAL, path, "images")
    return fast_header, slow_header, fast_images, slow_images


def _variants(root: Path) -> list[Path]:
    """Synthetic CT/MR/PT/XR (single and multi-frame) plus edited copies that exercise the
    fast path's corners: Rescale Type, implicit VR, 12 bits stored, signed 10-bit data with a
    negative slope, MONOCHROME1, empty text values."""
    files = write_synthetic(root / "sf", 4, ["CT", "MR", "PT", "XR"], seed=5)
    files += write_synthetic(root / "mf", 2, ["PT", "XR"], seed=6, frames=3)
    out = root / "edited"
    out.mkdir()
    for i, src in enumerate(files[:4]):
        ds = pydicom.dcmread(src)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        files.append(out / f"implicit{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
        ds = pydicom.dcmread(src)
        ds.RescaleType = "HU"  # most CT files have it; nothing reads it
        files.append(out / f"rescale_type{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
        ds = pydicom.dcmread(src)
        if ds.BitsAllocated != 16:
            continue
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PhotometricInterpretation = "MONOCHROME1"
        files.append(out / f"b12_mono1_{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
        ds = pydicom.dcmread(src)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 10, 9
        ds.RescaleSlope, ds.BodyPartExamined = "-2", ""
        files.append(out / f"signed_negslope{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


@pytest.mark.slow
def test_dicom_fast_path_equals_pydicom_path(tmp_path: Path) -> None:
    files = _variants(tmp_path)
    fast_used = 0
    for path in files:
        fast_header, slow_header, fast_images, slow_images = _both_ways(path)
        assert fast_header == slow_header, path
        assert fast_images == slow_images, path
        assert fast_images[0] == "ok", path
        assert GENERAL.route(path) == "pydicom", path
        fast_used += READER.route(path) == "native"
    assert fast_used >= len(files) - 2  # the walk is what these files take


def test_dicom_fast_path_bad_files_fail_alike(tmp_path: Path) -> None:
    (src,) = write_synthetic(tmp_path / "one", 1, ["CT"], seed=7)
    data = src.read_bytes()
    for keep in (100, 140, 300, 700, 1500, len(data) // 2, len(data) - 1000):
        path = tmp_path / f"cut{keep}.dcm"
        path.write_bytes(data[:keep])
        fast_header, slow_header, fast_images, slow_images = _both_ways(path)
        assert fast_header == slow_header, keep
        assert fast_images == slow_images, keep
        assert fast_images[0] == "error", keep


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"])
def test_dicom_fast_path_pydicom_files(name: str) -> None:
    path = pydicom_file(name)
    fast_header, slow_header, fast_images, slow_images = _both_ways(path)
    assert fast_header == slow_header
    assert fast_images == slow_images
