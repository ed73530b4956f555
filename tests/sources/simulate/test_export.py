"""Viewer-style 8-bit exports of real images: windows, text, formats."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate import (
    ExportParams,
    encode_raster,
    export_image,
    sample_export_params,
)
from tests.helpers import pydicom_file


@pytest.fixture(scope="module")
def ct_slice() -> np.ndarray:
    return next(iter_images(pydicom_file("CT_small.dcm")))[1]


@pytest.fixture(scope="module")
def mr_slice() -> np.ndarray:
    return next(iter_images(pydicom_file("MR_small.dcm")))[1]


def test_ct_window_presets(ct_slice):
    plain = ExportParams(long_side=None)
    brain = export_image(ct_slice, replace(plain, window="brain"))
    bone = export_image(ct_slice, replace(plain, window="bone"))
    # brain window 40/80: 0..80 HU spans the grey scale, bone (> 300 HU) is white
    assert brain.dtype == np.uint8 and brain.shape == ct_slice.shape
    assert (brain[ct_slice > 300] == 255).all() and (brain[ct_slice < -100] == 0).all()
    soft = (ct_slice > 20) & (ct_slice < 60)
    assert 60 < brain[soft].mean() < 200
    # the bone window (400/1800) keeps bone grades that the brain window saturates
    assert len(np.unique(bone[ct_slice > 300])) > 20


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("jpg", b"\xff\xd8\xff")])
def test_requested_format_is_8_bit(tmp_path, mr_slice, fmt, magic):
    params = replace(sample_export_params(np.random.default_rng(0), "MR", fmt), rgb=False)
    img8 = export_image(mr_slice, params)
    data = encode_raster(img8, params.format, params.quality)
    assert data.startswith(magic)
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(data)
    header = read_header(path)
    assert header.format == "raster" and (header.rows, header.columns) == img8.shape[:2]
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(decoded, img8)


def test_burned_in_text_changes_pixels(mr_slice):
    plain = ExportParams(long_side=512, rgb=False, percentiles=(0.0, 100.0))
    without = export_image(mr_slice, plain)
    with_text = export_image(mr_slice, replace(plain, text=["ID: 48213", "12/03/2019"]))
    changed = with_text != without
    assert 50 < changed.sum() < 0.05 * changed.size  # a few letters, not the image
    assert with_text[changed].mean() > without[changed].mean()  # white letters


def test_geometry_and_rgb(mr_slice):
    params = ExportParams(long_side=300, rotate_deg=5.0, crop=(0.1, 0.1, 0.0, 0.2), rgb=True)
    img8 = export_image(mr_slice, params)
    assert img8.shape[2] == 3 and max(img8.shape[:2]) == 300
    assert (img8[..., 0] == img8[..., 2]).all()  # grey in three channels
    with pytest.raises(ValueError, match="8-bit"):
        encode_raster(mr_slice.astype(np.uint16), "png")


def test_text_vocabulary_is_the_same_for_every_class():
    texts = {
        label: {
            w
            for seed in range(200)
            for t in sample_export_params(np.random.default_rng(seed), label).text
            for w in t.split()
        }
        for label in ("CT", "MR", "PT", "XR", "OTHER")
    }
    words = set.union(*texts.values())
    assert not words & {"CT", "MR", "PET", "PT", "XR", "DX", "CR", "US", "NM"}
