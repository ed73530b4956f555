"""NRRD (pynrrd) and MetaImage ``.mha``/``.mhd`` (SimpleITK, optional) volumes.

Both follow the NIfTI slicing rule of :mod:`hypermodal.io.nifti`: 2D slices along the spatial
axis closest to superior–inferior, oriented rows anterior → posterior and columns patient
right → left; only the first volume of 4D+ data; colour becomes luminance.

NRRD is read without loading the whole volume wherever the layout allows it: the header with
``nrrd.read_header``; a slice along the last spatial axis is one contiguous run of bytes, read
on its own (also from a gzip/bzip2 stream, which only moves forward when slices are asked for
in order); raw data sliced along another axis are memory-mapped. Only compressed or ASCII data
sliced along a non-last axis are decompressed whole, once per :meth:`NrrdReader.images` call.

MetaImage needs SimpleITK, which is not a hypermodal dependency; without it
:class:`MetaImageReader` raises :class:`UnsupportedFileError` saying what to install. With it,
the header comes from ``ReadImageInformation`` and each slice is read through the file reader's
extraction region.
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, cast

import nibabel as nib
import numpy as np

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.base import FileHeader
from hypermodal.io.nifti import SlicePlan, plan_slices, to_grey

__all__ = ["MetaImageReader", "NrrdReader", "axcodes_from_directions"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# NRRD "space" values → sign flips that turn the space's axes into RAS
_SPACE_TO_RAS = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "scanner-xyz": None,
    "3d-right-handed": None,
    "3d-left-handed": None,
}
_COLOR_KINDS = {"rgb-color", "rgba-color", "3-color", "4-color", "hsv-color", "xyz-color"}
_SPATIAL_KINDS = {"domain", "space"}
_NRRD_TYPES = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "int64": "i8",
    "uint64": "u8",
    "float": "f4",
    "double": "f8",
}
_NRRD_TYPE_ALIASES = {
    "signed char": "int8",
    "int8_t": "int8",
    "uchar": "uint8",
    "unsigned char": "uint8",
    "uint8_t": "uint8",
    "short": "int16",
    "short int": "int16",
    "signed short": "int16",
    "signed short int": "int16",
    "int16_t": "int16",
    "ushort": "uint16",
    "unsigned short": "uint16",
    "unsigned short int": "uint16",
    "uint16_t": "uint16",
    "int": "int32",
    "signed int": "int32",
    "int32_t": "int32",
    "uint": "uint32",
    "unsigned int": "uint32",
    "uint32_t": "uint32",
    "longlong": "int64",
    "long long": "int64",
    "long long int": "int64",
    "signed long long": "int64",
    "signed long long int": "int64",
    "int64_t": "int64",
    "ulonglong": "uint64",
    "unsigned long long": "uint64",
    "unsigned long long int": "uint64",
    "uint64_t": "uint64",
}


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


# ---------------------------------------------------------------------------------------------
# NRRD


class _NrrdLayout:
    """Axes of an NRRD file and how to cut slices from it."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        sizes = [int(s) for s in np.atleast_1d(header["sizes"])]
        self.sizes = sizes
        ndim = len(sizes)
        kinds = [str(k).lower() for k in header.get("kinds", [])] or [""] * ndim
        if len(kinds) != ndim:
            kinds = [""] * ndim
        directions = header.get("space directions")
        if directions is not None:
            rows = [np.asarray(r, dtype=float) if r is not None else None for r in directions]
            spatial = [i for i, r in enumerate(rows) if r is not None and np.all(np.isfinite(r))]
        elif any(k in _SPATIAL_KINDS for k in kinds):
            spatial = [i for i, k in enumerate(kinds) if k in _SPATIAL_KINDS]
        else:
            spatial = [i for i, k in enumerate(kinds) if k not in _COLOR_KINDS]
        if not 2 <= len(spatial) <= 3:
            raise UnsupportedFileError(
                path, f"NRRD with {len(spatial)} spatial axes (sizes {sizes}) is not an image"
            )
        self.spatial = spatial
        color = [i for i, k in enumerate(kinds) if k in _COLOR_KINDS and i not in spatial]
        self.color_axis = color[0] if color else None
        codes = None
        if directions is not None:
            space = str(header.get("space", "")).lower()
            flips = _SPACE_TO_RAS.get(space)
            dirs = np.stack([np.asarray(directions[i], dtype=float) for i in spatial])
            if dirs.shape[1] == 3:
                codes = axcodes_from_directions(dirs, flips)
        try:
            self.plan: SlicePlan = plan_slices([sizes[i] for i in spatial], codes)
        except ValueError as exc:
            raise UnsupportedFileError(path, str(exc)) from None
        type_name = str(header.get("type", "")).lower().strip()
        type_name = _NRRD_TYPE_ALIASES.get(type_name, type_name)
        if type_name not in _NRRD_TYPES:
            raise UnsupportedFileError(path, f"NRRD type {header.get('type')!r} is not supported")
        endian = ">" if str(header.get("endian", "little")).lower() == "big" else "<"
        code = _NRRD_TYPES[type_name]
        self.dtype = np.dtype(code if code[1] == "1" else endian + code)

    @property
    def slice_axis(self) -> int | None:
        """The slice axis as an index into all NRRD axes (None for a 2D image)."""
        if len(self.spatial) < 3:
            return None
        return self.spatial[self.plan.slice_axis]

    def index_for(self, k: int) -> tuple[Any, ...]:
        """Index over all NRRD axes that selects slice ``k`` of the first volume."""
        index: list[Any] = []
        for axis in range(len(self.sizes)):
            if len(self.spatial) == 3 and axis == self.slice_axis:
                index.append(k)
            elif axis in self.spatial or axis == self.color_axis:
                index.append(slice(None))
            else:
                index.append(0)
        return tuple(index)

    def finish(self, cut: np.ndarray, index: tuple[Any, ...]) -> np.ndarray:
        """Turn a cut (kept axes in NRRD order) into an oriented 2D ``float32`` image."""
        cut = np.asarray(cut)
        if self.color_axis is not None:
            kept = [a for a, ix in enumerate(index) if isinstance(ix, slice)]
            cut = np.moveaxis(cut, kept.index(self.color_axis), -1).astype(np.float32)
            cut = cut[..., :3] @ _LUMA if cut.shape[-1] >= 3 else cut[..., 0]
        return to_grey(self.plan.orient(cut))

    def cut(self, data: Any, k: int) -> np.ndarray:
        """Slice ``k`` of the first volume from an array-like indexed in NRRD axis order."""
        index = self.index_for(k)
        return self.finish(data[index], index)

    def contiguous(self) -> bool:
        """Whether one slice is a single run of bytes (slice axis = last spatial axis)."""
        if len(self.spatial) == 2:
            return True
        axis = self.slice_axis
        assert axis is not None
        return axis == max(self.spatial) and (self.color_axis is None or self.color_axis < axis)

    def run(self, k: int) -> tuple[int, tuple[int, ...]]:
        """Byte offset and F-order shape of slice ``k`` (only when :meth:`contiguous`)."""
        axis = max(self.spatial) if len(self.spatial) == 3 else len(self.sizes)
        shape = tuple(self.sizes[:axis])
        count = int(np.prod(shape, dtype=np.int64))
        start = k * count if len(self.spatial) == 3 else 0
        return start * self.dtype.itemsize, shape


def _nrrd_header(path: Path) -> tuple[dict[str, Any], int]:
    import nrrd

    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None
    except (nrrd.NRRDError, ValueError, StopIteration, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"malformed NRRD header ({exc})") from None
    return dict(header), offset


class _NrrdData:
    """Opens the data part of an NRRD file (attached or detached, raw or compressed)."""

    def __init__(self, path: Path, header: dict[str, Any], offset: int) -> None:
        self.path = path
        self.header = header
        self.encoding = str(header.get("encoding", "raw")).lower()
        data_file = header.get("data file", header.get("datafile"))
        if data_file is not None:
            if str(data_file).startswith("LIST") or "%" in str(data_file):
                raise UnsupportedFileError(path, "NRRD with multiple detached data files")
            target = Path(str(data_file))
            self.data_path = target if target.is_absolute() else path.parent / target
            self.offset = 0
        else:
            self.data_path = path
            self.offset = offset
        self.line_skip = int(header.get("line skip", header.get("lineskip", 0)))
        self.byte_skip = int(header.get("byte skip", header.get("byteskip", 0)))

    @property
    def compressed(self) -> bool:
        return self.encoding in ("gzip", "gz", "bzip2", "bz2")

    @property
    def raw(self) -> bool:
        return self.encoding == "raw"

    def open(self, total_bytes: int) -> IO[bytes]:
        """A binary stream positioned at the first data byte (decompressed if needed)."""
        fh: IO[bytes] = open(self.data_path, "rb")  # noqa: SIM115 - returned to the caller
        try:
            fh.seek(self.offset)
            for _ in range(self.line_skip):
                fh.readline()
            if self.raw and self.byte_skip == -1:
                fh.seek(-total_bytes, os.SEEK_END)
                return fh
            if not self.compressed:
                fh.seek(max(self.byte_skip, 0), os.SEEK_CUR)
                return fh
            stream: IO[bytes]
            if self.encoding in ("gzip", "gz"):
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=fh, mode="rb"))
            else:
                stream = cast(IO[bytes], bz2.BZ2File(fh, mode="rb"))
            if self.byte_skip > 0:
                stream.seek(self.byte_skip)
            return stream
        except BaseException:
            fh.close()
            raise

    def data_start(self) -> int:
        """Byte offset of the data in :attr:`data_path` (raw encoding only)."""
        with open(self.data_path, "rb") as fh:
            fh.seek(self.offset)
            for _ in range(self.line_skip):
                fh.readline()
            return fh.tell() + max(self.byte_skip, 0)


def _close_stream(stream: IO[bytes]) -> None:
    inner = getattr(stream, "fileobj", None) or getattr(stream, "_fp", None)
    stream.close()
    if inner is not None and hasattr(inner, "close"):
        inner.close()


class NrrdReader:
    """Reader for NRRD files (``.nrrd``, and ``.nhdr`` with detached data).

    Attributes:
        name: ``"nrrd"``.
        extensions: Suffixes tried when content sniffing is inconclusive.
    """

    name: ClassVar[str] = "nrrd"
    extensions: ClassVar[tuple[str, ...]] = (".nrrd", ".nhdr")

    def sniff(self, path: Path, head: bytes) -> bool:
        """True when the file starts with the ``NRRD000x`` magic line."""
        return head[:4] == b"NRRD"

    def header(self, path: Path) -> FileHeader:
        """Read the NRRD header only (``nrrd.read_header``); no voxel data are read.

        Args:
            path: The ``.nrrd`` or ``.nhdr`` file.

        Returns:
            The header (``modality`` None; orientation and shape in ``extra``).

        Raises:
            UnsupportedFileError: Not an image (wrong number of spatial axes, unknown type).
            CorruptFileError: Malformed header.
        """
        path = Path(path)
        header, _ = _nrrd_header(path)
        layout = _NrrdLayout(path, header)
        plan = layout.plan
        return FileHeader(
            path=str(path),
            format="nrrd",
            num_images=plan.num_slices,
            rows=plan.rows,
            columns=plan.columns,
            extra={
                "sizes": layout.sizes,
                "dtype": str(layout.dtype),
                "encoding": str(header.get("encoding", "raw")),
                "space": header.get("space"),
                "axcodes": plan.axcodes,
                "slice_axis": layout.slice_axis,
            },
        )

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Read 2D slices of the first volume one at a time (all when ``indices`` is None).

        Args:
            path: The ``.nrrd`` or ``.nhdr`` file.
            indices: 0-based slice numbers, yielded in the order given.

        Yields:
            ``(index, image)`` with ``image`` a 2D ``float32`` array.

        Raises:
            IndexError: An index out of range (raised before reading any voxel).
            CorruptFileError: Truncated or unreadable data.
        """
        path = Path(path)
        header, offset = _nrrd_header(path)
        layout = _NrrdLayout(path, header)
        total = layout.plan.num_slices
        wanted = list(range(total)) if indices is None else [int(i) for i in indices]
        for i in wanted:
            if not 0 <= i < total:
                raise IndexError(f"{path}: image {i} out of range for {total} image(s)")
        if not wanted:
            return
        data = _NrrdData(path, header, offset)
        total_bytes = int(np.prod(layout.sizes, dtype=np.int64)) * layout.dtype.itemsize
        try:
            if data.raw and data.byte_skip != -1 and not layout.contiguous():
                yield from self._from_memmap(layout, data, wanted, total_bytes)
            elif (data.raw or data.compressed) and layout.contiguous():
                yield from self._from_runs(layout, data, wanted, total_bytes)
            else:
                yield from self._from_whole(layout, data, wanted, offset)
        except (EOFError, OSError, ValueError, gzip.BadGzipFile) as exc:
            raise CorruptFileError(
                path, f"cannot read NRRD data ({type(exc).__name__}: {exc})"
            ) from None

    @staticmethod
    def _from_memmap(
        layout: _NrrdLayout, data: _NrrdData, wanted: list[int], total_bytes: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        start = data.data_start()
        size = os.path.getsize(data.data_path)
        if size < start + total_bytes:
            raise CorruptFileError(
                layout.path, f"truncated NRRD data: {size - start} of {total_bytes} bytes"
            )
        arr = np.memmap(
            data.data_path,
            dtype=layout.dtype,
            mode="r",
            offset=start,
            shape=tuple(layout.sizes),
            order="F",
        )
        for i in wanted:
            yield i, layout.cut(arr, i)

    @staticmethod
    def _from_runs(
        layout: _NrrdLayout, data: _NrrdData, wanted: list[int], total_bytes: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        stream = data.open(total_bytes)
        try:
            base = stream.tell()
            for i in wanted:
                offset, shape = layout.run(i)
                if data.compressed and base + offset < stream.tell():
                    # a backward seek would rewind to the start of the *file* (the header):
                    # reopen the compressed stream instead
                    _close_stream(stream)
                    stream = data.open(total_bytes)
                    base = stream.tell()
                stream.seek(base + offset)
                count = int(np.prod(shape, dtype=np.int64))
                buf = stream.read(count * layout.dtype.itemsize)
                if len(buf) < count * layout.dtype.itemsize:
                    raise CorruptFileError(layout.path, f"truncated NRRD data at slice {i}")
                block = np.frombuffer(buf, dtype=layout.dtype).reshape(shape, order="F")
                index = layout.index_for(i)
                yield i, layout.finish(block[index[: len(shape)]], index)
        finally:
            _close_stream(stream)

    @staticmethod
    def _from_whole(
        layout: _NrrdLayout, data: _NrrdData, wanted: list[int], offset: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        import nrrd

        with open(layout.path, "rb") as fh:
            fh.seek(offset)
            try:
                arr = nrrd.read_data(layout.header, fh, str(layout.path))
            except nrrd.NRRDError as exc:
                raise CorruptFileError(layout.path, f"cannot read NRRD data ({exc})") from None
        arr = np.asarray(arr).reshape(layout.sizes, order="F")
        for i in wanted:
            yield i, layout.cut(arr, i)


# ---------------------------------------------------------------------------------------------
# MetaImage (SimpleITK, optional)

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
        wanted = list(range(total)) if indices is None else [int(i) for i in indices]
        for i in wanted:
            if not 0 <= i < total:
                raise IndexError(f"{path}: image {i} out of range for {total} image(s)")
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
                block = block.astype(np.float32)
                block = block[..., :3] @ _LUMA if block.shape[-1] >= 3 else block[..., 0]
            if n_spatial == 3:
                block = np.take(block, 0, axis=plan.slice_axis)
            yield i, to_grey(plan.orient(block))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
