"""The DICOM reader: headers from :mod:`~hypermodal.io.dicom.header`, frames from
:mod:`~hypermodal.io.dicom.pixels`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from hypermodal.common.errors import CorruptFileError
from hypermodal.io.base import FileHeader, wanted_indices
from hypermodal.io.dicom.header import OpenedFile
from hypermodal.io.dicom.pixels import decode_frames, native_layout
from hypermodal.io.dicom.sniff import sniff_dicom
from hypermodal.io.dicom.tags import (
    HEADER_TAGS,
    PIXEL_TAGS,
    float_values,
    is_localizer,
    text_value,
    upper_values,
)

#: how a file's frames are read: see :meth:`DicomReader.route`
Route = Literal["native", "walk", "pydicom"]


class DicomReader:
    """Reader for DICOM files (also bare datasets without preamble and gzip-wrapped files).

    Args:
        fast_path: Walk plain little-endian headers directly and read native frames with one
            ``readinto`` each (the default). Off, every file goes through pydicom's parser and
            decoders; the headers, images and errors are the same either way.

    Attributes:
        name: ``"dicom"``.
        extensions: Suffixes tried when content sniffing is inconclusive.
    """

    name: ClassVar[str] = "dicom"
    extensions: ClassVar[tuple[str, ...]] = (".dcm", ".dicom", ".dic", ".ima", ".dcm.gz")

    def __init__(self, *, fast_path: bool = True) -> None:
        self.fast_path = fast_path

    def __repr__(self) -> str:
        return "DicomReader()" if self.fast_path else "DicomReader(fast_path=False)"

    def sniff(self, path: Path, head: bytes) -> bool:
        """True for "DICM" at offset 128 or a plausible bare dataset (see :func:`sniff_dicom`)."""
        return sniff_dicom(head)

    def header(self, path: Path) -> FileHeader:
        """Read DICOM metadata without pixel data.

        Args:
            path: The file (may be gzip-compressed).

        Returns:
            The file's header; ``num_images`` is NumberOfFrames (1 when absent).

        Raises:
            UnsupportedFileError: Not DICOM, no pixel data (SR, RTSTRUCT, …), or no installed
                codec for its transfer syntax (the reason names the syntax and what to install).
            CorruptFileError: Truncated or malformed file.
        """
        path = Path(path)
        opened = OpenedFile(path, HEADER_TAGS, fast_path=self.fast_path, every_frame=False)
        try:
            return _header_from(opened)
        finally:
            opened.close()

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode frames one at a time, in the order of ``indices`` (all frames when None).

        Args:
            path: The file (may be gzip-compressed).
            indices: Frame numbers (0-based) to decode; others are skipped without decoding.

        Yields:
            ``(index, image)``: ``image`` is 2D ``float32`` in modality units (rescale applied,
            MONOCHROME1 inverted, colour converted to grey).

        Raises:
            IndexError: An index outside ``[0, NumberOfFrames)`` (raised before decoding).
            UnsupportedFileError: No pixel data, or no codec for the transfer syntax.
            CorruptFileError: Truncated or undecodable pixel data.
        """
        path = Path(path)
        opened = OpenedFile(path, PIXEL_TAGS, fast_path=self.fast_path)
        try:
            frames = opened.frames
            wanted = wanted_indices(path, indices, frames, "frame")
            if not wanted:
                return
            yield from decode_frames(opened, wanted)
        finally:
            opened.close()

    def route(self, path: Path) -> Route:
        """How :meth:`images` reads a file's frames (for benchmarks and checks).

        Args:
            path: The file.

        Returns:
            ``"native"``: the header is walked directly and the frames are read straight from
            the file; ``"walk"``: the header is walked directly, the frames go through pydicom's
            decoder; ``"pydicom"``: pydicom parses and decodes.

        Raises:
            ImageReadError: The file cannot be read (as :meth:`images` would raise).
        """
        opened = OpenedFile(Path(path), PIXEL_TAGS, fast_path=self.fast_path)
        try:
            if not opened.fast:
                return "pydicom"
            return "native" if native_layout(opened) is not None else "walk"
        finally:
            opened.close()


def _spacing(ds: Any) -> list[float] | None:
    """PixelSpacing, else ImagerPixelSpacing (radiographs), when positive."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = float_values(ds, keyword)
        if values and all(v > 0 for v in values):
            return values
    return None


def _instance_number(ds: Any) -> int | None:
    """InstanceNumber as an int (None when absent or not a number)."""
    numbers = float_values(ds, "InstanceNumber")
    return int(numbers[0]) if numbers and np.isfinite(numbers[0]) else None


def slice_position(ds: Any) -> float | None:
    """Where the image lies along its slice normal (mm): ImagePositionPatient projected on the
    cross product of ImageOrientationPatient's row and column directions, so the images of a
    series sort in space whatever their file names or instance numbers (None when absent)."""
    position = float_values(ds, "ImagePositionPatient")
    orientation = float_values(ds, "ImageOrientationPatient")
    if not position or len(position) != 3:
        return None
    normal = (0.0, 0.0, 1.0)
    if orientation and len(orientation) == 6:  # plain floats: a header pass does this per file
        (a, b, c), (d, e, f) = orientation[:3], orientation[3:]
        cross = (b * f - c * e, c * d - a * f, a * e - b * d)
        norm = math.sqrt(sum(x * x for x in cross))
        if math.isfinite(norm) and norm > 1e-6:
            normal = (cross[0] / norm, cross[1] / norm, cross[2] / norm)
    value = float(sum(n * p for n, p in zip(normal, position, strict=True)))
    return value if math.isfinite(value) else None


def _header_from(opened: OpenedFile) -> FileHeader:
    ds = opened.v
    image_type = upper_values(ds, "ImageType")
    extra: dict[str, Any] = {
        "sop_class": text_value(ds, "SOPClassUID"),
        "series_description": text_value(ds, "SeriesDescription"),
        "study_description": text_value(ds, "StudyDescription"),
        "study_date": text_value(ds, "StudyDate"),
        "instance_number": _instance_number(ds),
        "slice_position": slice_position(ds),
        "manufacturer": text_value(ds, "Manufacturer"),
        "image_type": "\\".join(image_type) or None,
        "bits_stored": int(ds["BitsStored"]) if ds.get("BitsStored") is not None else None,
        "samples_per_pixel": int(ds.get("SamplesPerPixel") or 1),
        "pixel_spacing": _spacing(ds),
        "slice_thickness": (float_values(ds, "SliceThickness") or [None])[0],
        "gzip": opened.gzipped,
    }
    try:
        rows, columns = int(ds["Rows"]), int(ds["Columns"])
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(opened.path, f"invalid Rows/Columns ({exc})") from None
    return FileHeader(
        path=str(opened.path),
        format="dicom",
        num_images=opened.frames,
        rows=rows,
        columns=columns,
        modality=text_value(ds, "Modality"),
        patient=text_value(ds, "PatientID"),
        study=text_value(ds, "StudyInstanceUID"),
        series=text_value(ds, "SeriesInstanceUID"),
        instance=text_value(ds, "SOPInstanceUID"),
        body_part=text_value(ds, "BodyPartExamined"),
        localizer=is_localizer(image_type, extra["series_description"]),
        photometric=text_value(ds, "PhotometricInterpretation"),
        transfer_syntax=str(opened.ts),
        extra=extra,
    )
