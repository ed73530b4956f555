"""Radiographs simulated from a real CT slab and a real MR head: physics and DICOM output."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest

from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate import (
    DrrParams,
    SeriesIds,
    build_anatomy,
    sample_drr_params,
    simulate_drrs,
    write_radiograph,
)

#: a quiet, uncollimated AP view whose columns map linearly onto the volume's x axis
PLAIN = DrrParams(
    view="AP",
    angle=0.0,
    photons=1e6,
    scatter=0.0,
    electronic=0.0,
    psf_px=0.5,
    margin_mm=(0.0, 0.0, 0.0, 0.0),
    window=(0.0, 100.0),
    toe=0.0,
    unsharp=0.0,
)


@pytest.fixture(scope="module")
def ct_anatomy(ct_volume):
    return build_anatomy(ct_volume)


def _bone_per_column(anatomy, width: int) -> np.ndarray:
    """Bone path (mm) of each AP ray, on the DRR's columns (patient right on the left)."""
    bone = (anatomy.hu[:, :, 0] > 300).sum(axis=1) * anatomy.spacing[1]
    prof = bone[::-1]
    return np.interp(np.linspace(0, len(prof) - 1, width), np.arange(len(prof)), prof)


def test_bone_is_bright_in_monochrome2(ct_anatomy):
    img = simulate_drrs(ct_anatomy, 0, np.random.default_rng(0), [PLAIN])[0]
    assert img.params.photometric == "MONOCHROME2"
    col = img.pixels.astype(np.float64).mean(axis=0)
    bone = _bone_per_column(ct_anatomy, img.pixels.shape[1])
    assert (bone > 10).sum() > 50 and (bone == 0).sum() > 50
    assert col[bone > 10].mean() > col[bone == 0].mean() + 1000  # of 4095


def test_monochrome1_stores_the_inverse(ct_anatomy):
    m1 = replace(PLAIN, photometric="MONOCHROME1")
    a = simulate_drrs(ct_anatomy, 0, np.random.default_rng(5), [PLAIN])[0]
    b = simulate_drrs(ct_anatomy, 0, np.random.default_rng(5), [m1])[0]
    assert a.pixels.dtype == np.uint16 and a.pixels.max() <= 4095
    np.testing.assert_array_equal(b.pixels.astype(np.int32), 4095 - a.pixels.astype(np.int32))
    np.testing.assert_array_equal(b.display, a.pixels)


def test_detector_size_and_spacing(epi_anatomy):
    rng = np.random.default_rng(1)
    images = simulate_drrs(epi_anatomy, 6, rng)
    for img in images:
        assert 1000 <= max(img.pixels.shape) <= 2000
        assert 0.09 <= img.pixel_mm <= 0.25
        assert img.pixels.max() <= 4095
    assert {i.params.view for i in images} != {"AP"}  # several views
    # same seed, same images
    again = simulate_drrs(epi_anatomy, 6, np.random.default_rng(1))
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(images, again, strict=True))


def test_photon_noise_falls_with_dose(ct_anatomy):
    def noise(photons: float) -> float:
        p = replace(PLAIN, photons=photons, psf_px=0.0)
        img = simulate_drrs(ct_anatomy, 0, np.random.default_rng(2), [p])[0].pixels
        rows = img.astype(np.float64)[10:-10]
        return float(np.std(np.diff(rows, axis=0)))  # the slab is the same in every row

    assert noise(300.0) > 2 * noise(30000.0)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_written_radiograph_reads_back(tmp_path, ct_anatomy, photometric):
    params = replace(sample_drr_params(np.random.default_rng(3)), photometric=photometric)
    img = simulate_drrs(ct_anatomy, 0, np.random.default_rng(4), [params])[0]
    ids = SeriesIds.make(0, "sim-drr.ct-small", "v0", "0", 1, "DRR AP", "ct-small")
    path = write_radiograph(tmp_path / "drr.dcm", img, ids, "CHEST")
    header = read_header(path)
    assert header.modality == params.modality and header.modality in ("DX", "CR")
    assert header.photometric == photometric
    assert (header.rows, header.columns) == img.pixels.shape
    ds = pydicom.dcmread(path)
    assert ds.BitsStored == 12 and ds.HighBit == 11
    assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(img.pixel_mm, abs=1e-4)
    assert float(ds.PixelSpacing[0]) == pytest.approx(img.pixel_mm, abs=1e-4)
    assert "simulated" in ds.DerivationDescription and "ct-small" in ds.DerivationDescription
    _, pixels = next(iter_images(path))  # the reader shows dense as bright for both
    np.testing.assert_array_equal(pixels, img.display.astype(np.float32))
