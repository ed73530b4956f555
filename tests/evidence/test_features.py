"""Intensity statistics and header geometry of real images, and the feature matrix."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hypermodal.catalog import build_catalog, read_catalog
from hypermodal.evidence import (
    FEATURE_NAMES,
    GEOMETRY_NAMES,
    STAT_NAMES,
    feature_matrix,
    header_geometry,
    image_stats,
)
from hypermodal.evidence.features import SAMPLE_PIXELS, images_in_series
from hypermodal.io import iter_images, read_header
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.store import SliceStore, build_store
from tests.helpers import copy_into, nibabel_file, pydicom_file, truncate_copy

STAT = {name: i for i, name in enumerate(STAT_NAMES)}


def _first_image(path: Path) -> np.ndarray:
    return next(iter_images(path))[1]


def _stats(image: np.ndarray) -> dict[str, float]:
    return dict(zip(STAT_NAMES, (float(v) for v in image_stats(image)), strict=True))


def _geometry(path: Path) -> dict:
    h = read_header(path)
    return header_geometry(h.format, h.num_images, h.extra)


# ----------------------------------------------------------------------------- image_stats
def test_ct_statistics_are_hounsfield_units():
    ct = _first_image(pydicom_file("CT_small.dcm"))
    s = _stats(ct)
    assert len(image_stats(ct)) == len(STAT_NAMES)
    # 128 × 128 is below the sampling budget: every pixel counts, so the shares are exact
    assert ct.size <= SAMPLE_PIXELS
    assert s["frac_air"] == pytest.approx(np.mean(ct <= -500), abs=1e-6)
    assert s["frac_negative"] == pytest.approx(np.mean(ct < 0), abs=1e-6)
    assert s["frac_soft"] == pytest.approx(np.mean((ct > -30) & (ct <= 100)), abs=1e-6)
    assert s["q50"] == pytest.approx(np.median(ct))
    assert s["vmin"] == ct.min() and s["vmax"] == ct.max()
    # what makes it CT: air near -1000 HU and a large share of soft tissue near 0 HU
    assert s["vmin"] < -500 and s["q01"] < -500
    assert s["frac_air"] > 0.1 and s["frac_negative"] > 0.3 and s["frac_soft"] > 0.2
    assert s["frac_integer"] == 1.0  # rescaled integers stay integers


@pytest.mark.parametrize("name", ["MR_small.dcm", "emri_small.dcm"])
def test_mr_statistics_have_no_negative_values(name):
    mr = _first_image(pydicom_file(name))
    s = _stats(mr)
    assert s["vmin"] >= 0
    assert s["frac_negative"] == 0.0 and s["frac_air"] == 0.0 and s["frac_fat"] == 0.0
    assert 0 <= s["rel_mean"] <= 1 and 0 <= s["rel_median"] <= 1


def test_large_radiograph_is_sampled_on_a_regular_grid():
    xr = _first_image(pydicom_file("RG3_UNCR.dcm"))  # 1760 × 1760
    assert xr.size > SAMPLE_PIXELS
    step = int(np.ceil(np.sqrt(xr.size / SAMPLE_PIXELS)))
    grid = xr[::step, ::step].astype(np.float64)
    s = _stats(xr)
    assert s["q50"] == pytest.approx(np.percentile(grid, 50))
    assert s["mean"] == pytest.approx(grid.mean(), rel=1e-5)
    assert s["q50"] == pytest.approx(np.median(xr), rel=0.05)  # the grid stands for the image
    assert np.array_equal(image_stats(xr), image_stats(xr.copy()), equal_nan=True)  # deterministic


def _finite_or_nan(v: np.ndarray) -> bool:
    return not np.isinf(v).any()


def test_degenerate_images_give_vectors_of_the_right_length_without_raising():
    ct = _first_image(pydicom_file("CT_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (division by zero, empty mean)
        constant = image_stats(np.full((32, 32), 7.0, np.float32))
        all_nan = image_stats(np.full((32, 32), np.nan, np.float32))
        empty = image_stats(np.zeros((0, 0), np.float32))
        with_inf = ct.copy()
        with_inf[:4] = np.inf
        with_inf[4:8] = -np.inf
        with_inf[8, 8] = np.nan
        infs = image_stats(with_inf)
    for v in (constant, all_nan, empty, infs):
        assert v.shape == (len(STAT_NAMES),) and v.dtype == np.float32
        assert _finite_or_nan(v)
    # a constant image has no object whose depth could be measured: that statistic is unknown
    assert np.isnan(constant[STAT["depth_contrast"]])
    assert np.isfinite(np.delete(constant, STAT["depth_contrast"])).all()
    assert constant[STAT["vmin"]] == constant[STAT["vmax"]] == 7.0
    assert constant[STAT["std"]] == 0 and constant[STAT["roughness"]] == 0
    assert constant[STAT["frac_at_min"]] == 1.0 and constant[STAT["foreground"]] == 0.0
    assert np.isnan(all_nan).all() and np.isnan(empty).all()
    # non-finite pixels are left out, not taken as values
    finite = with_inf[np.isfinite(with_inf)]
    assert np.isfinite(infs).all()
    assert infs[STAT["vmax"]] == finite.max() and infs[STAT["vmin"]] == finite.min()
    assert infs[STAT["mean"]] == pytest.approx(finite.mean(), rel=1e-5)


# ----------------------------------------------------------------------------- header_geometry
def test_geometry_of_real_dicom_headers():
    ct = _geometry(pydicom_file("CT_small.dcm"))
    assert ct["frames"] == 1 and ct["samples"] == 1
    assert ct["pixel_spacing"] == pytest.approx(0.661468)
    assert ct["slice_thickness"] == pytest.approx(5.0)
    assert ct["bits_stored"] == 16
    mr = _geometry(pydicom_file("MR_small.dcm"))
    assert mr["pixel_spacing"] == pytest.approx(0.3125) and mr["slice_thickness"] == 0.8
    # multi-frame MR without spacing: frames counted, missing values NaN
    emri = _geometry(pydicom_file("emri_small.dcm"))
    assert emri["frames"] == 10 and emri["bits_stored"] == 12
    assert np.isnan(emri["pixel_spacing"]) and np.isnan(emri["slice_thickness"])
    # a colour (RGB) ultrasound: three samples per pixel, 8 bits
    us = _geometry(pydicom_file("US1_UNCR.dcm"))
    assert us["samples"] == 3 and us["bits_stored"] == 8


def test_geometry_of_real_nifti_headers():
    # 4D: zooms (4, 4, 8, 2 s): in-plane 4 mm, slices 8 mm, the time step is not a spacing
    fun = _geometry(nibabel_file("functional.nii"))
    assert fun == {
        "frames": 3,
        "pixel_spacing": 4.0,
        "slice_thickness": 8.0,
        "bits_stored": 16.0,
        "samples": 1,
    }
    floats = _geometry(nibabel_file("resampled_anat_moved.nii"))  # big-endian float32
    assert floats["bits_stored"] == 32 and floats["slice_thickness"] == 8.0


def test_nifti_geometry_follows_the_axial_axis(tmp_path):
    """A real volume stored with the axial axis first: the slice thickness is that axis' zoom."""
    src = nib.load(nibabel_file("anatomical.nii"))
    data = np.transpose(np.asarray(src.dataobj), (2, 0, 1))
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.5, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    path = tmp_path / "axial-first.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    h = read_header(path)
    assert h.extra["slice_axis"] == 0
    g = header_geometry(h.format, h.num_images, h.extra)
    assert g["frames"] == data.shape[0]
    assert g["slice_thickness"] == pytest.approx(3.0)
    assert g["pixel_spacing"] == pytest.approx(1.25)  # mean of 1.0 and 1.5


def test_geometry_of_png_exports(tmp_path):
    ct = _first_image(pydicom_file("CT_small.dcm"))
    u8 = ((ct - ct.min()) / (ct.max() - ct.min()) * 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "grey.png")
    Image.fromarray(u8).convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray((ct - ct.min()).astype(np.uint16)).save(tmp_path / "grey16.png")
    grey, rgb, grey16 = (_geometry(tmp_path / n) for n in ("grey.png", "rgb.png", "grey16.png"))
    assert grey["bits_stored"] == 8 and grey["samples"] == 1
    assert rgb["bits_stored"] == 8 and rgb["samples"] == 3
    assert grey16["bits_stored"] == 16 and grey16["samples"] == 1
    for g in (grey, rgb, grey16):  # a PNG has no spacing: unknown, never 0
        assert g["frames"] == 1
        assert np.isnan(g["pixel_spacing"]) and np.isnan(g["slice_thickness"])


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_geometry_of_nrrd_and_metaimage_volumes(tmp_path, suffix):
    sitk = pytest.importorskip("SimpleITK")
    ct = _first_image(pydicom_file("CT_small.dcm")).astype(np.int16)
    volume = sitk.GetImageFromArray(np.stack([ct] * 4))
    volume.SetSpacing((0.66, 0.66, 5.0))
    sitk.WriteImage(volume, str(tmp_path / f"ct{suffix}"))
    g = _geometry(tmp_path / f"ct{suffix}")
    assert g["frames"] == 4
    assert g["pixel_spacing"] == pytest.approx(0.66)
    assert g["slice_thickness"] == pytest.approx(5.0)
    assert g["bits_stored"] == 16


def test_spacing_values_in_every_spelling():
    dicom = {"pixel_spacing": "0.5\\0.7", "slice_thickness": "2.5", "bits_stored": 12}
    assert header_geometry("dicom", 1, dicom)["pixel_spacing"] == pytest.approx(0.6)
    assert header_geometry("dicom", 1, {"pixel_spacing": [0.5, 0.7]})["pixel_spacing"] == 0.6
    bad = header_geometry("dicom", 2, {"pixel_spacing": "x\\-1", "slice_thickness": 0})
    assert np.isnan(bad["pixel_spacing"]) and np.isnan(bad["slice_thickness"])
    assert bad["frames"] == 2 and bad["samples"] == 1 and np.isnan(bad["bits_stored"])


# ----------------------------------------------------------------------------- the matrix
def test_feature_matrix_order_and_geometry_columns():
    images = [_first_image(pydicom_file(n)) for n in ("CT_small.dcm", "MR_small.dcm")]
    stats = np.stack([image_stats(im) for im in images])
    table = pd.DataFrame(
        {
            "path": ["ct.dcm", "mr.dcm", "mr.dcm"],
            "series": ["s1", "s2", "s2"],
            "rows": [128, 64, 64],
            "columns": [128, 32, 64],
            "frames": [1, 2, 2],
            "pixel_spacing": [0.66, np.nan, 0.31],
            "slice_thickness": [5.0, 0.8, 0.8],
            "bits_stored": [16.0, 16.0, 16.0],
            "samples": [1, 1, 3],
        }
    )
    x = feature_matrix(np.vstack([stats, stats[1:]]), table)
    assert x.shape == (3, len(FEATURE_NAMES)) and x.dtype == np.float32
    assert FEATURE_NAMES == STAT_NAMES + GEOMETRY_NAMES
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_array_equal(x[:2, : len(STAT_NAMES)], stats)
    np.testing.assert_array_equal(x[:, col["rows"]], [128, 64, 64])
    np.testing.assert_array_equal(x[:, col["columns"]], [128, 32, 64])
    np.testing.assert_allclose(x[:, col["log_aspect"]], [0.0, np.log(2), 0.0], atol=1e-6)
    np.testing.assert_array_equal(x[:, col["samples"]], [1, 1, 3])
    assert np.isnan(x[1, col["pixel_spacing"]]) and x[2, col["pixel_spacing"]] == np.float32(0.31)
    np.testing.assert_array_equal(x[:, col["images_in_series"]], [1, 2, 2])


def test_feature_matrix_without_geometry_columns_and_without_rows():
    stats = image_stats(_first_image(pydicom_file("MR_small.dcm")))[None]
    x = feature_matrix(stats, pd.DataFrame({"path": ["a.png"]}))
    geometry = x[0, len(STAT_NAMES) :]
    assert np.isnan(geometry[:-1]).all()  # unknown, not zero
    assert geometry[-1] == 1  # one image in its "series" (the file)
    empty = feature_matrix(np.zeros((0, len(STAT_NAMES))), pd.DataFrame({"path": []}))
    assert empty.shape == (0, len(FEATURE_NAMES))


def test_images_in_series_counts_series_then_files_and_at_least_frames():
    table = pd.DataFrame(
        {
            "series": ["s1", "s1", "s1", None, None, None],
            "path": ["a", "b", "c", "d", "e", "e"],
            "frames": [1, 1, 1, 1, 5, 5],
        }
    )
    np.testing.assert_array_equal(images_in_series(table), [3, 3, 3, 1, 5, 5])
    no_series = table.drop(columns=["series", "frames"])
    np.testing.assert_array_equal(images_in_series(no_series), [1, 1, 1, 1, 2, 2])


def test_feature_matrix_of_a_real_catalog(real_corpus, tmp_path):
    root, expected = real_corpus
    build_catalog([root], tmp_path / "catalog.parquet", workers=1, progress=False)
    catalog = read_catalog(tmp_path / "catalog.parquet")
    x = feature_matrix(np.full((len(catalog), len(STAT_NAMES)), np.nan), catalog)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    per_ds = pd.DataFrame(x[:, len(STAT_NAMES) :], columns=GEOMETRY_NAMES).groupby(
        catalog["dataset"].to_numpy()
    )
    series = per_ds["images_in_series"].max()
    assert series["emri"] == 10 and series["ct-small"] == 1
    assert series["nifti-mr"] == expected["nifti_slices"]
    assert per_ds["samples"].max()["png-xr"] == 3
    ct = catalog["dataset"].eq("ct-small").to_numpy()
    assert x[ct, col["slice_thickness"]][0] == 5.0 and x[ct, col["bits_stored"]][0] == 16


# ----------------------------------------------------------------------------- the store
def test_store_keeps_the_statistics_of_each_decoded_image(tmp_path):
    root = tmp_path / "corpus"
    copy_into(pydicom_file("CT_small.dcm"), root / "ct")
    copy_into(pydicom_file("CT_small.dcm"), root / "ct", "gone.dcm")
    copy_into(pydicom_file("emri_small.dcm"), root / "mr")
    build_catalog([root], tmp_path / "catalog.parquet", workers=1, progress=False)
    catalog = read_catalog(tmp_path / "catalog.parquet")
    catalog["split"] = "train"
    # a file cut short between catalog and store: its image fails to decode
    truncate_copy(pydicom_file("CT_small.dcm"), root / "ct" / "gone.dcm", 2000)
    build_store(
        catalog,
        tmp_path / "store",
        ClassVocabulary(),
        PreprocessConfig(size=16),
        workers=1,
        progress=False,
    )
    table = SliceStore.open(tmp_path / "store").table
    assert len(table) == 12 and int(table["ok"].sum()) == 11
    for _, row in table.iterrows():
        stats = np.asarray(row["stats"])
        assert stats.shape == (len(STAT_NAMES),)
        if not row["ok"]:
            assert np.isnan(stats).all()  # a failed image has unknown statistics
            continue
        image = next(iter_images(Path(row["path"]), [int(row["index"])]))[1]
        np.testing.assert_array_equal(stats, image_stats(image))
    ct = np.asarray(table.loc[table["dataset"].eq("ct") & table["ok"], "stats"].iloc[0])
    assert ct[STAT["frac_air"]] > 0.1  # the statistics are in HU, not of the uint8 pixels
