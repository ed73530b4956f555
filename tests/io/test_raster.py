"""Raster reader (Pillow) on tiny PNG/JPEG/TIFF/BMP files written to ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermodal.io import CorruptFileError, UnsupportedFileError, iter_images, read_header
from hypermodal.io.raster import RasterReader, sniff_raster
from tests.helpers import luminance

READER = RasterReader()
RNG = np.random.default_rng(0)


def only(path: Path) -> np.ndarray:
    got = dict(READER.images(path))
    assert list(got) == [0]
    assert got[0].dtype == np.float32 and got[0].ndim == 2
    return got[0]


def test_png_rgb_becomes_luminance(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(20, 30, 3)).astype(np.uint8)
    path = tmp_path / "colour.png"
    Image.fromarray(rgb).save(path)
    header = READER.header(path)
    assert header.format == "raster" and header.modality is None
    assert (header.num_images, header.rows, header.columns) == (1, 20, 30)
    assert header.photometric == "RGB" and header.extra["file_format"] == "PNG"
    image = only(path)
    np.testing.assert_allclose(image, luminance(rgb), atol=1e-3)
    # the same as Pillow's own grey conversion, before its rounding to 8 bits
    assert np.abs(image - np.asarray(Image.open(path).convert("L"))).max() <= 1.0


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, size=(8, 9, 4)).astype(np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    np.testing.assert_allclose(only(path), luminance(rgba[..., :3]), atol=1e-3)
    grey_alpha = tmp_path / "la.png"
    Image.fromarray(rgba[..., :2], mode="LA").save(grey_alpha)
    np.testing.assert_array_equal(only(grey_alpha), rgba[..., 0])


def test_16bit_png_keeps_full_precision(tmp_path: Path) -> None:
    data = (np.arange(20 * 30).reshape(20, 30) * 109).astype(np.uint16)  # up to 65291
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)
    assert READER.header(path).photometric.startswith("I;16")
    image = only(path)
    np.testing.assert_array_equal(image, data.astype(np.float32))
    assert image.max() > 255


def test_multipage_tiff(tmp_path: Path) -> None:
    pages = [np.full((10, 12), 10 * (i + 1), np.uint8) for i in range(3)]
    path = tmp_path / "stack.tif"
    first, *rest = (Image.fromarray(p) for p in pages)
    first.save(path, save_all=True, append_images=rest)
    header = READER.header(path)
    assert (header.num_images, header.rows, header.columns) == (3, 10, 12)
    got = list(READER.images(path, [2, 0]))
    assert [i for i, _ in got] == [2, 0]
    np.testing.assert_array_equal(got[0][1], pages[2])
    np.testing.assert_array_equal(got[1][1], pages[0])
    assert len(list(READER.images(path))) == 3
    with pytest.raises(IndexError):
        list(READER.images(path, [3]))


def test_float_tiff_and_16bit_tiff(tmp_path: Path) -> None:
    values = RNG.normal(size=(6, 7)).astype(np.float32) * 1000
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    np.testing.assert_array_equal(only(path), values)
    deep = (RNG.integers(0, 65535, size=(6, 7))).astype(np.uint16)
    path = tmp_path / "deep.tif"
    Image.fromarray(deep).save(path)
    np.testing.assert_array_equal(only(path), deep)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_jpeg_and_bmp(tmp_path: Path, suffix: str) -> None:
    grey = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (16, 1))
    path = tmp_path / f"grey{suffix}"
    Image.fromarray(grey).save(path)
    image = only(path)
    assert image.shape == (16, 24)
    tolerance = 0 if suffix == ".bmp" else 8  # JPEG is lossy
    assert np.abs(image - grey).max() <= tolerance


def test_palette_png(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(10, 10, 3)).astype(np.uint8)
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).quantize(16).save(path)
    assert READER.header(path).photometric == "P"
    expected = luminance(np.asarray(Image.open(path).convert("RGB")))
    np.testing.assert_allclose(only(path), expected, atol=1e-3)


def test_header_does_not_decode(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(RNG.integers(0, 256, size=(64, 64)).astype(np.uint8)).save(path)
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:-600])
    header = READER.header(cut)  # the header is intact; the pixel stream is not
    assert (header.rows, header.columns) == (64, 64)
    with pytest.raises(CorruptFileError, match="page 0"):
        only(cut)


def test_registry_and_sniffing(tmp_path: Path) -> None:
    path = tmp_path / "misnamed.dcm"  # a PNG whatever the name says
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    assert sniff_raster(path.read_bytes()[:16]) == "PNG"
    assert read_header(path).format == "raster"
    assert [i for i, _ in iter_images(path)] == [0]
    gif = tmp_path / "anim.gif"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gif)
    with pytest.raises(UnsupportedFileError):
        read_header(gif)
    with pytest.raises(UnsupportedFileError):
        READER.header(gif)
