"""Simulated CT exports: HU volumes, windowed and skull-stripped windowed volumes."""

from __future__ import annotations

import numpy as np
import pytest

from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate.anatomy import Tissue
from hypermodal.sources.simulate.ct import CT_EXPORT_WINDOWS, simulate_ct, write_ct_nifti


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
