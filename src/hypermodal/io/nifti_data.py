"""The voxels of a NIfTI/Analyze/MGH volume: sizes checked first, slices read in bounded memory.

:func:`check_sizes` compares what the header claims (dims × voxel type) with what the file can
hold before a voxel is read: the file size for uncompressed data, the most a gzip stream can
inflate to (:data:`~hypermodal.io.limits.DEFLATE_MAX_RATIO` × its size) for compressed data,
and the ceilings of :mod:`hypermodal.io.limits` (one image's bytes, images per file). A
NIfTI-2 header claiming 2³¹ slices is an error with its reason, never a catalog of 2³¹ rows.

:func:`iter_slices` reads the slices. Along the last spatial axis a slice is one contiguous run
of bytes, read on its own. Along another axis, a volume small enough
(:attr:`~hypermodal.io.limits.Limits.max_slab_bytes`) is read whole once; a larger one is read in
one pass over slabs of whole planes of the last axis, each slab's share of every wanted slice
gathered in memory when they fit half the budget, else in an anonymous temporary file laid out
slice by slice — so a 400×2000×2000 float32 ``.nii.gz`` whose superior axis is the first is
decompressed once and never has more than the budget in memory (it takes the wanted slices'
size on disk for the time of the read).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.errors import CorruptFileError, ImageReadError, UnsupportedFileError
from hypermodal.io.limits import DEFLATE_MAX_RATIO, current_limits
from hypermodal.io.orientation import SlicePlan, to_grey

__all__ = ["check_sizes", "iter_slices"]

#: bytes per voxel a read may hold besides the voxels themselves (nibabel's raw bytes, its
#: scaled float64 copy, the float32 grey): used to size whole reads and slabs
_READ_OVERHEAD = 12


def _dims(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{'×'.join(str(s) for s in shape)} {dtype.name}"


def check_sizes(
    path: Path, img: Any, image_file: Path, gzipped: bool, plan: SlicePlan, n_images: int
) -> None:
    """Refuse a volume whose header claims more than its file can hold, or more than the limits.

    Args:
        path: The file named by the caller (for the error).
        img: The nibabel image (header read, no voxels).
        image_file: The file that holds the voxels (the ``.img`` of an Analyze pair).
        gzipped: Whether the voxels are gzip-compressed.
        plan: The slice plan.
        n_images: The 2D images the reader will yield.

    Raises:
        CorruptFileError: The voxels the header describes cannot be in the file.
        UnsupportedFileError: An image or the image count over the limits.
    """
    shape = tuple(int(s) for s in img.shape)
    dtype = np.dtype(img.header.get_data_dtype())
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    needed = math.prod(shape) * dtype.itemsize
    try:
        size = os.path.getsize(image_file)
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read file ({exc.strerror or exc})") from None
    if gzipped:
        most = size * DEFLATE_MAX_RATIO
        if offset + needed > most:
            raise CorruptFileError(
                path,
                f"header says {_dims(shape, dtype)} ({needed} bytes), more than a gzip file "
                f"of {size} bytes can hold ({most} at most)",
            )
    elif offset + needed > size:
        raise CorruptFileError(
            path,
            f"truncated or lying header: {_dims(shape, dtype)} needs {needed} bytes from byte "
            f"{offset}, the file has {max(size - offset, 0)}",
        )
    limits = current_limits()
    if n_images > limits.max_images:
        raise UnsupportedFileError(
            path,
            f"{n_images} images ({_dims(shape, dtype)}), over the limit of {limits.max_images}",
        )
    one = plan.rows * plan.columns * dtype.itemsize
    if one > limits.max_image_bytes:
        raise UnsupportedFileError(
            path,
            f"one {plan.rows}×{plan.columns} {dtype.name} image is {one} bytes, over the limit "
            f"of {limits.max_image_bytes}",
        )


class _VolumeView:
    """Index a proxy as ``[x, y, z]``: trailing (4th+) axes fixed, a 2D image given a z of 1."""

    def __init__(self, dataobj: Any, n_spatial: int, fixed: tuple[int, ...]) -> None:
        self.dataobj = dataobj
        self.n_spatial = n_spatial
        self.fixed = fixed

    def __getitem__(self, index: Any) -> np.ndarray:
        full = (slice(None),) * 3 if index is Ellipsis else tuple(index)
        arr = np.asarray(self.dataobj[full[: self.n_spatial] + self.fixed])
        if self.n_spatial == 2 and len(full) == 3 and isinstance(full[2], slice):
            arr = arr[..., np.newaxis]
        return arr


def volume_view(dataobj: Any, spatial: tuple[int, ...], extra: tuple[int, ...], volume: int) -> Any:
    """The proxy of one volume, indexed ``[x, y, z]``."""
    if not extra and len(spatial) == 3:
        return dataobj
    fixed = (volume,) + (0,) * (len(extra) - 1) if extra else ()
    return _VolumeView(dataobj, len(spatial), fixed)


def read_or_corrupt(path: Path, fn: Callable[[], np.ndarray]) -> np.ndarray:
    """``fn()``, with a failed read turned into :class:`CorruptFileError`."""
    try:
        return fn()
    except (EOFError, OSError, ValueError, gzip.BadGzipFile, struct.error) as exc:
        raise CorruptFileError(
            path, f"cannot read voxel data ({type(exc).__name__}: {exc})"
        ) from None


def iter_slices(
    path: Path,
    dataobj: Any,
    shape: tuple[tuple[int, ...], tuple[int, ...]],
    plan: SlicePlan,
    wanted: list[int],
    itemsize: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, float32 image)`` for the image numbers ``wanted``, in that order.

    Args:
        path: The file (for errors).
        dataobj: The nibabel array proxy.
        shape: The spatial axes and the axes after them.
        plan: The slice plan.
        wanted: Image numbers (volume-major), already checked to be in range.
        itemsize: Bytes per stored voxel.
    """
    spatial, extra = shape
    n = plan.num_slices
    if len(spatial) < 3 or plan.slice_axis == 2:  # each slice is one run of bytes
        for i in wanted:
            volume, k = divmod(i, n)
            block = volume_view(dataobj, spatial, extra, volume)
            yield i, to_grey(read_or_corrupt(path, lambda b=block, k=k: plan.take(b, k)))
        return
    budget = current_limits().max_slab_bytes
    whole = math.prod(spatial) * (itemsize + _READ_OVERHEAD) <= budget
    for volume, run in _volume_runs(wanted, n):
        block = volume_view(dataobj, spatial, extra, volume)
        if whole:
            arr = read_or_corrupt(path, lambda b=block: np.asarray(b[...]))
            for i, k in run:
                yield i, to_grey(plan.take(arr, k))
            del arr
        else:
            yield from _slab_passes(path, block, spatial, plan, run, itemsize, budget)


def _volume_runs(wanted: list[int], n: int) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """Consecutive wanted images of the same volume: ``(volume, [(index, slice), ...])``."""
    run: list[tuple[int, int]] = []
    current = -1
    for i in wanted:
        volume, k = divmod(i, n)
        if volume != current and run:
            yield current, run
            run = []
        current = volume
        run.append((i, k))
    if run:
        yield current, run


def _slab_passes(
    path: Path,
    block: Any,
    spatial: tuple[int, ...],
    plan: SlicePlan,
    run: list[tuple[int, int]],
    itemsize: int,
    budget: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Slices along axis 0 or 1, gathered from one pass over slabs of whole z-planes.

    When the wanted slices fit half the budget they are gathered in memory; else each slab's
    share of every wanted slice is written to an anonymous temporary file, laid out slice by
    slice, and the slices are read back from it one at a time: one decompression of the volume
    whatever its size, memory bounded by the budget, disk by the wanted slices.
    """
    axis = plan.slice_axis
    nx, ny, nz = spatial
    other = ny if axis == 0 else nx  # the plane is (other, z)
    plane_bytes = other * nz * 4
    z_step = max(1, (budget // 4) // (nx * ny * (itemsize + _READ_OVERHEAD)))
    wanted = list(dict.fromkeys(k for _, k in run))
    in_memory = len(wanted) * plane_bytes <= budget // 2
    planes = {k: np.empty((nz, other), dtype=np.float32) for k in wanted} if in_memory else {}
    spill_file = _no_file() if in_memory else tempfile.TemporaryFile(prefix="hypermodal-slices-")
    with spill_file as spill:
        place = {k: n * plane_bytes for n, k in enumerate(wanted)}
        for z0 in range(0, nz, z_step):
            z1 = min(z0 + z_step, nz)
            slab = to_grey(read_or_corrupt(path, lambda a=z0, b=z1: block[:, :, a:b]))
            for k in wanted:
                part = (slab[k] if axis == 0 else slab[:, k]).T  # (z1 - z0, other)
                if in_memory:
                    planes[k][z0:z1] = part
                else:
                    _stage(path, spill, place[k] + z0 * other * 4, part)
            del slab
        for i, k in run:
            plane = planes[k] if in_memory else _unstage(path, spill, place[k], (nz, other))
            yield i, to_grey(plan.orient(plane.T))


@contextlib.contextmanager
def _no_file() -> Iterator[None]:
    yield None


def _stage(path: Path, spill: Any, offset: int, part: np.ndarray) -> None:
    try:
        os.pwrite(spill.fileno(), np.ascontiguousarray(part, dtype=np.float32).tobytes(), offset)
    except OSError as exc:
        raise ImageReadError(
            path, f"cannot stage the volume's slices in a temporary file ({exc.strerror or exc})"
        ) from None


def _unstage(path: Path, spill: Any, offset: int, shape: tuple[int, int]) -> np.ndarray:
    size = shape[0] * shape[1] * 4
    data = os.pread(spill.fileno(), size, offset)
    if len(data) != size:  # pragma: no cover - the file was written just before
        raise ImageReadError(path, "the temporary file of the volume's slices came back short")
    return np.frombuffer(data, dtype=np.float32).reshape(shape)
