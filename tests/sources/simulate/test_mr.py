"""Simulated MR exports of a real MR volume: 8-bit, skull-stripped 8-bit, scaled, standardised,
and a functional-run grid."""

from __future__ import annotations

import numpy as np
import pytest

from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate.ct import write_ct_nifti
from hypermodal.sources.simulate.mr import KINDS, simulate_mr


def test_eight_bit_exports_span_the_byte_range(epi_volume, epi_anatomy):
    full = simulate_mr(epi_volume, "uint8", np.random.default_rng(0), epi_anatomy)
    assert full.values.dtype == np.uint8 and full.values.max() == 255 and full.values.min() == 0
    assert full.values.shape == epi_volume.data.shape  # 24 slices: all kept
    brain = simulate_mr(epi_volume, "brain-uint8", np.random.default_rng(0), epi_anatomy)
    assert brain.values.dtype == np.uint8
    # skull-stripped: more background at zero than the full head, and the brain itself kept
    assert (brain.values == 0).mean() > (full.values == 0).mean()
    assert (brain.values > 0).mean() > 0.05


def test_scaled_and_standardised_keep_the_anatomy_not_the_scale(epi_volume, epi_anatomy):
    src = epi_volume.data
    for seed in range(3):
        scaled = simulate_mr(epi_volume, "scaled", np.random.default_rng(seed), epi_anatomy)
        assert scaled.values.dtype == np.float32 and scaled.values.min() >= 0
        # a linear map of the source: perfectly correlated with it
        r = np.corrcoef(scaled.values.ravel(), src.ravel())[0, 1]
        assert r > 0.999
    z = simulate_mr(epi_volume, "zscore", np.random.default_rng(0), epi_anatomy)
    assert z.values.dtype == np.float32 and z.values.min() < 0 < z.values.max()
    assert abs(float(np.median(z.values[z.values > z.values.min()]))) < 3


def test_epi_grid_is_coarse_and_noisy(epi_volume, epi_anatomy):
    for seed in range(3):
        epi = simulate_mr(epi_volume, "epi", np.random.default_rng(seed), epi_anatomy)
        assert epi.values.shape[0] == epi.values.shape[1] in (64, 80, 96)
        assert 3.0 <= epi.spacing[0] <= 4.0 and 3.0 <= epi.spacing[2] <= 5.0
        assert epi.values.dtype == np.int16 and epi.values.min() >= 0  # magnitude: Rician
        corner = epi.values[:8, :8]
        assert corner.std() > 0  # noise in the background, as a magnitude image has


def test_refuses_ct_and_unknown_kinds(epi_volume, ct_volume):
    with pytest.raises(ValueError, match="unknown MR export"):
        simulate_mr(epi_volume, "jpeg", np.random.default_rng(0))
    with pytest.raises(ValueError, match="from MR volumes"):
        simulate_mr(ct_volume, "uint8", np.random.default_rng(0))


def test_every_kind_writes_a_readable_header_free_nifti(epi_volume, epi_anatomy, tmp_path):
    for kind in KINDS:
        vol = simulate_mr(epi_volume, kind, np.random.default_rng(1), epi_anatomy)
        a = write_ct_nifti(tmp_path / f"{kind}-a.nii.gz", vol, "x")
        again = simulate_mr(epi_volume, kind, np.random.default_rng(1), epi_anatomy)
        b = write_ct_nifti(tmp_path / f"{kind}-b.nii.gz", again, "x")
        assert a.read_bytes() == b.read_bytes()  # same seed, same bytes
        header = read_header(a)
        assert header.format == "nifti" and header.modality is None
        assert header.num_images == vol.values.shape[2]
        _, first = next(iter_images(a))
        assert np.isfinite(first).all()


def test_template_export_is_a_smooth_eight_bit_brain(epi_volume, epi_anatomy):
    brain = simulate_mr(epi_volume, "brain-uint8", np.random.default_rng(0), epi_anatomy)
    template = simulate_mr(epi_volume, "template", np.random.default_rng(0), epi_anatomy)
    assert template.values.dtype == np.uint8
    # the same background as the skull-stripped export, its top below the byte range's
    assert ((template.values == 0) == (brain.values == 0)).mean() > 0.95
    assert 190 <= template.values.max() <= 255
    inside = brain.values > 0

    def roughness(v):
        return np.median(np.abs(np.diff(v.astype(float), axis=0))[inside[1:] & inside[:-1]])

    assert roughness(template.values) < roughness(brain.values)
