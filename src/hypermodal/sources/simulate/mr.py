"""MR volumes as people store and export them, from the real MR volumes of the corpus.

MR has no calibrated scale: the same anatomy reaches an archive as scanner integers, as an 8-bit
conformed or template volume, as floats after normalisation, or as a coarse functional run.
Each simulated MR volume is one of these exports of a real MR volume (its own intensities,
never a model of them), all NIfTI (no header claim):

* ``uint8`` — robust rescale (0.5–99.5 percentile) to 0..255, stored as uint8, as conformed
  volumes (FreeSurfer's ``T1.mgz`` converted) and 8-bit templates are;
* ``brain-uint8`` — like ``uint8`` but skull-stripped (the brain classes of the anatomy, or the
  object itself for a brain-only source), as ``brain.mgz``-style exports are;
* ``template`` — like ``brain-uint8`` but smoothed (Gaussian, 0.8–2 voxels) and rescaled to a
  top of 200–255, as 8-bit brain templates (averages such as MNI152) are;
* ``scaled`` — float32 times a random factor 10^U(-3, 1), as bias-corrected or max-normalised
  volumes are;
* ``zscore`` — float32 standardised over the object (background at its own value), as
  network inputs are;
* ``epi`` — resampled to a functional matrix (64–96 in-plane, 3–4 mm voxels, 3–5 mm slices),
  with Rician noise, as fMRI/DWI runs are.

At most ``max_slices`` axial slices from the middle of the volume are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hypermodal.sources.simulate.anatomy import Anatomy, Tissue, foreground
from hypermodal.sources.simulate.volumes import SourceVolume

KINDS = ("uint8", "brain-uint8", "template", "scaled", "zscore", "epi")
BRAIN = (Tissue.GREY, Tissue.WHITE, Tissue.CSF)


@dataclass(frozen=True)
class MrVolume:
    values: np.ndarray  # (x, y, z), the stored values
    spacing: tuple[float, float, float]
    kind: str


def _middle(data: np.ndarray, max_slices: int) -> slice:
    nz = data.shape[2]
    lo = max(0, (nz - max_slices) // 2)
    return slice(lo, lo + max_slices)


def _brain_mask(vol: SourceVolume, anatomy: Anatomy | None) -> np.ndarray:
    """The brain: the anatomy's brain classes when it is on the source grid, else the object."""
    if anatomy is not None and anatomy.tissue.shape == vol.data.shape and anatomy.rule == "mr-head":
        return np.isin(anatomy.tissue, BRAIN)
    return foreground(vol.data, vol.spacing)


def _to_uint8(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = np.percentile(data, [0.5, float(rng.uniform(99.0, 99.9))])
    scaled = np.clip((data - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) * 255.0
    return np.round(scaled).astype(np.uint8)


def _epi(
    data: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A functional-run grid: coarse voxels, blur, Rician noise, scanner-like integers."""
    pixel = float(rng.uniform(3.0, 4.0))
    thick = float(rng.uniform(3.0, 5.0))
    target = (pixel, pixel, thick)
    zoom = [s / t for s, t in zip(spacing, target, strict=True)]
    matrix = int(rng.choice((64, 80, 96)))
    smooth = ndimage.gaussian_filter(data, [max(0.0, 0.5 / z - 0.5) for z in zoom])
    coarse = ndimage.zoom(smooth, zoom, order=1)
    out = np.zeros((matrix, matrix, coarse.shape[2]), np.float32)
    nx, ny = min(matrix, coarse.shape[0]), min(matrix, coarse.shape[1])
    ox, oy = (matrix - nx) // 2, (matrix - ny) // 2
    cx, cy = (coarse.shape[0] - nx) // 2, (coarse.shape[1] - ny) // 2
    out[ox : ox + nx, oy : oy + ny] = coarse[cx : cx + nx, cy : cy + ny]
    peak = float(np.percentile(out, 99)) or 1.0
    sigma = peak * float(rng.uniform(0.01, 0.04))
    real = out + rng.normal(0.0, sigma, out.shape)
    imag = rng.normal(0.0, sigma, out.shape)
    magnitude = np.sqrt(real**2 + imag**2)
    scale = float(rng.uniform(500.0, 3000.0)) / peak
    return np.round(magnitude * scale).astype(np.int16), target


def simulate_mr(
    vol: SourceVolume,
    kind: str,
    rng: np.random.Generator,
    anatomy: Anatomy | None = None,
    max_slices: int = 60,
) -> MrVolume:
    """One exported MR volume of ``kind`` (:data:`KINDS`) from the real MR volume ``vol``."""
    if kind not in KINDS:
        raise ValueError(f"unknown MR export {kind!r}; expected one of {KINDS}")
    if vol.kind != "MR":
        raise ValueError(f"{vol.path}: MR exports are made from MR volumes, not {vol.kind}")
    data = np.asarray(vol.data, np.float32)
    data = np.where(np.isfinite(data), data, 0.0)
    keep = _middle(data, max_slices)
    if kind == "epi":
        values, spacing = _epi(data[:, :, keep], vol.spacing, rng)
        return MrVolume(values, spacing, kind)
    if kind in ("brain-uint8", "template"):
        mask = _brain_mask(vol, anatomy)
        data = np.where(mask, data, float(np.percentile(data[~mask], 1)) if (~mask).any() else 0.0)
        if kind == "template":
            data = ndimage.gaussian_filter(data, float(rng.uniform(0.8, 2.0)))
        values = _to_uint8(data, rng)
        if kind == "template":
            values = np.round(values * rng.uniform(200.0, 255.0) / 255.0)
        values = np.where(mask, values, 0).astype(np.uint8)
    elif kind == "uint8":
        values = _to_uint8(data, rng)
    elif kind == "scaled":
        lo = float(np.percentile(data, 0.5))
        values = ((data - min(lo, 0.0)) * 10.0 ** rng.uniform(-3.0, 1.0)).astype(np.float32)
    else:  # zscore
        mask = foreground(data, vol.spacing)
        mean, std = float(data[mask].mean()), float(data[mask].std()) or 1.0
        values = ((data - mean) / std).astype(np.float32)
    return MrVolume(values[:, :, keep], vol.spacing, kind)
