"""NRRD volumes (``.nrrd``, and ``.nhdr`` with detached data) through pynrrd.

Slices follow the slicing rule of :mod:`hypermodal.io.orientation`: 2D slices along the spatial
axis closest to superior–inferior, oriented rows anterior → posterior and columns patient
right → left; only the first volume of 4D+ data; colour becomes luminance.

NRRD is read without loading the whole volume wherever the layout allows it: the header with
``nrrd.read_header``; a slice along the last spatial axis is one contiguous run of bytes, read
on its own (also from a gzip/bzip2 stream, which only moves forward when slices are asked for
in order); raw data sliced along another axis are memory-mapped. Only compressed or ASCII data
sliced along a non-last axis are decompressed whole, once per :meth:`NrrdReader.images` call.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hypermodal.common.errors import CorruptFileError
from hypermodal.io.base import FileHeader, wanted_indices
from hypermodal.io.nrrd_layout import NrrdData, NrrdLayout, read_nrrd_header
from hypermodal.io.streams import close_stream

__all__ = ["NrrdReader"]


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
        header, _ = read_nrrd_header(path)
        layout = NrrdLayout(path, header)
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
                "zooms": _zooms(header, len(layout.sizes)),
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
        header, offset = read_nrrd_header(path)
        layout = NrrdLayout(path, header)
        total = layout.plan.num_slices
        wanted = wanted_indices(path, indices, total)
        if not wanted:
            return
        data = NrrdData(path, header, offset)
        total_bytes = math.prod(layout.sizes) * layout.dtype.itemsize
        try:
            if data.raw and data.byte_skip != -1 and not layout.contiguous():
                yield from self._from_memmap(layout, data, wanted, total_bytes)
            elif (data.raw or data.compressed) and layout.contiguous():
                yield from self._from_runs(layout, data, wanted, total_bytes)
            else:
                data.check_whole(math.prod(layout.sizes), layout.dtype.itemsize)
                yield from self._from_whole(layout, data, wanted, offset)
        except (EOFError, OSError, ValueError, gzip.BadGzipFile) as exc:
            raise CorruptFileError(
                path, f"cannot read NRRD data ({type(exc).__name__}: {exc})"
            ) from None

    @staticmethod
    def _from_memmap(
        layout: NrrdLayout, data: NrrdData, wanted: list[int], total_bytes: int
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
        layout: NrrdLayout, data: NrrdData, wanted: list[int], total_bytes: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        stream = data.open(total_bytes)
        try:
            base = stream.tell()
            for i in wanted:
                offset, shape = layout.run(i)
                if data.compressed and base + offset < stream.tell():
                    # a backward seek would rewind to the start of the *file* (the header):
                    # reopen the compressed stream instead
                    close_stream(stream)
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
            close_stream(stream)

    @staticmethod
    def _from_whole(
        layout: NrrdLayout, data: NrrdData, wanted: list[int], offset: int
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


def _zooms(header: dict[str, Any], ndim: int) -> list[float]:
    """Voxel size (mm) per NRRD axis: the length of its space direction, else its spacing; NaN
    for an axis without either (colour, time)."""
    out = [float("nan")] * ndim
    directions = header.get("space directions")
    spacings = header.get("spacings")
    for i in range(ndim):
        row = directions[i] if directions is not None and i < len(directions) else None
        if row is not None and np.all(np.isfinite(np.asarray(row, dtype=float))):
            out[i] = float(np.linalg.norm(np.asarray(row, dtype=float)))
        elif spacings is not None and i < len(spacings):
            value = float(spacings[i])
            out[i] = value if np.isfinite(value) else float("nan")
    return out
