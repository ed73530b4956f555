"""Frames to ``float32`` 2D arrays in modality units, one frame at a time.

Each frame is decoded by handing the open file (positioned at the pixel data value) to the
transfer syntax's pydicom decoder, so frames that were not asked for are never decoded; native
single-sample MONOCHROME frames of 8/16/32 bits from a file whose header was walked directly
are instead read with one ``readinto`` each (:func:`native_layout`), giving the same arrays.
Each frame is then converted (:class:`Transform`):

1. the modality LUT is applied — Rescale Slope/Intercept (per frame from the functional groups of
   enhanced multi-frame files, else shared, else top level) or a Modality LUT Sequence;
2. MONOCHROME1 is inverted within the modality range, so bright = dense for every file;
3. colour becomes grey: the Y channel for YBR_*, ITU-R BT.601 luminance for RGB and
   PALETTE COLOR (after the palette is applied).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, as_pixel_options, get_decoder

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.constants import LUMA_WEIGHTS
from hypermodal.io.dicom.codec import decode_error
from hypermodal.io.dicom.header import OpenedFile

#: errors of bad pixel attributes while preparing or transforming a frame
_ATTRIBUTE_ERRORS = (ValueError, TypeError, AttributeError, KeyError)
#: a frame's raw layout for :func:`read_native`: ``(dtype, rows, columns, unused high bits)``
NativeLayout = tuple[np.dtype, int, int, int]


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _invalid_attributes(path: Path, exc: Exception) -> CorruptFileError:
    return CorruptFileError(path, f"invalid pixel attributes ({type(exc).__name__}: {exc})")


def _number(value: Any, default: float) -> float:
    """A DS value (text, possibly blank or multi-valued) as float."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or str(value).strip() == "":
        return default
    return float(value)


def _functional_rescale(ds: Dataset, keyword: str, index: int) -> tuple[float, float] | None:
    groups = ds.get(keyword)
    if not groups:
        return None
    if keyword == "PerFrameFunctionalGroupsSequence":
        if index >= len(groups):
            return None
        item = groups[index]
    else:
        item = groups[0]
    transform = item.get("PixelValueTransformationSequence")
    if not transform:
        return None
    t = transform[0]
    if "RescaleSlope" not in t and "RescaleIntercept" not in t:
        return None
    return _number(t.get("RescaleSlope"), 1.0), _number(t.get("RescaleIntercept"), 0.0)


def _stored_range(v: dict[str, Any]) -> tuple[float, float]:
    bits = int(v.get("BitsStored") or v.get("BitsAllocated") or 16)
    if int(v.get("PixelRepresentation") or 0):
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


_PIXEL_OPTION_NAMES = {
    "SamplesPerPixel": "samples_per_pixel",
    "PhotometricInterpretation": "photometric_interpretation",
    "PlanarConfiguration": "planar_configuration",
    "Rows": "rows",
    "Columns": "columns",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
}


def _pixel_options(v: dict[str, Any], ds: Dataset, frames: int) -> dict[str, Any]:
    """Decoder options from the already-decoded header values (as ``as_pixel_options`` does)."""
    opts = {name: v[k] for k, name in _PIXEL_OPTION_NAMES.items() if v.get(k) is not None}
    if not all(isinstance(x, int | str) for x in opts.values()):
        opts = as_pixel_options(ds)  # unusual values: let pydicom interpret them
    opts["number_of_frames"] = frames
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        opts["extended_offsets"] = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return opts


class Transform:
    """Per-file pixel processing: modality LUT, MONOCHROME1 inversion, colour to grey.

    Args:
        ds: The dataset with the pixel-processing elements (LUT, palette, functional groups).
        v: The header values.
        path: The file (for errors).
        float_pixels: The pixels are Float/Double Float Pixel Data (no stored range).
    """

    def __init__(
        self, ds: Dataset, v: dict[str, Any], path: Path, *, float_pixels: bool = False
    ) -> None:
        self.ds = ds
        self.v = v
        self.path = path
        self.float_pixels = float_pixels
        self.photometric = str(v.get("PhotometricInterpretation") or "MONOCHROME2").upper()
        self.has_lut = "ModalityLUTSequence" in ds and bool(ds.ModalityLUTSequence)
        self.per_frame = "PerFrameFunctionalGroupsSequence" in ds
        self.shared = (
            _functional_rescale(ds, "SharedFunctionalGroupsSequence", 0)
            if "SharedFunctionalGroupsSequence" in ds
            else None
        )
        top = None
        if v.get("RescaleSlope") is not None or v.get("RescaleIntercept") is not None:
            top = _number(v.get("RescaleSlope"), 1.0), _number(v.get("RescaleIntercept"), 0.0)
        self.fixed = self.shared or top

    def rescale(self, index: int) -> tuple[float, float] | None:
        """(slope, intercept) for frame ``index``: per-frame groups, shared groups, top level."""
        if self.per_frame:
            found = _functional_rescale(self.ds, "PerFrameFunctionalGroupsSequence", index)
            if found is not None:
                return found
        return self.fixed

    def __call__(self, arr: np.ndarray, index: int, photometric: str) -> np.ndarray:
        """Frame ``index`` as decoded (``photometric`` as the decoder reports it) to grey."""
        photometric = photometric.strip().upper()
        if arr.ndim == 3:
            return self._grey(arr, photometric)
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(arr, self.ds)
            return self._grey(rgb, "RGB")
        if self.has_lut:
            out = np.asarray(apply_modality_lut(arr, self.ds), dtype=np.float32)
        else:
            out = arr.astype(np.float32)  # a new, writeable array: the steps below are in place
            rescale = self.rescale(index)
            if rescale is not None:
                if rescale[0] != 1.0:
                    out *= np.float32(rescale[0])
                if rescale[1] != 0.0:
                    out += np.float32(rescale[1])
        if photometric == "MONOCHROME1":
            out = self._invert(out, index)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _invert(self, out: np.ndarray, index: int) -> np.ndarray:
        """Mirror values within the modality range (so bright = dense, units kept)."""
        if self.float_pixels:  # Float/Double Float Pixel Data: no stored range to mirror in
            lo, hi = float(out.min()), float(out.max())
        else:
            smin, smax = _stored_range(self.v)
            if self.has_lut:
                ends = np.asarray(
                    apply_modality_lut(np.array([smin, smax], dtype=np.int64), self.ds),
                    dtype=np.float64,
                )
            else:
                rescale = self.rescale(index) or (1.0, 0.0)
                ends = np.array([smin, smax]) * rescale[0] + rescale[1]
            lo, hi = float(ends.min()), float(ends.max())
        np.subtract(np.float32(lo + hi), out, out=out)
        return out

    @staticmethod
    def _grey(arr: np.ndarray, photometric: str) -> np.ndarray:
        if photometric.startswith("YBR"):
            return np.ascontiguousarray(arr[..., 0], dtype=np.float32)
        if arr.shape[-1] < 3:
            return np.ascontiguousarray(arr[..., 0], dtype=np.float32)
        return np.ascontiguousarray(arr[..., :3].astype(np.float32, copy=False) @ LUMA_WEIGHTS)


def native_layout(opened: OpenedFile) -> NativeLayout | None:
    """``(dtype, rows, columns, unused high bits)`` when ``opened``'s frames can be read straight
    from the file: a plain little-endian file (the fast header walk), native ``PixelData``, one
    sample per pixel, MONOCHROME1/2, 8/16/32 bits allocated, no modality LUT or functional
    groups. Everything else goes through pydicom's decoder."""
    if not opened.fast or opened.pixel is None or opened.pixel.encapsulated:
        return None
    v = opened.v
    try:
        samples, rows, cols = v["SamplesPerPixel"], v["Rows"], v["Columns"]
        allocated, stored = v["BitsAllocated"], v["BitsStored"]
        signed, photometric = v["PixelRepresentation"], v["PhotometricInterpretation"]
    except KeyError:
        return None
    numbers = (samples, rows, cols, allocated, stored, signed)
    if not all(type(x) is int for x in numbers) or not isinstance(photometric, str):
        return None
    if (
        samples != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
        or allocated not in (8, 16, 32)
        or not 1 <= stored <= allocated
        or signed not in (0, 1)
        or not 0 < rows <= 0xFFFF
        or not 0 < cols <= 0xFFFF
    ):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    return dtype, rows, cols, allocated - stored


def read_native(
    opened: OpenedFile, wanted: list[int], layout: NativeLayout
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames read with one ``readinto`` each: the same arrays pydicom's native decoder gives
    (little-endian integers, unused high bits cleared or sign-extended), then the transform."""
    dtype, rows, cols, unused = layout
    pixel = opened.pixel
    assert pixel is not None
    transform = Transform(opened.ds, opened.v, opened.path)
    photometric = transform.photometric
    frame_bytes = rows * cols * dtype.itemsize
    fp = opened.fp
    for index in wanted:
        fp.seek(pixel.value_offset + index * frame_bytes)
        arr = np.empty((rows, cols), dtype=dtype)
        if fp.readinto(memoryview(arr).cast("B")) != frame_bytes:  # type: ignore[attr-defined]
            raise CorruptFileError(opened.path, f"pixel data ended before frame {index}")
        if unused:
            np.left_shift(arr, unused, out=arr)
            np.right_shift(arr, unused, out=arr)
        try:
            image = transform(arr, index, photometric)
        except _ATTRIBUTE_ERRORS as exc:
            raise _invalid_attributes(opened.path, exc) from None
        yield index, image


def decode_frames(opened: OpenedFile, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, image)`` for the frames ``wanted`` of an opened file, in that order.

    Args:
        opened: The file, parsed with ``PIXEL_TAGS``.
        wanted: Frame numbers, already checked to be in range.

    Yields:
        ``(index, image)``: ``image`` is 2D ``float32`` in modality units.

    Raises:
        UnsupportedFileError: No pixel data, or the installed codecs cannot decode them.
        CorruptFileError: Truncated or undecodable pixel data, or invalid pixel attributes.
    """
    path, ts = opened.path, opened.ts
    native = native_layout(opened)
    if native is not None:
        yield from read_native(opened, wanted, native)
        return
    try:
        src, opts, transform = _prepare(opened)
    except _ATTRIBUTE_ERRORS as exc:
        raise _invalid_attributes(path, exc) from None
    iterator = get_decoder(ts).iter_array(src, indices=wanted, raw=True, validate=True, **opts)
    for index in wanted:
        try:
            arr, meta = next(iterator)
        except StopIteration:
            raise CorruptFileError(path, f"pixel data ended before frame {index}") from None
        except (UnsupportedFileError, CorruptFileError):
            raise
        except (ValueError, RuntimeError, EOFError, OSError, struct.error) as exc:
            raise decode_error(path, ts, exc) from None
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a native decoder's panic (pyo3)
            raise CorruptFileError(
                path, f"the {ts.name} decoder failed ({type(exc).__name__}: {_short(exc)})"
            ) from None
        photometric = str(meta.get("photometric_interpretation", transform.photometric))
        try:
            image = transform(arr, index, photometric)
        except _ATTRIBUTE_ERRORS as exc:
            raise _invalid_attributes(path, exc) from None
        yield index, image


def _prepare(opened: OpenedFile) -> tuple[Any, dict[str, Any], Transform]:
    """Decoder source and options, and the per-file transform."""
    path = opened.path
    if opened.deflated:
        # a deflated dataset can't be positioned into: read it whole (rare syntax)
        opened.fp.seek(0)
        ds = pydicom.dcmread(opened.fp, force=True)
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise UnsupportedFileError(path, "no pixel data")
        return ds, {}, Transform(ds, opened.v, path)
    pixel = opened.pixel
    assert pixel is not None
    opened.fp.seek(pixel.value_offset)
    opts = _pixel_options(opened.v, opened.ds, opened.frames)
    opts["transfer_syntax_uid"] = opened.ts
    opts["pixel_keyword"] = pixel.keyword
    if pixel.vr is not None:
        opts["pixel_vr"] = pixel.vr
    float_pixels = pixel.keyword != "PixelData"
    return opened.fp, opts, Transform(opened.ds, opened.v, path, float_pixels=float_pixels)
