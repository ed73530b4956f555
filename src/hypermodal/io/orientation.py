"""The slicing rule every volume reader follows (NIfTI, NRRD, MetaImage).

A 3D volume yields 2D slices along the voxel axis closest to the patient's superior–inferior
axis, from the orientation codes of the voxel axes (:func:`nibabel.aff2axcodes`, or
:func:`axcodes_from_directions` for formats that store direction vectors): axial slices for most
scans, whatever order the voxels are stored in. Each slice is then flipped/transposed to the
DICOM display convention — rows run anterior → posterior, columns run patient right → left
(LPS) — so that a slice from a volume looks like the same slice from a DICOM series. A spatial
axis of length 1 is taken as the slice axis (a 2D image stored as ``X × Y × 1``), and a 2D
file yields one image. When the orientation is unknown the last spatial axis is used, untouched.

Voxel values become ``float32`` grey (:func:`to_grey`, :func:`channels_to_grey`): magnitude of
complex data, ITU-R BT.601 luminance of colour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from hypermodal.io.constants import LUMA_WEIGHTS

__all__ = ["SlicePlan", "axcodes_from_directions", "channels_to_grey", "plan_slices", "to_grey"]


@dataclass(frozen=True)
class SlicePlan:
    """How a 3D spatial block becomes 2D images.

    Attributes:
        slice_axis: The spatial axis (0, 1 or 2) that is stepped through.
        row_axis: The spatial axis that becomes image rows.
        col_axis: The spatial axis that becomes image columns.
        flip_rows: Reverse the rows (so rows run anterior → posterior).
        flip_cols: Reverse the columns (so columns run patient right → left).
        num_slices: Number of 2D images per 3D block.
        rows: Image height.
        columns: Image width.
        axcodes: Orientation codes of the three spatial axes (e.g. ``"RAS"``), or None.
    """

    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    num_slices: int
    rows: int
    columns: int
    axcodes: str | None

    def take(self, block: Any, k: int) -> np.ndarray:
        """Cut slice ``k`` out of an array-like indexed ``[x, y, z, ...]`` (3 spatial axes).

        Args:
            block: A 3D array or lazy proxy with the spatial axes first (extra trailing axes
                must already be indexed away).
            k: The slice number along :attr:`slice_axis`.

        Returns:
            The 2D slice, oriented (rows, columns) as planned.
        """
        index: list[Any] = [slice(None)] * 3
        index[self.slice_axis] = k
        return self.orient(np.asarray(block[tuple(index)]))

    def orient(self, plane: np.ndarray) -> np.ndarray:
        """Transpose/flip a 2D plane given with its two axes in spatial order."""
        if self.row_axis > self.col_axis:
            plane = plane.T
        if self.flip_rows:
            plane = plane[::-1, :]
        if self.flip_cols:
            plane = plane[:, ::-1]
        return plane


def plan_slices(spatial_shape: Iterable[int], axcodes: Iterable[str | None] | None) -> SlicePlan:
    """Choose the slice axis and in-plane orientation for a block of up to 3 spatial axes.

    Args:
        spatial_shape: Sizes of the spatial axes (2 or 3 of them).
        axcodes: Orientation code per spatial axis (``"L"``/``"R"``, ``"A"``/``"P"``,
            ``"S"``/``"I"``; the direction each voxel axis increases towards), or None when unknown.

    Returns:
        The plan.

    Raises:
        ValueError: The data have fewer than two axes longer than 1 (not an image).
    """
    shape = tuple(int(s) for s in spatial_shape)[:3]
    shape = shape + (1,) * (3 - len(shape))
    codes: list[str | None] = list(axcodes)[:3] if axcodes is not None else [None, None, None]
    codes += [None] * (3 - len(codes))
    known = all(c is not None for c in codes)
    singletons = [i for i, s in enumerate(shape) if s == 1]
    if len(singletons) >= 2:
        raise ValueError(f"not an image: data shape {shape} has fewer than two axes longer than 1")
    if len(singletons) == 1:
        slice_axis = singletons[0]
    elif known and ("S" in codes or "I" in codes):
        slice_axis = codes.index("S") if "S" in codes else codes.index("I")
    else:
        slice_axis = 2
    a, b = (i for i in range(3) if i != slice_axis)
    row_axis, col_axis = a, b
    flip_rows = flip_cols = False
    if codes[a] is not None and codes[b] is not None:
        if codes[a] in ("L", "R") and codes[b] in ("A", "P"):
            row_axis, col_axis = b, a
        if codes[row_axis] in ("A", "P") and codes[col_axis] in ("L", "R"):
            flip_rows = codes[row_axis] == "A"
            flip_cols = codes[col_axis] == "R"
    return SlicePlan(
        slice_axis=slice_axis,
        row_axis=row_axis,
        col_axis=col_axis,
        flip_rows=flip_rows,
        flip_cols=flip_cols,
        num_slices=shape[slice_axis],
        rows=shape[row_axis],
        columns=shape[col_axis],
        axcodes="".join(str(c) if c is not None else "?" for c in codes)
        if any(c is not None for c in codes)
        else None,
    )


def to_grey(arr: np.ndarray) -> np.ndarray:
    """Make a 2D ``float32`` image from voxel data: magnitude of complex, luminance of RGB(A).

    Args:
        arr: A 2D array; a structured RGB/RGBA dtype (NIfTI RGB24/RGBA32), complex, bool or
            any numeric type.

    Returns:
        A C-contiguous 2D ``float32`` array.
    """
    if arr.dtype.names:
        names = arr.dtype.names
        channels: list[str] = [n for n in ("R", "G", "B") if n in names] or list(names[:3])
        rgb = np.stack([arr[n].astype(np.float32) for n in channels], axis=-1)
        arr = rgb @ LUMA_WEIGHTS[: rgb.shape[-1]] if rgb.shape[-1] == 3 else rgb[..., 0]
    elif np.iscomplexobj(arr):
        arr = np.abs(arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


def axcodes_from_directions(
    directions: np.ndarray, flips: tuple[int, int, int] | None
) -> tuple[str | None, ...] | None:
    """Orientation codes of voxel axes from their world direction vectors.

    Args:
        directions: ``(n_axes, 3)`` array, one world-space direction per spatial voxel axis.
        flips: Signs that turn the world axes into RAS (``(-1, -1, 1)`` for LPS), or None
            when the world space has no anatomical meaning.

    Returns:
        One code per axis (``"L"``, ``"R"``, ``"A"``, ``"P"``, ``"S"``, ``"I"``), or None.
    """
    if flips is None:
        return None
    d = np.asarray(directions, dtype=float)
    if d.ndim != 2 or d.shape[1] != 3 or not np.all(np.isfinite(d)):
        return None
    n = d.shape[0]
    affine = np.eye(4)
    affine[:3, :n] = (d * np.asarray(flips, dtype=float)).T
    if n < 3:  # complete a 2D frame with the cross product so the affine is invertible
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] = normal if np.any(normal) else (0, 0, 1)
    try:
        return tuple(nib.aff2axcodes(affine))[:n]
    except Exception:  # noqa: BLE001 - degenerate directions: orientation unknown
        return None


def channels_to_grey(arr: np.ndarray) -> np.ndarray:
    """Colour channels on the last axis to ``float32`` grey: luminance of the first three, or
    the first channel when there are fewer than three.

    Args:
        arr: An array with the channels on its last axis.

    Returns:
        A ``float32`` array without the channel axis.
    """
    arr = arr.astype(np.float32)
    return arr[..., :3] @ LUMA_WEIGHTS if arr.shape[-1] >= 3 else arr[..., 0]
