"""The reader contract shared by every format family.

A *file* holds one or more 2D *images* (a radiograph: one; a multi-frame DICOM: one per frame;
a NIfTI volume: one per slice). Readers give two things:

* :meth:`Reader.header` — metadata only, never pixel data (used to build the catalog fast);
* :meth:`Reader.images` — the 2D images as ``float32`` arrays, already in modality units
  (DICOM rescale applied, MONOCHROME1 inverted, colour converted to grey), one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np


@dataclass
class FileHeader:
    """What a reader learns from a file without decoding pixels."""

    path: str
    format: str  # "dicom", "nifti", "nrrd", "mha", "raster"
    num_images: int  # number of 2D images the file yields
    rows: int
    columns: int
    modality: str | None = None  # DICOM Modality (0008,0060) as written, if any
    patient: str | None = None
    study: str | None = None
    series: str | None = None
    instance: str | None = None  # SOPInstanceUID for DICOM
    body_part: str | None = None
    localizer: bool = False  # ImageType contains LOCALIZER (scout) — looks like a radiograph
    photometric: str | None = None
    transfer_syntax: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reader(Protocol):
    """One format family. Instances are stateless and cheap to create."""

    name: ClassVar[str]
    #: lower-case file-name suffixes this reader is tried for when content sniffing is inconclusive
    extensions: ClassVar[tuple[str, ...]]

    def sniff(self, path: Path, head: bytes) -> bool:
        """True when the first bytes of the file (``head``, up to 1024) say this format."""
        ...

    def header(self, path: Path) -> FileHeader:
        """Metadata without pixel data. Raises :class:`ImageReadError` subclasses."""
        ...

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, image)`` for the requested 2D images (all when ``indices`` is None).

        ``image`` is a 2D ``float32`` array in modality units. Decoding happens one image at a
        time so memory stays bounded for large multi-frame files and volumes.
        """
        ...


def wanted_indices(
    path: Path, indices: Iterable[int] | None, total: int, unit: str = "image"
) -> list[int]:
    """The image numbers a :meth:`Reader.images` call asked for, checked against ``total``.

    Args:
        path: The file (for the error message).
        indices: The requested 0-based numbers, or None for all.
        total: How many images the file holds.
        unit: What an image is called in the message (``"image"``, ``"frame"``, ``"page"``).

    Returns:
        The numbers as a list of ints, in the order asked (``0 .. total-1`` when None).

    Raises:
        IndexError: A number outside ``[0, total)``.
    """
    wanted = list(range(total)) if indices is None else [int(i) for i in indices]
    for i in wanted:
        if not 0 <= i < total:
            raise IndexError(f"{path}: {unit} {i} out of range for {total} {unit}(s)")
    return wanted
