"""Image readers: one per format family, chosen by :mod:`hypermodal.io.registry`.

DICOM (:mod:`hypermodal.io.dicom`), NIfTI/Analyze/MGH (:mod:`~hypermodal.io.nifti`), NRRD
(:mod:`~hypermodal.io.nrrd`), MetaImage (:mod:`~hypermodal.io.metaimage`) and PNG/JPEG/TIFF/BMP
(:mod:`~hypermodal.io.raster`); the volume readers share the slicing rule of
:mod:`~hypermodal.io.orientation`.
"""

from hypermodal.common.errors import CorruptFileError, ImageReadError, UnsupportedFileError
from hypermodal.io.base import FileHeader
from hypermodal.io.registry import (
    iter_images,
    read_header,
    reader_for,
    register_reader,
    registered_readers,
    unregister_reader,
)

__all__ = [
    "CorruptFileError",
    "FileHeader",
    "ImageReadError",
    "UnsupportedFileError",
    "iter_images",
    "read_header",
    "reader_for",
    "register_reader",
    "registered_readers",
    "unregister_reader",
]
