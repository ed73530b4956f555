"""Thumbnails read from real files: windowed, scaled; a placeholder and a reason when unreadable."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from hypermodal.common.paths import path_text
from hypermodal.inference.report.thumbnails import (
    render_thumbnail,
    render_thumbnails,
    window,
)
from hypermodal.io import iter_images, read_header
from tests.helpers import pydicom_file


def _pixels(thumb) -> np.ndarray:
    img = Image.open(io.BytesIO(thumb.png))
    assert img.format == "PNG" and img.size == (thumb.width, thumb.height)
    return np.asarray(img)


def test_window_stretches_the_images_own_percentiles():
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 10.0, (200, 200)).astype(np.float32)
    img[0, 0] = 1e6  # one hot pixel must not darken the rest
    out = window(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.percentile(out, 1) <= 1 and np.percentile(out, 99) >= 254
    assert 100 < np.median(out) < 156


def test_window_of_flat_masked_and_non_finite_images():
    assert (window(np.full((8, 8), 7.0)) == 128).all()
    mask = np.zeros((50, 50), np.float32)
    mask[20:25, 20:25] = 1.0  # a small mask: the percentiles are both 0, the range is used
    out = window(mask)
    assert out[22, 22] == 255 and out[0, 0] == 0
    nan = np.full((4, 4), np.nan, np.float32)
    assert (window(nan) == 0).all()
    partly = np.array([[np.nan, 0.0], [1.0, 2.0]], np.float32)
    assert window(partly)[0, 0] == 0


def test_a_ct_thumbnail_is_its_windowed_image_scaled_to_fit():
    path = str(pydicom_file("CT_small.dcm"))
    thumb = render_thumbnail((path, 0, 96))
    assert thumb.reason is None and thumb.shown_index == 0
    assert max(thumb.width, thumb.height) == 96
    px = _pixels(thumb)
    assert px.std() > 20  # anatomy, not a flat square
    _, image = next(iter(iter_images(path, [0])))
    expected = np.asarray(Image.fromarray(window(image)).resize((96, 96), Image.Resampling.LANCZOS))
    assert np.abs(px.astype(int) - expected.astype(int)).mean() < 3
    assert thumb.data_uri.startswith("data:image/png;base64,")


def test_a_large_radiograph_keeps_its_aspect_ratio():
    path = str(pydicom_file("RG1_UNCR.dcm"))
    header = read_header(path)
    thumb = render_thumbnail((path, 0, 128))
    assert thumb.reason is None and max(thumb.width, thumb.height) == 128
    assert thumb.width / thumb.height == pytest.approx(header.columns / header.rows, rel=0.03)


def test_without_an_index_the_middle_image_is_shown():
    thumb = render_thumbnail((str(pydicom_file("emri_small.dcm")), None, 64))
    assert thumb.reason is None and thumb.index is None and thumb.shown_index == 5  # of 10


def test_a_name_that_is_not_utf8_is_read_from_its_text(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"scan-\xff.dcm")
    with open(raw, "wb") as fh:
        fh.write(pydicom_file("CT_small.dcm").read_bytes())
    text = path_text(raw)
    assert text.endswith("scan-\\xff.dcm")
    thumb = render_thumbnail((text, 0, 64))
    assert thumb.reason is None and _pixels(thumb).std() > 20


def test_unreadable_files_give_a_placeholder_and_the_reason(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    truncated = str(pydicom_file("MR_truncated.dcm"))
    cases = {
        truncated: "truncated",
        str(notes): "not a recognised image format",
        str(tmp_path / "gone.dcm"): "No such file",  # moved away since predict
    }
    for path, reason in cases.items():
        thumb = render_thumbnail((path, 0, 64))
        assert thumb.reason and reason in thumb.reason, (path, thumb.reason)
        assert thumb.shown_index is None
        px = _pixels(thumb)  # the placeholder is a real picture: grey with a dark cross
        assert px.shape == (64, 64) and px[32, 32] < px[10, 50]
    beyond = render_thumbnail((str(pydicom_file("CT_small.dcm")), 5, 64))
    assert beyond.reason == "the file has no image 5"


@pytest.mark.slow
def test_many_thumbnails_render_in_worker_processes(tmp_path):
    good = str(pydicom_file("CT_small.dcm"))
    frames = str(pydicom_file("emri_small.dcm"))
    broken = str(pydicom_file("MR_truncated.dcm"))
    wanted = [(good, 0), (frames, 3), (broken, 0), (frames, None), (good, 0)]
    thumbs = render_thumbnails(wanted, 48, workers=2, pool_above=0)
    assert set(thumbs) == {(good, 0), (frames, 3), (broken, 0), (frames, None)}
    assert thumbs[(frames, 3)].shown_index == 3 and thumbs[(frames, None)].shown_index == 5
    assert "truncated" in thumbs[(broken, 0)].reason
    # the same images rendered in this process give the same pictures
    here = render_thumbnails(wanted, 48)
    assert all(here[k].png == thumbs[k].png for k in thumbs)
