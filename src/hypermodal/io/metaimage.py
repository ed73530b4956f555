"""ITK MetaImage volumes (``.mha``, ``.mhd`` + raw) through SimpleITK, an optional dependency.

Slices follow the slicing rule of :mod:`hypermodal.io.orientation`: 2D slices along the spatial
axis closest to superior–inferior, oriented rows anterior → posterior and columns patient
right → left; only the first volume of 4D+ data; colour becomes luminance.

SimpleITK is not a hypermodal dependency; without it :class:`MetaImageReader` raises
:class:`UnsupportedFileError` saying what to install. With it, the header comes from
``ReadImageInformation`` and each slice is read through the file reader's extraction region.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.base import FileHeader, wanted_indices
from hypermodal.io.orientation import (
    SlicePlan,
    axcodes_from_directions,
    channels_to_grey,
    plan_slices,
    to_grey,
)
from hypermodal.io.streams import check_regular

__all__ = ["MetaImageReader"]

_SITK_MISSING = (
    "MetaImage (.mha/.mhd) needs SimpleITK, which is not installed: "
    "pip install 'hypermodal[mha]' (or pip install SimpleITK)"
)


def _sitk() -> Any | None:
    try:
        return importlib.import_module("SimpleITK")
    except ImportError:
        return None


class MetaImageReader:
    """Reader for ITK MetaImage files (``.mha``, ``.mhd`` + raw), through optional SimpleITK.

    Attributes:
        name: ``"mha"``.
        extensions: Suffixes tried when content sniffing is inconclusive.
    """

    name: ClassVar[str] = "mha"
    extensions: ClassVar[tuple[str, ...]] = (".mha", ".mhd")

    def sniff(self, path: Path, head: bytes) -> bool:
        """True for a MetaImage text header (``ObjectType =`` or ``NDims =`` first)."""
        start = head[:64].lstrip()
        return start.startswith((b"ObjectType", b"NDims")) and b"=" in start[:20]

    def _reader(self, path: Path) -> Any:
        sitk = _sitk()
        if sitk is None:
            raise UnsupportedFileError(path, _SITK_MISSING)
        check_regular(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise CorruptFileError(
                path, f"cannot read MetaImage header ({_first_line(exc)})"
            ) from None
        return reader

    @staticmethod
    def _layout(path: Path, reader: Any) -> tuple[SlicePlan, tuple[int, ...], int]:
        size = tuple(int(s) for s in reader.GetSize())
        ndim = len(size)
        n_spatial = min(ndim, 3)
        direction = np.asarray(reader.GetDirection(), dtype=float).reshape(ndim, ndim)
        dirs = direction[:n_spatial, :n_spatial].T  # one row per voxel axis (LPS world)
        if n_spatial == 3:
            codes = axcodes_from_directions(dirs, (-1, -1, 1))
        elif n_spatial == 2:
            full = np.zeros((2, 3))
            full[:, :2] = dirs
            codes = axcodes_from_directions(full, (-1, -1, 1))
        else:
            raise UnsupportedFileError(path, f"MetaImage with {ndim} dimension(s) is not an image")
        try:
            plan = plan_slices(size[:n_spatial], codes)
        except ValueError as exc:
            raise UnsupportedFileError(path, str(exc)) from None
        return plan, size, n_spatial

    def header(self, path: Path) -> FileHeader:
        """Read size and orientation with SimpleITK's ``ReadImageInformation`` (no voxels).

        Args:
            path: The ``.mha`` or ``.mhd`` file.

        Returns:
            The header (``modality`` from the ``Modality`` field when written, else None).

        Raises:
            UnsupportedFileError: SimpleITK is not installed (the reason says what to install).
            CorruptFileError: Unreadable header.
        """
        path = Path(path)
        reader = self._reader(path)
        plan, size, _ = self._layout(path, reader)
        modality = None
        if reader.HasMetaDataKey("Modality"):
            value = reader.GetMetaData("Modality").strip()
            modality = value.removeprefix("MET_MOD_") or None
            if modality == "UNKNOWN":
                modality = None
        return FileHeader(
            path=str(path),
            format="mha",
            num_images=plan.num_slices,
            rows=plan.rows,
            columns=plan.columns,
            modality=modality,
            extra={
                "size": list(size),
                "components": int(reader.GetNumberOfComponents()),
                "axcodes": plan.axcodes,
                "slice_axis": plan.slice_axis,
                "zooms": [float(z) for z in reader.GetSpacing()],
                "dtype": _numpy_dtype(reader),
            },
        )

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Read 2D slices of the first volume one at a time, via an extraction region.

        Args:
            path: The ``.mha`` or ``.mhd`` file.
            indices: 0-based slice numbers, yielded in the order given.

        Yields:
            ``(index, image)`` with ``image`` a 2D ``float32`` array.

        Raises:
            IndexError: An index out of range (raised before reading any voxel).
            UnsupportedFileError: SimpleITK is not installed.
            CorruptFileError: Unreadable voxel data.
        """
        path = Path(path)
        reader = self._reader(path)
        sitk = _sitk()
        assert sitk is not None  # _reader() raised otherwise
        plan, size, n_spatial = self._layout(path, reader)
        total = plan.num_slices
        wanted = wanted_indices(path, indices, total)
        for i in wanted:
            # keep every spatial axis (size 1 on the slice axis): collapsing an axis makes ITK
            # reject oblique/permuted directions; axes after the 3rd are collapsed (volume 0)
            start = [0] * len(size)
            extent = [0] * len(size)
            for axis in range(n_spatial):
                extent[axis] = size[axis]
            if n_spatial == 3:
                start[plan.slice_axis] = i
                extent[plan.slice_axis] = 1
            reader.SetExtractIndex(start)
            reader.SetExtractSize(extent)
            try:
                image = reader.Execute()
            except RuntimeError as exc:
                raise CorruptFileError(
                    path, f"cannot read MetaImage data ({_first_line(exc)})"
                ) from None
            # SimpleITK arrays are [z, y, x(, component)]: reverse the spatial axes to [x, y, z]
            arr = np.asarray(sitk.GetArrayViewFromImage(image))
            vector = image.GetNumberOfComponentsPerPixel() > 1
            spatial_axes = list(range(arr.ndim - 1 if vector else arr.ndim))[::-1]
            block = arr.transpose(spatial_axes + ([arr.ndim - 1] if vector else []))
            if vector:
                block = channels_to_grey(block)
            if n_spatial == 3:
                block = np.take(block, 0, axis=plan.slice_axis)
            yield i, to_grey(plan.orient(block))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _numpy_dtype(reader: Any) -> str | None:
    """The numpy name of the voxel type (``int16``, ``float32``...), from the header only."""
    sitk = _sitk()
    if sitk is None:  # pragma: no cover - header() checked already
        return None
    name = str(sitk.GetPixelIDValueAsString(reader.GetPixelID())).lower()
    bits = next((b for b in ("64", "32", "16", "8") if b in name), None)
    if bits is None:
        return None
    if "float" in name:
        return f"float{bits}"
    return f"{'uint' if 'unsigned' in name else 'int'}{bits}"
