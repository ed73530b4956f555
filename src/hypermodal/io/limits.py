"""How large a file may say it is before anything is allocated: the readers' size ceilings.

Every reader checks what a file claims (rows, columns, frames, bits, a volume's dims and voxel
type) against what the file can hold — the pixel data length, the number of fragments, the file
size, the most a gzip stream can inflate to — and against the ceilings here, *before* it
allocates a buffer or hands the file to a native decoder. A file that lies is an
:class:`~hypermodal.common.errors.CorruptFileError` (or :class:`UnsupportedFileError` when it
is honest but over a ceiling) with the numbers in its reason, never a huge allocation.

The ceilings are process-wide and come from the environment, so worker processes started by a
stage see the same values as the process that started them:

=================================  ===========================================  ==============
variable                           what it bounds                               default
=================================  ===========================================  ==============
``HYPERMODAL_MAX_IMAGE_BYTES``     one decoded 2D image (a frame, a slice)      2 GiB
``HYPERMODAL_MAX_IMAGES``          the 2D images one file may yield             1,000,000
``HYPERMODAL_MAX_HEADER_BYTES``    a DICOM header (the bytes before the pixels) 64 MiB
``HYPERMODAL_MAX_SLAB_BYTES``      voxels a volume reader holds at once         256 MiB
=================================  ===========================================  ==============

:func:`set_limits` changes them for this process and for the processes it starts afterwards;
:func:`limits_set` does so for a ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

__all__ = ["DEFLATE_MAX_RATIO", "Limits", "current_limits", "limits_set", "set_limits"]

#: the most a deflate stream (gzip, zlib) can expand: 258 bytes per 2-bit code, about 1032:1
DEFLATE_MAX_RATIO = 1032

_ENV = {
    "max_image_bytes": "HYPERMODAL_MAX_IMAGE_BYTES",
    "max_images": "HYPERMODAL_MAX_IMAGES",
    "max_header_bytes": "HYPERMODAL_MAX_HEADER_BYTES",
    "max_slab_bytes": "HYPERMODAL_MAX_SLAB_BYTES",
}


@dataclass(frozen=True)
class Limits:
    """The readers' ceilings (see the module doc).

    Attributes:
        max_image_bytes: Bytes of one decoded 2D image, at the file's own sample size.
        max_images: 2D images (frames, slices, pages) one file may yield.
        max_header_bytes: Bytes a DICOM header may take before its pixel data.
        max_slab_bytes: Voxels (in bytes) a volume reader holds at once when it cannot read a
            slice straight from the file (a gzip volume sliced along a non-last axis).
    """

    max_image_bytes: int = 2 * 1024**3
    max_images: int = 1_000_000
    max_header_bytes: int = 64 * 1024**2
    max_slab_bytes: int = 256 * 1024**2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, not {value!r}")


_cached: Limits | None = None


def _from_environment() -> Limits:
    values: dict[str, int] = {}
    for name, var in _ENV.items():
        text = os.environ.get(var, "").strip().replace("_", "")
        if not text:
            continue
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{var} must be a positive integer, not {text!r}") from None
    return Limits(**values)


def current_limits() -> Limits:
    """The ceilings in force in this process (read from the environment once)."""
    global _cached
    if _cached is None:
        _cached = _from_environment()
    return _cached


def set_limits(**changes: int) -> Limits:
    """Change ceilings for this process and the worker processes it starts from now on.

    Args:
        **changes: Any of :class:`Limits`' fields, e.g. ``max_image_bytes=2**30``.

    Returns:
        The ceilings now in force.

    Raises:
        ValueError: An unknown name, or a value that is not a positive integer.
    """
    global _cached
    unknown = sorted(set(changes) - set(_ENV))
    if unknown:
        raise ValueError(f"unknown limit(s) {unknown}; known: {sorted(_ENV)}")
    limits = replace(current_limits(), **changes)
    for name in changes:
        os.environ[_ENV[name]] = str(getattr(limits, name))
    _cached = limits
    return limits


@contextlib.contextmanager
def limits_set(**changes: int) -> Iterator[Limits]:
    """:func:`set_limits` for the duration of a ``with`` block, then the previous ceilings back.

    Args:
        **changes: As for :func:`set_limits`.

    Yields:
        The ceilings in force inside the block.
    """
    global _cached
    before = {var: os.environ.get(var) for var in _ENV.values()}
    previous = current_limits()
    try:
        yield set_limits(**changes)
    finally:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        _cached = previous
