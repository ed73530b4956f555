"""Image readers: one module per format family, chosen by :mod:`hypermodal.io.registry`."""

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
