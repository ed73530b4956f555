"""PET simulated from a real MR head: geometry, values, smoothness, counts, DICOM and NIfTI."""

from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pydicom
import pytest

from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate import (
    PetParams,
    SeriesIds,
    Tissue,
    simulate_pet,
    write_pet_nifti,
    write_pet_series,
)

BASE = PetParams(matrix=192, pixel_mm=2.2, slice_mm=3.0, max_slices=12, lesions=1)


def _high_frequency(img: np.ndarray) -> float:
    """Share of a 2D image's spectral energy above half the Nyquist frequency."""
    spec = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    fy, fx = np.meshgrid(*[np.fft.fftshift(np.fft.fftfreq(n)) for n in img.shape], indexing="ij")
    return float(spec[np.hypot(fy, fx) > 0.25].sum() / spec.sum())


@pytest.fixture(scope="module")
def pet(epi_anatomy):
    return simulate_pet(epi_anatomy, BASE, np.random.default_rng(0))


def test_geometry_and_values(pet):
    assert pet.values.shape[:2] == (192, 192)
    assert 1 <= pet.values.shape[2] <= 12
    assert (pet.pixel_mm, pet.slice_mm) == (2.2, 3.0)
    assert pet.values.dtype == np.float32 and pet.values.min() >= 0
    # grey matter (SUV 8) and a lesion, in Bq/ml: SUV times the injected dose per gram
    assert 4 * pet.bq_per_suv < np.percentile(pet.values, 99.5) < 25 * pet.bq_per_suv


@pytest.mark.parametrize("recon", ["FBP", "OSEM"])
def test_reconstruction_is_quantitative(epi_anatomy, recon):
    uniform = replace(BASE, recon=recon, counts=None, lesions=0, suv=dict.fromkeys(BASE.suv, 1.0))
    pet = simulate_pet(epi_anatomy, uniform, np.random.default_rng(0))
    suv = pet.values / pet.bq_per_suv
    assert np.median(suv[suv > 0.2]) == pytest.approx(1.0, abs=0.05)


def test_smoother_than_the_source(epi_volume, pet):
    src = epi_volume.data[:, :, epi_volume.data.shape[2] // 2]
    mid = pet.values[:, :, pet.values.shape[2] // 2]
    assert _high_frequency(mid) < 0.5 * _high_frequency(src)


def test_poisson_noise_follows_the_count_level(epi_anatomy):
    params = replace(BASE, recon="FBP", lesions=0, max_slices=6)

    def run(counts):
        return simulate_pet(epi_anatomy, replace(params, counts=counts), np.random.default_rng(1))

    clean = run(None).values
    err = {c: float(np.sqrt(np.mean((run(c).values - clean) ** 2))) for c in (3e4, 3e6)}
    assert err[3e4] > 3 * err[3e6] > 0


def test_uptake_follows_tissue(epi_anatomy):
    params = replace(BASE, counts=None, lesions=0, psf_fwhm_mm=5.0)
    grey_only = replace(params, suv={**params.suv, "WHITE": 0.0, "CSF": 0.0, "GREY": 8.0})
    no_brain = replace(params, suv={**params.suv, "WHITE": 0.0, "CSF": 0.0, "GREY": 0.0})
    a = simulate_pet(epi_anatomy, grey_only, np.random.default_rng(2)).values
    b = simulate_pet(epi_anatomy, no_brain, np.random.default_rng(2)).values
    assert a.sum() > 3 * b.sum()  # the brain's grey matter holds most of the activity
    assert (epi_anatomy.tissue == Tissue.GREY).any()


def test_dicom_series_reads_back_in_bq_per_ml(tmp_path, pet):
    ids = SeriesIds.make(0, "sim-pet.epi", "v0", "0", 1, "PET OSEM 192", "nifti-epi")
    paths = write_pet_series(tmp_path / "pet", pet, ids, "HEAD", per_slice_slope=True)
    assert len(paths) == pet.values.shape[2]
    header = read_header(paths[0])
    assert header.modality == "PT" and (header.rows, header.columns) == (192, 192)
    ds = pydicom.dcmread(paths[0])
    assert ds.Units == "BQML" and ds.BitsStored == 16 and ds.SliceThickness == 3.0
    assert [float(x) for x in ds.PixelSpacing] == [2.2, 2.2]
    z = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in paths]
    assert np.allclose(np.diff(z), -3.0)  # superior slice first, 3 mm apart
    _, top = next(iter_images(paths[0]))
    expected = pet.values[::-1, ::-1, -1].T
    assert top.min() >= 0
    np.testing.assert_allclose(top, expected, atol=float(expected.max()) / 65535 + 1e-3)


def test_nifti_is_float_bq_per_ml(tmp_path, pet):
    path = write_pet_nifti(tmp_path / "pet.nii.gz", pet, "simulated PET")
    img = nib.load(path)
    assert img.get_data_dtype() == np.float32
    assert img.header.get_zooms() == pytest.approx((2.2, 2.2, 3.0))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), pet.values)
    assert read_header(path).num_images == pet.values.shape[2]
    again = write_pet_nifti(tmp_path / "again.nii.gz", pet, "simulated PET")
    assert path.read_bytes() == again.read_bytes()  # no time stamp in the gzip header
