"""Tissue classes and a CT-like volume (HU) from a real CT or MR volume: the simulations' input.

:func:`build_anatomy` gives an :class:`Anatomy`: per voxel a tissue class (:class:`Tissue`) and a
value in Hounsfield units. DRRs read the HU; simulated PET reads the classes (activity) and the
HU (attenuation). The rule, deterministic for a volume:

**Foreground.** Gaussian-smoothed intensity above Otsu's threshold, the largest connected part,
closed and hole-filled (in 3D and per axial slice). Everything else is air (-1000 HU).

**CT with air in it** (a plain CT, >= 0.5 % of voxels below -400 HU): HU are kept (clipped to
-1024 .. 3071); classes from HU — air < -400, fat -400 .. -30, soft tissue -30 .. 200, bone > 200;
soft tissue enclosed by bone in an axial slice is brain grey matter (>= 30 HU) or white matter.

**Brain-only volumes** (a skull-stripped CT atlas, a skull-stripped or fat-suppressed MR): the
head around the brain is added *outside* the foreground, by distance d (mm) from its surface:
d < 1.5 CSF (8 HU), 1.5 .. 8.5 skull (bone: 1600 HU at the tables, 700 HU in the diploe between),
8.5 .. 14 scalp (40 HU, fat -100 HU from 10 to 13 mm). A volume whose top or bottom slice cuts
through the object (a slab) is continued there, not capped with skull. A CT keeps its measured
brain HU (clipped to -50 .. 150).

**MR heads with a scalp** (:func:`scalp_depth`: going inwards, the mean intensity of thin depth
bands peaks in the outer 8 mm — the bright outer ring of scalp fat —, dips by >= 15 % — skull and
CSF, dark on MR — and rises again towards the brain): by depth d (mm) inside the surface, with s
where the peak band ends, d < s scalp (fat -100 HU where brighter than the band's median, else
40 HU), s .. s + 7 skull (the bone band, as above), then 1.5 mm of CSF, deeper is brain.

**Brain tissue** (the interior): three intensity classes (multi-Otsu). For CT the brightest is
grey matter, the middle white matter, the darkest CSF. For MR the middle class is grey matter in
both T1 and T2-like contrast; of the other two the larger is white matter and the smaller CSF;
their pseudo-CT values are 38, 28 and 8 HU.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu

from hypermodal.sources.simulate.volumes import SourceVolume


class Tissue(enum.IntEnum):
    """Tissue class codes of :attr:`Anatomy.tissue`."""

    AIR = 0
    FAT = 1
    SOFT = 2
    BONE = 3
    CSF = 4
    GREY = 5
    WHITE = 6


#: HU given to each class where the source has no HU of its own (MR, added head)
CLASS_HU = {
    Tissue.AIR: -1000.0,
    Tissue.FAT: -100.0,
    Tissue.SOFT: 40.0,
    Tissue.BONE: 700.0,
    Tissue.CSF: 8.0,
    Tissue.GREY: 38.0,
    Tissue.WHITE: 28.0,
}
SHELL_MM = 14.0  # room the added head needs outside a brain-only foreground


@dataclass
class Anatomy:
    """Per-voxel tissue classes and HU on the grid of the source volume (maybe padded)."""

    hu: np.ndarray  # float32 (x, y, z)
    tissue: np.ndarray  # uint8 (x, y, z), Tissue codes
    spacing: tuple[float, float, float]
    rule: str  # "ct", "ct-brain", "mr-brain" or "mr-head": which branch of the rule applied

    @property
    def body(self) -> np.ndarray:
        return self.tissue != Tissue.AIR


def foreground(data: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The object in a volume: smoothed intensity over Otsu, largest part, closed, filled."""
    sigma = [max(0.5, 1.0 / s) for s in spacing]
    smooth = ndimage.gaussian_filter(data, sigma)
    thr = threshold_otsu(smooth[:: max(1, smooth.size // 2_000_000)])
    mask = smooth > thr
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0) | mask
    mask = ndimage.binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return mask


def distance_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) of every voxel of ``mask`` to the nearest voxel outside it (0 outside).

    Volumes over 3 million voxels are measured on every second voxel and each value is repeated
    over its 2x2x2 block (about one voxel of error, several times faster).
    """
    if mask.size <= 3_000_000:
        return ndimage.distance_transform_edt(mask, sampling=spacing).astype(np.float32)
    dist = ndimage.distance_transform_edt(mask[::2, ::2, ::2], sampling=[2 * s for s in spacing])
    full = dist.astype(np.float32)
    for axis in range(3):
        full = np.repeat(full, 2, axis=axis)
    full = full[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    full[~mask] = 0.0
    return full


def has_outline(mask: np.ndarray) -> bool:
    """Whether the object has an outline inside the field of view (air around it in-plane).

    A crop from inside a head (the object touches most of the side faces) has none, and its
    projections would show a block of tissue, not a body part.
    """
    if not mask.any() or mask.mean() > 0.85:
        return False
    faces = [mask[0], mask[-1], mask[:, 0], mask[:, -1]]
    touching = float(np.mean([f.mean() for f in faces]))
    return touching < 0.35


def _brain_classes(values: np.ndarray, kind: str) -> np.ndarray:
    """Tissue codes (GREY/WHITE/CSF) for interior intensities (see the module doc)."""
    lo, hi = (0.0, 60.0) if kind == "CT" else np.percentile(values, [1, 99])
    values = np.clip(values, lo, hi)
    sample = values[:: max(1, values.size // 500_000)]
    if sample.size < 30 or np.ptp(sample) == 0:
        return np.full(values.shape, Tissue.GREY, np.uint8)
    t = threshold_multiotsu(sample, classes=3)
    cls = np.digitize(values, t)  # 0 dark, 1 middle, 2 bright
    if kind == "CT":
        codes = np.array([Tissue.CSF, Tissue.WHITE, Tissue.GREY], np.uint8)
    else:
        dark, bright = int((cls == 0).sum()), int((cls == 2).sum())
        if bright >= dark:
            codes = np.array([Tissue.CSF, Tissue.GREY, Tissue.WHITE], np.uint8)
        else:
            codes = np.array([Tissue.WHITE, Tissue.GREY, Tissue.CSF], np.uint8)
    return codes[cls]


def _skull_hu(d: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Bone HU across a skull band from ``start`` to ``stop`` mm: dense tables, lighter diploe."""
    mid = (start + stop) / 2
    half = (stop - start) / 2
    return (700.0 + 900.0 * np.clip(np.abs(d - mid) / half, 0, 1) ** 2).astype(np.float32)


def _pad_for_shell(vol: SourceVolume, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Room for the added head around a brain-only foreground.

    In-plane the volume is padded with background. Along z, an end slice that cuts through the
    object (its object area over a fifth of the largest) is continued by repeating it, so a
    slab gets no skull cap where the acquisition simply stopped.
    """
    pads = [int(np.ceil(SHELL_MM / s)) + 1 for s in vol.spacing]
    fill = float(np.percentile(vol.data, 1))
    inplane = [(pads[0], pads[0]), (pads[1], pads[1]), (0, 0)]
    data = np.pad(vol.data, inplane, mode="constant", constant_values=fill)
    fg = np.pad(fg, inplane, mode="constant", constant_values=False)
    area = fg.sum(axis=(0, 1))
    cut = [area[0] > 0.2 * area.max(), area[-1] > 0.2 * area.max()]
    for end, is_cut in zip((0, 1), cut, strict=True):
        width = [(0, 0), (0, 0), (pads[2], 0) if end == 0 else (0, pads[2])]
        mode = "edge" if is_cut else "constant"
        kw = {} if is_cut else {"constant_values": fill}
        data = np.pad(data, width, mode=mode, **kw)
        fg = np.pad(fg, width, mode=mode, **({} if is_cut else {"constant_values": False}))
    return data, fg


def _set(hu: np.ndarray, tissue: np.ndarray, where: np.ndarray, code: Tissue) -> None:
    hu[where] = CLASS_HU[code]
    tissue[where] = code


def _brain_only(data: np.ndarray, fg: np.ndarray, spacing: tuple, kind: str) -> Anatomy:
    """A brain-only foreground: classes inside, CSF, skull and scalp added outside."""
    hu = np.full(data.shape, CLASS_HU[Tissue.AIR], np.float32)
    tissue = np.zeros(data.shape, np.uint8)
    tissue[fg] = _brain_classes(data[fg], kind)
    hu[fg] = np.array([CLASS_HU[Tissue(c)] for c in range(len(Tissue))], np.float32)[tissue[fg]]
    if kind == "CT":  # keep the measured HU of the brain
        hu[fg] = np.clip(data[fg], -50, 150)
    out = distance_mm(~fg, spacing)
    _set(hu, tissue, ~fg & (out < 1.5), Tissue.CSF)
    bone = ~fg & (out >= 1.5) & (out < 8.5)
    hu[bone] = _skull_hu(out[bone], 1.5, 8.5)
    tissue[bone] = Tissue.BONE
    _set(hu, tissue, (out >= 8.5) & (out < 14.0), Tissue.SOFT)
    _set(hu, tissue, (out >= 10.0) & (out < 13.0), Tissue.FAT)
    return Anatomy(hu, tissue, spacing, f"{kind.lower()}-brain")


def _mr_head(
    data: np.ndarray, fg: np.ndarray, depth: np.ndarray, spacing: tuple, scalp_mm: float
) -> Anatomy:
    """An MR head with its scalp: scalp, skull band, CSF and brain by depth inside the surface."""
    hu = np.full(data.shape, CLASS_HU[Tissue.AIR], np.float32)
    tissue = np.zeros(data.shape, np.uint8)
    s0, s1 = scalp_mm, scalp_mm + 7.0
    scalp = fg & (depth < s0)
    _set(hu, tissue, scalp, Tissue.SOFT)
    if scalp.any():
        bright = scalp & (data > np.median(data[scalp]))
        _set(hu, tissue, bright, Tissue.FAT)
    bone = fg & (depth >= s0) & (depth < s1)
    hu[bone] = _skull_hu(depth[bone], s0, s1)
    tissue[bone] = Tissue.BONE
    _set(hu, tissue, fg & (depth >= s1) & (depth < s1 + 1.5), Tissue.CSF)
    brain = fg & (depth >= s1 + 1.5)
    if brain.any():
        codes = _brain_classes(data[brain], "MR")
        tissue[brain] = codes
        hu[brain] = np.array([CLASS_HU[Tissue(c)] for c in range(len(Tissue))], np.float32)[codes]
    return Anatomy(hu, tissue, spacing, "mr-head")


def _plain_ct(data: np.ndarray, spacing: tuple) -> Anatomy:
    hu = np.clip(data, -1024, 3071).astype(np.float32)
    tissue = np.full(hu.shape, Tissue.SOFT, np.uint8)
    tissue[hu < -400] = Tissue.AIR
    tissue[(hu >= -400) & (hu < -30)] = Tissue.FAT
    bone = hu > 200
    tissue[bone] = Tissue.BONE
    for k in range(hu.shape[2]):
        inside = ndimage.binary_fill_holes(bone[:, :, k]) & ~bone[:, :, k]
        soft = inside & (tissue[:, :, k] == Tissue.SOFT)
        plane = tissue[:, :, k]
        plane[soft] = np.where(hu[:, :, k][soft] >= 30, Tissue.GREY, Tissue.WHITE)
    return Anatomy(hu, tissue, spacing, "ct")


def scalp_depth(data: np.ndarray, fg: np.ndarray, depth: np.ndarray, step: float) -> float | None:
    """Depth (mm) where the scalp ends, or None when the volume shows no scalp.

    The mean intensity in 2 mm (or one voxel) bands of depth below the surface, relative to
    the deep interior, must rise to a peak in the outer 8 mm (scalp fat), fall by 15 % or more
    to a dip (skull and CSF, dark on MR), and rise again towards the brain.
    """
    deep = fg & (depth > 20.0)
    if not deep.any():
        return None
    ref = float(np.median(data[deep])) or 1.0
    edges = np.arange(0.0, 24.0 + step, step)
    prof, starts = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        band = fg & (depth >= a) & (depth < b)
        if band.sum() >= 20:
            prof.append(float(np.mean(data[band])) / ref)
            starts.append(float(a))
    if len(prof) < 4:
        return None
    outer = [i for i, a in enumerate(starts) if a < 8.0]
    if not outer:
        return None
    peak = max(outer, key=lambda i: prof[i])
    if peak + 2 >= len(prof):
        return None
    dip = min(range(peak + 1, len(prof)), key=lambda i: prof[i])
    rises = dip + 1 < len(prof) and max(prof[dip + 1 :]) > 1.1 * prof[dip]
    if prof[dip] < 0.85 * prof[peak] and rises:
        return starts[peak] + step
    return None


def build_anatomy(vol: SourceVolume) -> Anatomy:
    """Tissue classes and HU for a real volume (see the module doc for the rule).

    Raises:
        ValueError: The volume has no object outline (a crop from inside the body) or no object.
    """
    spacing = vol.spacing
    if vol.kind == "CT" and float(np.mean(vol.data < -400)) >= 0.005:
        return _plain_ct(vol.data, spacing)
    fg = foreground(vol.data, spacing)
    if not has_outline(fg):
        raise ValueError(f"{vol.path}: no object outline in the field of view")
    if vol.kind == "MR":
        depth = distance_mm(fg, spacing)
        scalp = scalp_depth(vol.data, fg, depth, max(2.0, min(spacing)))
        if scalp is not None:
            return _mr_head(vol.data, fg, depth, spacing, scalp)
    data, fg = _pad_for_shell(vol, fg)
    return _brain_only(data, fg, spacing, vol.kind)
