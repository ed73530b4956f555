"""PET simulated from real anatomy: activity per tissue, projection, counts, reconstruction.

:func:`simulate_pet` turns an :class:`~hypermodal.sources.simulate.anatomy.Anatomy` into a PET
volume in Bq/ml:

1. **Activity** (SUV) per tissue class (FDG-like: grey matter 6-10, white matter 2-3.5,
   soft tissue about 1, fat and bone below 1, CSF 0.2-0.5, air 0) plus a few hot spherical
   lesions; **attenuation** at 511 keV from the HU (water 0.0096 /mm).
2. The volume is resampled to the PET slice thickness (2-4 mm; at most ``max_slices`` slices,
   the slab with the most object) and, in plane, to a 128 x 128 simulation grid over the object.
3. Per axial slice, **forward projection** (parallel beam, 120 angles over 180 degrees:
   :class:`~hypermodal.sources.simulate.projector.Projector`), attenuation of each line of
   response, a uniform randoms-and-scatter background, and **Poisson counts** scaled so that a
   slice holds ``counts`` true events on average (``counts=None``: no noise).
4. **Reconstruction**: FBP (Hann-windowed ramp) of the corrected sinogram, or OSEM (a few
   iterations of ordered subsets on the Poisson model); negatives clipped to 0.
5. **PSF**: a Gaussian of 5-7 mm FWHM; then resampling to the output matrix (128, 192 or 200)
   and pixel (2-4 mm), and **SUV to Bq/ml** with the injected dose over the patient's weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from hypermodal.sources.simulate.anatomy import Anatomy, Tissue
from hypermodal.sources.simulate.projector import Projector

SIM_GRID = 128
N_ANGLES = 120
MU_WATER_511 = 0.0096  # /mm
MATRICES = (128, 192, 200)


@dataclass
class PetParams:
    """Every choice of one simulated PET acquisition (drawn by :func:`sample_pet_params`)."""

    matrix: int = 128
    pixel_mm: float = 2.5
    slice_mm: float = 3.0
    max_slices: int = 80
    counts: float | None = 1.0e6  # mean true events per slice; None: noise-free
    randoms: float = 0.25  # background events per LOR, as a fraction of the mean true rate
    recon: str = "OSEM"  # "OSEM" or "FBP"
    iterations: int = 3
    subsets: int = 8
    psf_fwhm_mm: float = 6.0
    dose_mbq: float = 300.0
    weight_kg: float = 75.0
    suv: dict[str, float] = field(
        default_factory=lambda: {
            "GREY": 8.0,
            "WHITE": 2.8,
            "CSF": 0.3,
            "SOFT": 1.0,
            "FAT": 0.4,
            "BONE": 0.6,
        }
    )
    lesions: int = 2
    offset_mm: tuple[float, float] = (0.0, 0.0)  # object centre off the scanner axis

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PetVolume:
    """A simulated PET volume: ``values`` (x, y, z) in Bq/ml on the output grid."""

    values: np.ndarray  # float32 (matrix, matrix, n_slices), RAS+ axes
    pixel_mm: float
    slice_mm: float
    params: PetParams
    lesions: list[dict[str, float]] = field(default_factory=list)

    @property
    def bq_per_suv(self) -> float:
        return self.params.dose_mbq * 1e6 / (self.params.weight_kg * 1000.0)


def sample_pet_params(rng: np.random.Generator) -> PetParams:
    """Draw one acquisition: geometry, count level, reconstruction, tracer uptake."""
    matrix = int(rng.choice(MATRICES))
    if rng.random() < 0.6:  # a brain protocol: the smallest pixels, the head fills the field
        pixel = float(rng.uniform(2.0, 2.6))
    else:  # a whole-body protocol (field up to 70-80 cm)
        pixel = float(rng.uniform(2.0, 4.0)) if matrix == 128 else float(rng.uniform(2.6, 4.0))
    return PetParams(
        matrix=matrix,
        pixel_mm=round(pixel, 4),
        slice_mm=round(float(rng.choice([2.0, 2.027, 2.5, 3.0, 3.27, 4.0])), 3),
        counts=float(np.exp(rng.uniform(np.log(1e5), np.log(3e6)))),
        randoms=float(rng.uniform(0.1, 0.5)),
        recon=str(rng.choice(["OSEM", "FBP"], p=[0.7, 0.3])),
        iterations=int(rng.integers(2, 5)),
        subsets=int(rng.choice([4, 8, 12])),
        psf_fwhm_mm=float(rng.uniform(5.0, 7.0)),
        dose_mbq=float(rng.uniform(150, 400)),
        weight_kg=float(rng.uniform(50, 100)),
        suv={
            "GREY": float(rng.uniform(6, 10)),
            "WHITE": float(rng.uniform(2, 3.5)),
            "CSF": float(rng.uniform(0.2, 0.5)),
            "SOFT": float(rng.uniform(0.7, 1.4)),
            "FAT": float(rng.uniform(0.3, 0.6)),
            "BONE": float(rng.uniform(0.4, 0.9)),
        },
        lesions=int(rng.integers(0, 4)),
        offset_mm=(float(rng.uniform(-15, 15)), float(rng.uniform(-15, 15))),
    )


@lru_cache(maxsize=2)
def pet_projector(n: int = SIM_GRID, n_angles: int = N_ANGLES) -> Projector:
    """The scanner model: ``n`` x ``n`` slices, ``n_angles`` angles over 180 degrees."""
    return Projector((n, n), np.linspace(0.0, 180.0, n_angles, endpoint=False), n, circle=True)


def activity_and_mu(anatomy: Anatomy, params: PetParams) -> tuple[np.ndarray, np.ndarray]:
    """SUV per voxel (by tissue class) and the 511 keV attenuation (/mm) from the HU."""
    lut = np.zeros(len(Tissue), np.float32)
    for name, value in params.suv.items():
        lut[Tissue[name]] = value
    activity = lut[anatomy.tissue]
    hu = anatomy.hu
    mu = np.where(hu <= 0, MU_WATER_511 * (1 + hu / 1000.0), MU_WATER_511 + hu * 6.4e-6)
    return activity, np.clip(mu, 0, None).astype(np.float32)


def _slab(weight: np.ndarray, dz: float, params: PetParams) -> tuple[float, int]:
    """Start (mm along z) and slice count of the slab of PET slices with the most object.

    The slab is never longer than the object (slices with object in them) nor than
    ``max_slices`` slices.
    """
    nz_src = weight.shape[0]
    present = np.nonzero(weight > 0.02 * weight.max())[0]
    first, last = (int(present[0]), int(present[-1]) + 1) if present.size else (0, nz_src)
    n = max(1, min(params.max_slices, int((last - first) * dz / params.slice_mm)))
    span = n * params.slice_mm
    starts = np.arange(0.0, max(nz_src * dz - span, 0.0) + 1e-6, dz)
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    best = max(starts, key=lambda s: cum[min(nz_src, int((s + span) / dz))] - cum[int(s / dz)])
    return float(best), n


def _to_sim_grid(
    vols: list[np.ndarray], anatomy: Anatomy, params: PetParams
) -> tuple[list[np.ndarray], float, np.ndarray]:
    """Resample volumes to the simulation grid; returns them, its pixel, and its centre (mm)."""
    sx, sy, sz = anatomy.spacing
    body = anatomy.body
    idx = np.argwhere(body[:, :, :: max(1, body.shape[2] // 40)])
    lo, hi = idx.min(axis=0)[:2], idx.max(axis=0)[:2]
    centre = (lo + hi) / 2 * np.array([sx, sy])
    diameter = float(np.hypot((hi[0] - lo[0]) * sx, (hi[1] - lo[1]) * sy)) + 30.0
    fov = min(params.matrix * params.pixel_mm, diameter)
    pixel = fov / SIM_GRID
    z0, nz = _slab(body.sum(axis=(0, 1)).astype(np.float64), sz, params)
    scale = np.array([pixel / sx, pixel / sy, params.slice_mm / sz])
    offset = np.array(
        [
            (centre[0] - fov / 2 + pixel / 2) / sx,
            (centre[1] - fov / 2 + pixel / 2) / sy,
            (z0 + params.slice_mm / 2) / sz - 0.5,
        ]
    )
    shape = (SIM_GRID, SIM_GRID, nz)
    out = []
    for v in vols:
        # anti-aliasing before a coarser grid: a box as wide as the new voxel
        size = [max(1, int(round(f))) for f in scale]
        src = ndimage.uniform_filter(v, size) if max(size) > 1 else v
        out.append(
            ndimage.affine_transform(src, scale, offset, output_shape=shape, order=1, cval=0.0)
        )
    return out, pixel, centre


def _add_lesions(activity: np.ndarray, pixel: float, params: PetParams, rng: np.random.Generator):
    """Hot spheres (3-8 mm radius, 2-5x the local uptake) at random voxels with uptake."""
    found = []
    candidates = np.argwhere(activity > 0.5)
    for _ in range(params.lesions if candidates.size else 0):
        c = candidates[int(rng.integers(len(candidates)))]
        radius = float(rng.uniform(3.0, 8.0))
        factor = float(rng.uniform(2.0, 5.0))
        r = int(np.ceil(radius / min(pixel, params.slice_mm))) + 1
        sl = tuple(slice(max(0, c[i] - r), c[i] + r + 1) for i in range(3))
        grids = np.meshgrid(
            *[np.arange(s.start, min(s.stop, activity.shape[i])) for i, s in enumerate(sl)],
            indexing="ij",
        )
        dist = np.sqrt(
            ((grids[0] - c[0]) * pixel) ** 2
            + ((grids[1] - c[1]) * pixel) ** 2
            + ((grids[2] - c[2]) * params.slice_mm) ** 2
        )
        block = activity[sl]
        local = float(activity[tuple(c)])
        block[dist <= radius] = max(local, 1.0) * factor
        found.append({"x": int(c[0]), "y": int(c[1]), "z": int(c[2]), "radius_mm": radius})
    return found


def _reconstruct(
    y: np.ndarray, att: np.ndarray, k: float, r: np.ndarray, proj: Projector, params: PetParams
) -> np.ndarray:
    """Activity (SUV) from counts ``y``: FBP of the corrected sinogram, or OSEM."""
    if params.recon == "FBP":
        corrected = (y - r) / (k * att)
        return proj.fbp(corrected)
    nz = y.shape[2]
    x = np.ones((SIM_GRID * SIM_GRID, nz), np.float32)
    flat_y, flat_att, flat_r = (a.reshape(-1, nz) for a in (y, att, r))
    subsets = proj.subsets(params.subsets)
    sens = [part_t @ (k * flat_att[ids]) for _, part_t, ids in subsets]
    for _ in range(params.iterations):
        for (part, part_t, ids), s in zip(subsets, sens, strict=True):
            expected = k * flat_att[ids] * (part @ x) + flat_r[ids]
            ratio = flat_y[ids] / np.maximum(expected, 1e-6)
            x *= (part_t @ (k * flat_att[ids] * ratio)) / np.maximum(s, 1e-6)
    return x.reshape(SIM_GRID, SIM_GRID, nz)


def simulate_pet(anatomy: Anatomy, params: PetParams, rng: np.random.Generator) -> PetVolume:
    """One PET volume (Bq/ml, RAS+ axes) of ``anatomy`` (see the module doc for the steps)."""
    activity, mu = activity_and_mu(anatomy, params)
    (activity, mu), pixel, _ = _to_sim_grid([activity, mu], anatomy, params)
    lesions = _add_lesions(activity, pixel, params, rng)
    proj = pet_projector()
    true = proj.forward(activity)  # in pixel units, as the reconstruction expects
    att = np.exp(-proj.forward(mu) * np.float32(pixel)).astype(np.float32)
    nz = activity.shape[2]
    signal = true * att
    total = float(signal.sum())
    k = (params.counts if params.counts is not None else 1e6) * nz / max(total, 1e-9)
    r = np.full(signal.shape, params.randoms * k * total / signal.size, np.float32)
    expected = (k * signal + r).astype(np.float64)
    y = (rng.poisson(expected) if params.counts is not None else expected).astype(np.float32)
    recon = np.clip(_reconstruct(y, att, k, r, proj, params), 0, None)
    sigma = params.psf_fwhm_mm / 2.3548
    recon = ndimage.gaussian_filter(recon, (sigma / pixel, sigma / pixel, sigma / params.slice_mm))
    values = _to_output(recon, pixel, params) * np.float32(params.dose_mbq * 1e3 / params.weight_kg)
    return PetVolume(
        values=np.clip(values, 0, None).astype(np.float32),
        pixel_mm=params.pixel_mm,
        slice_mm=params.slice_mm,
        params=params,
        lesions=lesions,
    )


def _to_output(recon: np.ndarray, pixel: float, params: PetParams) -> np.ndarray:
    """Place the simulation grid in the output matrix (centred, shifted by ``offset_mm``)."""
    m, out_px = params.matrix, params.pixel_mm
    scale = out_px / pixel
    centre_sim = (SIM_GRID - 1) / 2
    centre_out = (m - 1) / 2
    shift = np.array(params.offset_mm) / out_px
    offset = [
        centre_sim - (centre_out + shift[0]) * scale,
        centre_sim - (centre_out + shift[1]) * scale,
    ]
    out = np.empty((m, m, recon.shape[2]), np.float32)
    for k in range(recon.shape[2]):
        out[:, :, k] = ndimage.affine_transform(
            recon[:, :, k], (scale, scale), offset, output_shape=(m, m), order=1, cval=0.0
        )
    return out
