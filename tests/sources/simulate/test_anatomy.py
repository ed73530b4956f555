"""Volumes, tissue classes / pseudo-CT, and the parallel-beam projector."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from skimage.transform import radon

from hypermodal.sources.simulate import Projector, Tissue, build_anatomy, list_datasets, read_volume
from hypermodal.sources.simulate.anatomy import foreground, has_outline
from hypermodal.sources.simulate.volumes import volume_files
from tests.helpers import copy_into, nibabel_file


def test_volume_is_ras_with_header_spacing(epi_volume):
    assert epi_volume.data.shape == (128, 96, 24)  # first volume of the 4D file
    assert epi_volume.data.dtype == np.float32
    assert epi_volume.spacing == pytest.approx((2.0, 2.0, 2.2), abs=1e-4)


def test_list_datasets_labels_and_volume_files(tmp_path):
    copy_into(nibabel_file("example4d.nii.gz"), tmp_path / "epi")
    (tmp_path / "epi" / "dataset.json").write_text(json.dumps({"label": "MR"}))
    copy_into(nibabel_file("anatomical.nii"), tmp_path / "short")  # 25 slices: still a volume
    (tmp_path / "short" / "dataset.json").write_text(json.dumps({"modalities": {"MR": 25}}))
    copy_into(nibabel_file("functional.nii"), tmp_path / "thin")  # 3 slices: too few
    (tmp_path / "thin" / "dataset.json").write_text(json.dumps({"label": "MR", "phantom": False}))
    copy_into(nibabel_file("example4d.nii.gz"), tmp_path / "sim-drr.epi")  # an output: skipped
    found = {d.name: d for d in list_datasets(tmp_path)}
    assert set(found) == {"epi", "short", "thin"}
    assert found["short"].label == "MR"  # from the modalities when there is no label
    assert [len(volume_files(found[n])) for n in ("epi", "short", "thin")] == [1, 1, 0]


def test_mr_brain_gets_skull_outside_and_classes_inside(epi_volume, epi_anatomy):
    a = epi_anatomy
    assert a.rule == "mr-brain"  # EPI shows the brain only: the head is added around it
    fg = foreground(epi_volume.data, epi_volume.spacing)
    pad = [(s - n) // 2 for s, n in zip(a.hu.shape, fg.shape, strict=True)]  # the added room
    inside = a.tissue[tuple(slice(p, p + n) for p, n in zip(pad, fg.shape, strict=True))]
    assert set(np.unique(inside[fg])) <= {Tissue.GREY, Tissue.WHITE, Tissue.CSF}
    bone = a.tissue == Tissue.BONE
    assert bone.any() and (a.hu[bone] >= 700).all()
    assert (a.hu[a.tissue == Tissue.AIR] == -1000).all()
    # the skull encloses the brain in a mid slice: every ray from the centre crosses bone
    k = a.hu.shape[2] // 2
    mid = bone[:, :, k]
    cx, cy = (np.array(np.nonzero(a.tissue[:, :, k] == Tissue.GREY)).mean(axis=1)).astype(int)
    assert mid[:cx, cy].any() and mid[cx:, cy].any() and mid[cx, :cy].any() and mid[cx, cy:].any()


def test_crop_from_inside_a_head_has_no_outline():
    vol = read_volume(nibabel_file("anatomical.nii"), "anat", "MR")
    assert not has_outline(foreground(vol.data, vol.spacing))
    with pytest.raises(ValueError, match="no object outline"):
        build_anatomy(vol)


def test_plain_ct_keeps_hu(ct_volume):
    a = build_anatomy(ct_volume)
    assert a.rule == "ct"
    np.testing.assert_allclose(a.hu, np.clip(ct_volume.data, -1024, 3071))
    assert (a.tissue[ct_volume.data > 300] == Tissue.BONE).all()


def test_projector_matches_skimage_radon(ct_volume):
    img = ct_volume.data[:, :, 0] + 1000.0
    yy, xx = np.mgrid[:128, :128]
    img[(yy - 64) ** 2 + (xx - 64) ** 2 > 63**2] = 0  # radon's circle
    angles = [0.0, 20.0, 45.0, 90.0, 135.0, 170.0]
    ours = Projector((128, 128), angles, n_det=128, circle=True).forward(img[:, :, None])[:, :, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = radon(img, [a - 90.0 for a in angles], circle=True)  # our angle = theirs + 90
        mirrored = radon(img, [90.0 - a for a in angles], circle=True)  # the other handedness
    for i, angle in enumerate(angles):
        agree = np.corrcoef(ours[i], theirs[:, i])[0, 1]
        assert agree > 0.98
        assert ours[i].sum() == pytest.approx(theirs[:, i].sum(), rel=1e-3)
        if angle in (45.0, 135.0):  # obliques tell the conventions apart
            assert agree > np.corrcoef(ours[i], mirrored[:, i])[0, 1] + 0.03


def test_fbp_reconstructs_a_real_slice(ct_volume):
    img = np.clip(ct_volume.data[:, :, 0] + 1000.0, 0, None) / 1000.0
    yy, xx = np.mgrid[:128, :128]
    inside = (yy - 64) ** 2 + (xx - 64) ** 2 < 55**2
    img[~inside] = 0
    proj = Projector((128, 128), np.linspace(0, 180, 180, endpoint=False), 128, circle=True)
    rec = proj.fbp(proj.forward(img[:, :, None]), window="ramp")[:, :, 0]
    assert np.abs(rec[inside] - img[inside]).mean() < 0.05
    assert np.corrcoef(rec[inside], img[inside])[0, 1] > 0.97
