"""How an NRRD file is laid out: its axes and element type, and where its data bytes are.

:class:`NrrdLayout` reads the header fields (sizes, kinds, space directions, type, endian) and
plans the slices (:mod:`hypermodal.io.orientation`); :class:`NrrdData` opens the data part,
attached or detached, raw or compressed.
"""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.limits import DEFLATE_MAX_RATIO, current_limits
from hypermodal.io.orientation import (
    SlicePlan,
    axcodes_from_directions,
    channels_to_grey,
    plan_slices,
    to_grey,
)
from hypermodal.io.streams import check_regular

__all__ = ["NrrdData", "NrrdLayout", "read_nrrd_header"]

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
# the other spellings of the NRRD type names (NRRD0005 "type" field)
_NRRD_TYPE_ALIASES = {
    alias: name
    for name, aliases in {
        "int8": ("signed char", "int8_t"),
        "uint8": ("uchar", "unsigned char", "uint8_t"),
        "int16": ("short", "short int", "signed short", "signed short int", "int16_t"),
        "uint16": ("ushort", "unsigned short", "unsigned short int", "uint16_t"),
        "int32": ("int", "signed int", "int32_t"),
        "uint32": ("uint", "unsigned int", "uint32_t"),
        "int64": (
            "longlong",
            "long long",
            "long long int",
            "signed long long",
            "signed long long int",
            "int64_t",
        ),
        "uint64": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64_t"),
    }.items()
    for alias in aliases
}


class NrrdLayout:
    """Axes of an NRRD file and how to cut slices from it.

    Args:
        path: The file (for errors).
        header: Its header fields (:func:`read_nrrd_header`).

    Raises:
        UnsupportedFileError: Not 2 or 3 spatial axes, or an element type that is not read.
    """

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
        self._check_limits()

    def _check_limits(self) -> None:
        """The image count and one image's bytes against :func:`current_limits`."""
        limits, plan = current_limits(), self.plan
        if min(self.sizes) < 1:
            raise CorruptFileError(self.path, f"NRRD sizes {self.sizes}: an axis of length 0")
        if plan.num_slices > limits.max_images:
            raise UnsupportedFileError(
                self.path,
                f"NRRD sizes {self.sizes}: {plan.num_slices} images, over the limit of "
                f"{limits.max_images}",
            )
        one = plan.rows * plan.columns * self.dtype.itemsize
        if self.color_axis is not None:
            one *= self.sizes[self.color_axis]
        if one > limits.max_image_bytes:
            raise UnsupportedFileError(
                self.path,
                f"one {plan.rows}×{plan.columns} {self.dtype.name} image is {one} bytes, over "
                f"the limit of {limits.max_image_bytes}",
            )

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
            cut = channels_to_grey(np.moveaxis(cut, kept.index(self.color_axis), -1))
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


def read_nrrd_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header fields of an NRRD file, and the byte offset just after the header.

    Raises:
        CorruptFileError: The file cannot be read, or its header is malformed.
    """
    import nrrd

    check_regular(path)
    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None
    except (nrrd.NRRDError, ValueError, StopIteration, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"malformed NRRD header ({exc})") from None
    return dict(header), offset


class NrrdData:
    """Opens the data part of an NRRD file (attached or detached, raw or compressed).

    Args:
        path: The ``.nrrd`` or ``.nhdr`` file.
        header: Its header fields (:func:`read_nrrd_header`).
        offset: The byte offset just after the header.

    Raises:
        UnsupportedFileError: The data are split over several detached files.
    """

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
        """Whether the data are gzip- or bzip2-compressed."""
        return self.encoding in ("gzip", "gz", "bzip2", "bz2")

    @property
    def raw(self) -> bool:
        """Whether the data are raw bytes."""
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

    def check_whole(self, voxels: int, itemsize: int) -> None:
        """Refuse to read ``voxels`` whole when the data cannot hold them: raw data in the
        file, at most :data:`~hypermodal.io.limits.DEFLATE_MAX_RATIO` × the file for compressed
        data, one voxel per two characters (a digit and a separator) for ASCII data."""
        try:
            size = os.path.getsize(self.data_path)
        except OSError as exc:
            raise CorruptFileError(self.path, f"cannot read data ({exc.strerror or exc})") from None
        needed = voxels * itemsize
        if self.compressed:
            most, what = size * DEFLATE_MAX_RATIO, f"{self.encoding} data of {size} bytes"
        elif self.raw:
            most, what = size, f"a data file of {size} bytes"
        else:
            most, what = (size + 1) // 2 * itemsize, f"{self.encoding} data of {size} bytes"
        if needed > most:
            raise CorruptFileError(
                self.path, f"header says {voxels} voxels ({needed} bytes), more than {what} hold"
            )

    def data_start(self) -> int:
        """Byte offset of the data in :attr:`data_path` (raw encoding only)."""
        with open(self.data_path, "rb") as fh:
            fh.seek(self.offset)
            for _ in range(self.line_skip):
                fh.readline()
            return fh.tell() + max(self.byte_skip, 0)
