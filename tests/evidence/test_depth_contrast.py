"""The depth contrast (where an object's brightest tissue lies) on real brain volumes.

Value statistics cannot tell an 8-bit T1 template from a brain-windowed CT: both are a smooth
brain on a zero background. Where the brighter tissue lies can: grey matter (the surface) is the
brighter in CT, white matter (the inside) in a T1 MR.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hypermodal.evidence import STAT_NAMES, image_stats
from hypermodal.evidence.features import depth_contrast
from hypermodal.sources.samples import gather_samples

REPO = Path(__file__).resolve().parents[2]
DEPTH = STAT_NAMES.index("depth_contrast")


@pytest.fixture(scope="module")
def brains(tmp_path_factory) -> dict[str, np.ndarray]:
    """The real CT brain atlas (TotalSegmentator) and MNI152 T1 template (nilearn), from their
    wheels."""
    out = tmp_path_factory.mktemp("brains")
    gather_samples(
        out,
        cache_dir=REPO / ".cache" / "wheels",
        packages=["nilearn", "totalsegmentator"],
        progress=False,
    )
    volumes = {}
    for name in ("totalsegmentator.ct-brain-atlas", "nilearn.mni152-2009a-t1"):
        (path,) = (out / name).glob("*.nii.gz")
        volumes[name] = np.asarray(nib.load(path).dataobj)
    return volumes


def _middle_slices(volume: np.ndarray) -> list[np.ndarray]:
    z = volume.shape[2]
    return [volume[:, :, k].astype(np.float32) for k in range(z // 3, 2 * z // 3, 6)]


def test_ct_brain_is_bright_at_its_surface_and_t1_inside(brains):
    ct = [image_stats(s)[DEPTH] for s in _middle_slices(brains["totalsegmentator.ct-brain-atlas"])]
    t1 = [image_stats(s)[DEPTH] for s in _middle_slices(brains["nilearn.mni152-2009a-t1"])]
    assert np.median(ct) < -0.4  # grey matter (cortex) brighter than white matter
    assert np.median(t1) > 0.0  # white matter brighter than grey
    assert np.percentile(t1, 25) > np.percentile(ct, 75)  # the two barely overlap
    # a display window of the same CT (values mapped to 0..255) says the same: ranks only
    slab = _middle_slices(brains["totalsegmentator.ct-brain-atlas"])[3]
    windowed = np.clip((slab - 0.0) / 80.0 * 255.0, 0, 255).round()
    assert image_stats(windowed)[DEPTH] == pytest.approx(image_stats(slab)[DEPTH], abs=0.1)


def test_degenerate_images_give_nan_or_a_number_never_an_error():
    grid = np.zeros((64, 64))
    assert np.isnan(depth_contrast(grid, 0.0, 0.0))  # constant: no object
    tiny = grid.copy()
    tiny[10:13, 10:13] = 5.0
    assert np.isnan(depth_contrast(tiny, 0.0, 5.0))  # an object of 9 pixels
    flat = grid.copy()
    flat[8:56, 8:56] = 5.0
    assert np.isnan(depth_contrast(flat, 0.0, 5.0))  # one value: no brighter half
    flat[30:34, 30:34] = 6.0
    flat[8:24, 8:56] = 5.5  # a brighter rim on one side, 16 deep pixels brighter still
    assert -1.0 <= depth_contrast(flat, 0.0, 6.0) <= 1.0
    noisy = np.random.default_rng(0).normal(100, 10, (64, 64))
    noisy[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning
        value = depth_contrast(noisy, 70.0, 130.0)
    assert -1.0 <= value <= 1.0


def test_hole_filling_equals_scipys(brains):
    from scipy import ndimage

    from hypermodal.evidence.features import _fill_holes

    rng = np.random.default_rng(0)
    masks = [
        rng.random((rng.integers(1, 50), rng.integers(1, 50))) > rng.random() for _ in range(200)
    ]
    for volume in brains.values():  # real slices: a ventricle is a hole, the air outside is not
        masks += [volume[:, :, k] > t for k in (60, 90, 120) for t in (0, 20, 100)]
    for mask in masks:
        np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))
