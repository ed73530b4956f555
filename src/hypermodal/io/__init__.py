"""Image readers: one per format family, chosen by :mod:`hypermodal.io.registry`.

DICOM (:mod:`hypermodal.io.dicom`), NIfTI/Analyze/MGH (:mod:`~hypermodal.io.nifti`), NRRD
(:mod:`~hypermodal.io.nrrd`), MetaImage (:mod:`~hypermodal.io.metaimage`) and PNG/JPEG/TIFF/BMP
(:mod:`~hypermodal.io.raster`); the volume readers share the slicing rule of
:mod:`~hypermodal.io.orientation`.

Every reader checks what a file claims against what it can hold, and against the ceilings of
:mod:`~hypermodal.io.limits`, before it allocates or decodes anything; only regular files are
opened (:func:`~hypermodal.io.streams.check_regular`); :mod:`~hypermodal.io.inputs` lists the
files under a folder (links followed once, nothing opened, every entry told).
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
