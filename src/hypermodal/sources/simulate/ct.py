"""CT volumes from real anatomy, as people store and export them: Hounsfield units, or windowed.

From an :class:`~hypermodal.sources.simulate.anatomy.Anatomy` (HU per voxel, tissue classes),
each simulated CT volume is one of three exports, all NIfTI (no header claim, as CT volumes
converted from DICOM are):

* ``hu`` — the volume in HU (int16) with scanner noise (Gaussian, 5–15 HU), the way converters
  such as dcm2niix write it;
* ``window`` — the volume through a display window (brain 40/80, subdural 75/215, soft tissue
  50/400), mapped to integers 0..width and stored as int16/uint8, as atlases and windowed
  exports are;
* ``brain-window`` — like ``window`` but skull-stripped (every voxel outside the brain classes
  set to 0) and through a brain or subdural window only, as skull-stripped CT exports are;
* ``template`` — HU without scanner noise, smoothed (Gaussian, 0.8–2 voxels) and skull-stripped
  (background 0), int16, as CT brain atlases (averages of many scans) are: the CT counterpart
  of the MR ``template`` export, so that "a smooth brain on a zero background" is evidence for
  neither class.

At most ``max_slices`` axial slices from the middle of the volume are kept.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from hypermodal.common.files import write_bytes_atomic
from hypermodal.sources.simulate.anatomy import Anatomy, Tissue

#: (level, width) of the display windows used for windowed exports.
CT_EXPORT_WINDOWS = ((40.0, 80.0), (75.0, 215.0), (50.0, 400.0))
KINDS = ("hu", "window", "brain-window", "template")
#: Windows of skull-stripped exports (a brain is not exported through a soft-tissue window).
BRAIN_WINDOWS = CT_EXPORT_WINDOWS[:2]
BRAIN = (Tissue.GREY, Tissue.WHITE, Tissue.CSF)


@dataclass(frozen=True)
class CtVolume:
    values: np.ndarray  # (x, y, z), the stored integers
    spacing: tuple[float, float, float]
    kind: str


def simulate_ct(
    anatomy: Anatomy, kind: str, rng: np.random.Generator, max_slices: int = 60
) -> CtVolume:
    """One exported CT volume of ``kind`` (:data:`KINDS`) from ``anatomy``."""
    if kind not in KINDS:
        raise ValueError(f"unknown CT export {kind!r}; expected one of {KINDS}")
    hu = anatomy.hu.astype(np.float32)
    nz = hu.shape[2]
    lo = max(0, (nz - max_slices) // 2)
    hu = hu[:, :, lo : lo + max_slices]
    tissue = anatomy.tissue[:, :, lo : lo + max_slices]
    body = tissue != Tissue.AIR
    if kind == "template":
        smooth = ndimage.gaussian_filter(hu, float(rng.uniform(0.8, 2.0)))
        values = np.where(np.isin(tissue, BRAIN), np.round(smooth), 0.0).astype(np.int16)
        return CtVolume(values, anatomy.spacing, kind)
    noise = rng.normal(0.0, rng.uniform(5.0, 15.0), hu.shape).astype(np.float32)
    hu = np.where(body, hu + noise, hu)
    if kind == "hu":
        values = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    else:
        windows = BRAIN_WINDOWS if kind == "brain-window" else CT_EXPORT_WINDOWS
        level, width = windows[int(rng.integers(len(windows)))]
        windowed = np.clip(hu - (level - width / 2.0), 0.0, width)
        if kind == "brain-window":
            windowed = np.where(np.isin(tissue, BRAIN), windowed, 0.0)
        dtype = np.uint8 if width <= 255 and rng.random() < 0.5 else np.int16
        values = np.round(windowed).astype(dtype)
    return CtVolume(values, anatomy.spacing, kind)


def write_ct_nifti(path: Path, volume: Any, description: str) -> Path:
    """The volume (a :class:`CtVolume` or anything with ``values`` and ``spacing``) as a gzipped
    NIfTI-1 file (diagonal affine in mm)."""
    affine = np.diag([*volume.spacing, 1.0])
    img = nib.Nifti1Image(volume.values, affine)
    img.header["descrip"] = description[:79].encode()
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    # gzip without a time stamp, so that the same seed gives the same bytes
    write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
    return path
