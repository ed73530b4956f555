import numpy as np
import pytest

from hypermodal.preprocess import PreprocessConfig, resize, to_uint8


def test_minmax_per_image_uses_full_range():
    img = np.linspace(-1000, 3000, 512 * 512, dtype=np.float32).reshape(512, 512)
    out = to_uint8(img)
    assert out.shape == (224, 224) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255


def test_scaling_ignores_absolute_intensity():
    rng = np.random.default_rng(0)
    img = rng.random((100, 120)).astype(np.float32)
    np.testing.assert_array_equal(to_uint8(img), to_uint8(img * 4000 - 1024))


def test_constant_and_non_finite_images():
    assert not to_uint8(np.full((50, 50), 7.0)).any()
    img = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    img[0, 0] = np.nan
    img[1, 1] = np.inf
    out = to_uint8(img, PreprocessConfig(size=64))
    assert np.isfinite(out).all() and out.max() == 255


def test_exact_halving_matches_area_interpolation():
    import cv2

    rng = np.random.default_rng(1)
    img = rng.random((896, 896)).astype(np.float32)
    ref = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(resize(img, 224), ref, atol=1e-5)
    np.testing.assert_allclose(resize(img, 224, "area"), ref, atol=1e-5)


def test_fast_resize_stays_close_to_area_on_smooth_images():
    import cv2

    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    img = np.sin(xx / 23.0) * np.cos(yy / 31.0) * 1000
    ref = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(resize(img, 224) - ref).max() < 0.02 * 2000


def test_non_square_images_reduce_per_side():
    img = np.ones((2000, 300), np.float32)
    assert resize(img, 224).shape == (224, 224)
    with pytest.raises(ValueError, match="interpolation"):
        resize(img, 224, "cubic-magic")


def test_upsampling_small_images_and_rejecting_3d():
    assert resize(np.ones((16, 16), np.float32), 224).shape == (224, 224)
    with pytest.raises(ValueError, match="2D"):
        resize(np.ones((2, 16, 16), np.float32), 32)
