"""DICOM reader (pydicom ≥ 3).

The header is read from an open file, which then sits at the pixel data element: its tag and
length are read directly (a few bytes), so a missing or truncated pixel data element is noticed
without decoding anything (:mod:`~hypermodal.io.dicom.header`). Images are decoded one frame at
a time by handing that same open file to the transfer syntax's pydicom decoder, so a file is
parsed once per call and frames that were not asked for are never decoded
(:mod:`~hypermodal.io.dicom.pixels`). Only the elements the reader uses are kept while parsing,
and the plain text/US header values are decoded from their raw bytes
(:mod:`~hypermodal.io.dicom.tags`): together about 1.5× faster than a plain
``dcmread(stop_before_pixels=True)`` followed by attribute access.

Fast path (most archive files): a little-endian file with a preamble (implicit or explicit VR)
is walked straight from one read of its first 16 KB (struct over bytes, ~4–5× faster than the
pydicom parse above, :mod:`~hypermodal.io.dicom.fast_header`), and native single-sample
MONOCHROME frames of 8/16/32 bits are read with one ``readinto`` each instead of going through
pydicom's decoder. Both give exactly what the general path gives (``DicomReader(fast_path=False)``;
``tests/io/test_dicom_fastpath.py`` compares them); anything unusual (big endian, deflate, a
modality LUT, functional groups, a zero-length number, tags out of order) takes the general path.

Sizes are checked before anything is allocated or decoded (:mod:`~hypermodal.io.dicom.sizes`):
NumberOfFrames against the pixel data length or the fragments, the JPEG / JPEG-LS / JPEG 2000
codestream's own size against Rows/Columns, one frame against
:attr:`~hypermodal.io.limits.Limits.max_image_bytes`; a decoder's panic becomes a
:class:`~hypermodal.common.errors.CorruptFileError`.

Each frame becomes a ``float32`` 2D array in modality units: modality LUT applied, MONOCHROME1
inverted within the modality range, colour converted to grey (see
:mod:`~hypermodal.io.dicom.pixels`).

Example:
    >>> reader = DicomReader()
    >>> reader.header(path).num_images                                    # doctest: +SKIP
    1
    >>> index, image = next(reader.images(path))                          # doctest: +SKIP
"""

from hypermodal.io.constants import LUMA_WEIGHTS
from hypermodal.io.dicom.reader import DicomReader, Route
from hypermodal.io.dicom.sniff import sniff_dicom
from hypermodal.io.dicom.tags import HEADER_TAGS, PIXEL_TAGS, is_localizer

__all__ = [
    "HEADER_TAGS",
    "LUMA_WEIGHTS",
    "PIXEL_TAGS",
    "DicomReader",
    "Route",
    "is_localizer",
    "sniff_dicom",
]
