"""Digitally reconstructed radiographs (DRRs): projection X-rays simulated from a CT-like volume.

The physics, per view (:func:`render_drr`):

1. **Attenuation.** ``mu = mu_water * (1 + HU / 1000)``, clipped at 0 (``mu_water`` about
   0.02 /mm at 60 keV); denser than water (HU > 0) gets ``bone_boost`` more (bone absorbs
   relatively more at low tube voltage).
2. **Line integrals** through the volume along the beam, for a rotation ``angle`` about the
   patient's long axis (0 AP, 180 PA, 90 / 270 lateral, others oblique), by the parallel-beam
   :class:`~hypermodal.sources.simulate.projector.Projector` over the axial slices.
3. **Detector grid.** The projection is resampled to a detector pixel of ``pixel_mm``
   (0.1-0.2 mm) after a geometric ``magnification``, with the long side 1000-3000 pixels.
4. **Transmission and noise.** ``I = I0 * gain * (exp(-integral) + scatter)``, scatter a
   wide blur of the primary, ``gain`` a heel-effect ramp; Poisson photon counts on ``I0``
   photons (normal approximation above 30 counts) plus electronic noise; a Gaussian detector PSF.
5. **Log and processing.** ``log(I0 / I)`` (high where attenuation is high), windowed between
   percentiles of the body (the part above Otsu's threshold; direct exposure goes black), a
   tone curve (gamma), optional unsharp masking, scaled into 12 bits (0..4095). Bone is bright
   in MONOCHROME2; MONOCHROME1 stores ``4095 - value``.
6. **Collimation, crop, marker.** A rectangular field with the rest blank (white: unexposed,
   or black: electronic shutter), a random crop, a burned-in lead marker letter (L / R).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from hypermodal.sources.simulate.anatomy import Anatomy
from hypermodal.sources.simulate.projector import Projector

#: view name -> rotation (degrees) about the long axis
VIEWS = {"AP": 0.0, "PA": 180.0, "LL": 90.0, "RL": 270.0}
MAX_STORED = 4095  # 12 bits
MU_WATER = 0.02  # /mm at about 60 keV


@dataclass
class DrrParams:
    """Every random choice of one radiograph (drawn by :func:`sample_drr_params`)."""

    view: str = "AP"
    angle: float = 0.0
    modality: str = "DX"
    photometric: str = "MONOCHROME2"
    mu_water: float = MU_WATER
    bone_boost: float = 0.3
    magnification: float = 1.1
    pixel_mm: float = 0.15
    margin_mm: tuple[float, float, float, float] = (20.0, 20.0, 20.0, 20.0)  # top bottom l r
    photons: float = 2000.0
    scatter: float = 0.15
    scatter_sigma_mm: float = 40.0
    heel: float = 0.05
    electronic: float = 2.0
    psf_px: float = 1.0
    window: tuple[float, float] = (0.5, 99.7)  # percentiles of the log signal in the body
    toe: float = 0.2  # the window starts this fraction of its width below the body
    gamma: float = 1.0
    unsharp: float = 0.0
    unsharp_mm: float = 8.0
    out_range: tuple[int, int] = (0, MAX_STORED)
    field: tuple[float, float, float, float] | None = None  # collimator: top bottom left right
    blank_white: bool = True
    crop: tuple[float, float, float, float] | None = None  # fractions cut: top bottom left right
    marker: str | None = None
    flip: bool = False
    long_side: tuple[int, int] = (1000, 3000)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DrrImage:
    """One simulated radiograph: stored pixels and what a DICOM header needs."""

    pixels: np.ndarray  # uint16 (rows, columns), stored values (MONOCHROME1 already inverted)
    pixel_mm: float
    params: DrrParams
    kvp: float = 70.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> np.ndarray:
        """Values as displayed: high = dense (stored values mirrored back for MONOCHROME1)."""
        if self.params.photometric == "MONOCHROME1":
            return (MAX_STORED - self.pixels.astype(np.int32)).astype(np.uint16)
        return self.pixels


def sample_drr_params(rng: np.random.Generator, view: str | None = None) -> DrrParams:
    """Draw one radiograph's settings: a view (or oblique angle) and every detector choice."""
    if view is None:
        view = str(rng.choice(["AP", "PA", "LL", "RL", "OBL"], p=[0.3, 0.2, 0.2, 0.15, 0.15]))
    angle = VIEWS.get(view, float(rng.choice([30, 45, 60, 120, 135, 150]) + rng.uniform(-5, 5)))
    crop = tuple(rng.uniform(0, 0.12, 4)) if rng.random() < 0.4 else None
    field_ = tuple(rng.uniform(0.03, 0.15, 4)) if rng.random() < 0.5 else None
    lo, hi = int(rng.integers(0, 250)), int(rng.integers(3500, MAX_STORED + 1))
    return DrrParams(
        view=view,
        angle=angle,
        modality=str(rng.choice(["DX", "CR"])),
        photometric=str(rng.choice(["MONOCHROME1", "MONOCHROME2"], p=[0.4, 0.6])),
        mu_water=float(rng.uniform(0.018, 0.023)),
        bone_boost=float(rng.uniform(0.2, 1.0)),
        magnification=float(rng.uniform(1.05, 1.2)),
        pixel_mm=float(rng.choice([0.1, 0.125, 0.139, 0.143, 0.148, 0.15, 0.16, 0.175, 0.2])),
        margin_mm=tuple(float(x) for x in rng.uniform(5, 60, 4)),  # type: ignore[arg-type]
        photons=float(np.exp(rng.uniform(np.log(300), np.log(5000)))),
        scatter=float(rng.uniform(0.03, 0.4)),
        scatter_sigma_mm=float(rng.uniform(20, 60)),
        heel=float(rng.uniform(-0.12, 0.12)),
        electronic=float(rng.uniform(0.5, 4.0)),
        psf_px=float(rng.uniform(0.5, 1.8)),
        window=(float(rng.uniform(0.0, 5.0)), float(rng.uniform(99.0, 99.95))),
        toe=float(rng.uniform(0.0, 0.6)),
        gamma=float(rng.uniform(0.7, 1.4)),
        unsharp=float(rng.uniform(0.5, 2.0)) if rng.random() < 0.75 else 0.0,
        unsharp_mm=float(rng.uniform(8, 40)),
        out_range=(lo, hi),
        field=field_,  # type: ignore[arg-type]
        blank_white=bool(rng.random() < 0.6),
        crop=crop,  # type: ignore[arg-type]
        marker=str(rng.choice(["L", "R"])) if rng.random() < 0.6 else None,
        flip=bool(rng.random() < 0.15),
        long_side=(1000, 2000),
    )


def water_paths(anatomy: Anatomy, angles: list[float]) -> tuple[dict[float, np.ndarray], float]:
    """Water-equivalent and extra-dense path lengths (mm) per angle, on the volume's grid.

    Returns:
        ``{angle mod 180: array (2, n_det, nz)}`` — channel 0 the path through
        ``max(0, 1 + HU/1000)``, channel 1 through ``max(HU, 0) / 1000`` — and the in-plane bin
        size (mm) after resampling the slices to square pixels.
    """
    hu = anatomy.hu
    sx, sy, _ = anatomy.spacing
    step = min(sx, sy)
    if abs(sx - sy) > 1e-3:
        hu = ndimage.zoom(hu, (sx / step, sy / step, 1.0), order=1, mode="nearest")
    if step >= 2.0:  # coarse voxels: soften the staircase of the outline
        hu = ndimage.gaussian_filter(hu, 0.7)
    water = np.clip(1.0 + np.minimum(hu, 0) / 1000.0, 0, None)
    dense = np.maximum(hu, 0) / 1000.0
    stack = np.concatenate([water + dense, dense], axis=2).astype(np.float32)
    unique = sorted({round(a % 180.0, 6) for a in angles})
    proj = Projector(hu.shape[:2], unique)
    sino = proj.forward(stack) * np.float32(step)  # (n_angles, n_det, 2 nz)
    nz = hu.shape[2]
    out = {a: np.stack([sino[i, :, :nz], sino[i, :, nz:]]) for i, a in enumerate(unique)}
    return out, step


def _orient(p: np.ndarray, angle: float, flip: bool) -> np.ndarray:
    """(n_det, nz) -> display: rows superior to inferior, patient right on the viewer's left.

    Parallel beams at ``angle`` and ``angle + 180`` see the same integrals; both are shown as
    if facing the patient (as AP and PA radiographs are), mirrored when ``flip``.
    """
    img = p.T[::-1, ::-1]  # rows: z from superior; columns: patient right first (AP)
    return img[:, ::-1] if flip else img


def _detector_grid(
    p: np.ndarray, step: float, dz: float, params: DrrParams
) -> tuple[np.ndarray, float]:
    """Crop to the object plus margins, resample to the detector pixel; returns image, pixel."""
    rows, cols = np.nonzero(p > 0.05 * max(float(p.max()), 1e-6))
    if rows.size == 0:
        rows, cols = np.array([0, p.shape[0] - 1]), np.array([0, p.shape[1] - 1])
    t, b, left, right = params.margin_mm
    r0, r1 = rows.min() - int(t / dz), rows.max() + 1 + int(b / dz)
    c0, c1 = cols.min() - int(left / step), cols.max() + 1 + int(right / step)
    pad = ((max(0, -r0), max(0, r1 - p.shape[0])), (max(0, -c0), max(0, c1 - p.shape[1])))
    p = np.pad(p, pad)[r0 + pad[0][0] : r1 + pad[0][0], c0 + pad[1][0] : c1 + pad[1][0]]
    height, width = p.shape[0] * dz, p.shape[1] * step  # mm in the object plane
    pixel = params.pixel_mm
    long_mm = max(height, width) * params.magnification
    lo, hi = params.long_side
    n_long = min(max(long_mm / pixel, lo), hi)
    pixel = long_mm / n_long
    size = (
        max(8, round(width * params.magnification / pixel)),
        max(8, round(height * params.magnification / pixel)),
    )
    img = cv2.resize(p.astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
    return np.maximum(img, 0.0), float(pixel)


def _counts(expected: np.ndarray, params: DrrParams, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts (normal approximation above 30) plus electronic noise."""
    out = expected + np.sqrt(expected) * rng.standard_normal(expected.shape, dtype=np.float32)
    low = expected < 30
    if low.any():
        out[low] = rng.poisson(expected[low]).astype(np.float32)
    out += params.electronic * rng.standard_normal(expected.shape, dtype=np.float32)
    return out


def _wide_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of a large sigma, computed on an 8x smaller image."""
    small = cv2.resize(
        img, (max(2, img.shape[1] // 8), max(2, img.shape[0] // 8)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma_px / 8))
    return cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)


def _expose(
    integral: np.ndarray, pixel: float, params: DrrParams, rng: np.random.Generator
) -> np.ndarray:
    """Detector signal ``log(I0 / counts)`` for a map of line integrals (dimensionless)."""
    primary = np.exp(-integral).astype(np.float32)
    scatter = params.scatter * _wide_blur(primary, params.scatter_sigma_mm / pixel)
    ramp = np.linspace(-1.0, 1.0, integral.shape[0], dtype=np.float32)[:, None]
    gain = 1.0 + params.heel * ramp
    expected = params.photons * gain * (primary + scatter)
    counts = _counts(expected.astype(np.float32), params, rng)
    if params.psf_px > 0:
        counts = cv2.GaussianBlur(counts, (0, 0), params.psf_px)
    return np.log(np.float32(params.photons)) - np.log(np.maximum(counts, 0.5))


def _process(signal: np.ndarray, pixel: float, params: DrrParams) -> np.ndarray:
    """Window, tone curve and unsharp mask: values in 0..1, high = dense."""
    sample = signal[:: max(1, signal.shape[0] // 400), :: max(1, signal.shape[1] // 400)].ravel()
    body = sample[sample > threshold_otsu(sample)] if np.ptp(sample) > 0 else sample
    lo, hi = np.percentile(body, params.window)
    lo -= params.toe * (hi - lo)
    v = np.clip((signal - lo) / max(float(hi - lo), 1e-6), 0, 1).astype(np.float32)
    v = v ** np.float32(params.gamma)
    if params.unsharp > 0:
        blur = _wide_blur(v, params.unsharp_mm / pixel)
        v = np.clip(v + params.unsharp * (v - blur), 0, 1)
    return v


def _finish(v: np.ndarray, params: DrrParams) -> np.ndarray:
    """12-bit display values with collimation, crop and marker; then the stored photometric."""
    lo, hi = params.out_range
    d = (lo + v * (hi - lo)).astype(np.float32)
    rows, cols = d.shape
    if params.field is not None:
        t, b, left, right = params.field
        inside = np.zeros(d.shape, bool)
        inside[
            int(t * rows) : rows - int(b * rows), int(left * cols) : cols - int(right * cols)
        ] = True
        d[~inside] = hi if params.blank_white else lo
    if params.crop is not None:
        t, b, left, right = params.crop
        d = d[int(t * rows) : rows - int(b * rows), int(left * cols) : cols - int(right * cols)]
    if params.marker:
        d = burn_marker(d, params.marker, value=float(hi))
    stored = np.clip(np.rint(d), 0, MAX_STORED).astype(np.uint16)
    if params.photometric == "MONOCHROME1":
        stored = (MAX_STORED - stored.astype(np.int32)).astype(np.uint16)
    return np.ascontiguousarray(stored)


def burn_marker(img: np.ndarray, text: str, value: float) -> np.ndarray:
    """Draw ``text`` (a lead marker letter) near the upper left corner, at ``value``."""
    rows, cols = img.shape
    scale = max(1.0, min(rows, cols) / 300.0)
    mask = np.zeros(img.shape, np.uint8)
    org = (int(cols * 0.05), int(rows * 0.05 + 22 * scale))
    cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, max(1, int(2 * scale)))
    out = img.copy()
    out[mask > 127] = value
    return out


def render_drr(
    paths: np.ndarray, step: float, dz: float, params: DrrParams, rng: np.random.Generator
) -> DrrImage:
    """One radiograph from the path lengths of :func:`water_paths` for ``params.angle``."""
    integral_obj = params.mu_water * (paths[0] + params.bone_boost * paths[1])
    img = _orient(integral_obj, params.angle, params.flip)
    integral, pixel = _detector_grid(img, step, dz, params)
    signal = _expose(integral, pixel, params, rng)
    stored = _finish(_process(signal, pixel, params), params)
    kvp = round(90.0 - 30.0 * params.bone_boost, 1)
    return DrrImage(pixels=stored, pixel_mm=round(pixel, 4), params=params, kvp=kvp)


def simulate_drrs(
    anatomy: Anatomy, n: int, rng: np.random.Generator, params: list[DrrParams] | None = None
) -> list[DrrImage]:
    """``n`` radiographs of one anatomy (or one per given ``params``), in a deterministic order."""
    plist = params if params is not None else [sample_drr_params(rng) for _ in range(n)]
    paths, step = water_paths(anatomy, [p.angle for p in plist])
    dz = anatomy.spacing[2]
    return [render_drr(paths[round(p.angle % 180.0, 6)], step, dz, p, rng) for p in plist]
