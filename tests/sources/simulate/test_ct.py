"""Simulated CT exports: HU volumes, windowed and skull-stripped windowed volumes, templates."""

from __future__ import annotations

import numpy as np
import pytest

from hypermodal.evidence import STAT_NAMES, image_stats
from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate.anatomy import Tissue
from hypermodal.sources.simulate.ct import CT_EXPORT_WINDOWS, simulate_ct, write_ct_nifti
from hypermodal.sources.simulate.jobs import Settings, write_ct_dataset


def test_hu_export_keeps_hounsfield_units(ct_volume):
    from hypermodal.sources.simulate import build_anatomy

    anatomy = build_anatomy(ct_volume)
    ct = simulate_ct(anatomy, "hu", np.random.default_rng(0), max_slices=10)
    assert ct.values.dtype == np.int16 and ct.values.shape[2] == 10
    air = anatomy.tissue[:, :, :10] == Tissue.AIR
    assert ct.values[air].max() <= -400  # air and lung (the class is HU < -400) keep their HU
    bone = anatomy.tissue[:, :, :10] == Tissue.BONE
    assert np.median(ct.values[bone]) > 200


def test_windowed_exports_map_the_window_to_zero_width(epi_anatomy):
    for seed in range(4):
        ct = simulate_ct(epi_anatomy, "window", np.random.default_rng(seed))
        widths = [w for _, w in CT_EXPORT_WINDOWS]
        assert ct.values.min() >= 0 and ct.values.max() <= max(widths)
    stripped = simulate_ct(epi_anatomy, "brain-window", np.random.default_rng(1))
    lo = max(0, (epi_anatomy.hu.shape[2] - 60) // 2)
    tissue = epi_anatomy.tissue[:, :, lo : lo + 60]
    outside = ~np.isin(tissue, (Tissue.GREY, Tissue.WHITE, Tissue.CSF))
    assert (stripped.values[outside] == 0).all()  # skull, scalp and air removed
    assert (stripped.values[~outside] > 0).mean() > 0.5


def test_unknown_kind_is_refused(epi_anatomy):
    with pytest.raises(ValueError, match="unknown CT export"):
        simulate_ct(epi_anatomy, "jpeg", np.random.default_rng(0))


def test_written_volume_reads_back_and_is_deterministic(epi_anatomy, tmp_path):
    a = write_ct_nifti(
        tmp_path / "a.nii.gz", simulate_ct(epi_anatomy, "hu", np.random.default_rng(3)), "x"
    )
    b = write_ct_nifti(
        tmp_path / "b.nii.gz", simulate_ct(epi_anatomy, "hu", np.random.default_rng(3)), "x"
    )
    assert a.read_bytes() == b.read_bytes()
    header = read_header(a)
    assert header.format == "nifti" and header.modality is None
    _, first = next(iter_images(a))
    assert first.min() >= -1024


def test_template_export_is_a_smooth_skull_stripped_hu_brain(epi_anatomy):
    template = simulate_ct(epi_anatomy, "template", np.random.default_rng(2))
    hu = simulate_ct(epi_anatomy, "hu", np.random.default_rng(2))
    assert template.values.dtype == np.int16
    lo = max(0, (epi_anatomy.hu.shape[2] - 60) // 2)
    tissue = epi_anatomy.tissue[:, :, lo : lo + 60]
    brain = np.isin(tissue, (Tissue.GREY, Tissue.WHITE, Tissue.CSF))
    assert (template.values[~brain] == 0).all()  # skull, scalp and air removed
    # still Hounsfield units: the brain sits between water and blood, not at a display scale
    assert 0 <= np.median(template.values[brain]) <= 80

    def roughness(v):  # an average of many scans: far smoother than one noisy scan
        return np.median(np.abs(np.diff(v.astype(float), axis=0))[brain[1:] & brain[:-1]])

    assert roughness(template.values) < roughness(hu.values)
    # grey matter (the surface) brighter than white matter (inside), as in a real CT atlas
    middle = template.values[:, :, template.values.shape[2] // 2].astype(np.float32)
    assert image_stats(middle)[STAT_NAMES.index("depth_contrast")] < -0.3


def test_templates_keep_every_slice_other_exports_the_middle(epi_anatomy, tmp_path):
    settings = Settings.for_scale(seed=0, scale=0.15)  # pet_max_slices 12: 6 per export
    written = write_ct_dataset(
        tmp_path, "sim-ct.x", [("v", epi_anatomy)], "x", "HEAD", settings, np.random.default_rng(0)
    )
    slices = {p.name: read_header(p).num_images for p in sorted(tmp_path.glob("*.nii.gz"))}
    assert slices["ct-01-template.nii.gz"] == epi_anatomy.hu.shape[2] == 40  # an atlas is whole
    assert {n: s for n, s in slices.items() if "template" not in n} == {
        "ct-01-hu.nii.gz": 6, "ct-01-window.nii.gz": 6, "ct-01-brain-window.nii.gz": 6
    }  # fmt: skip
    assert written.images == sum(slices.values())
