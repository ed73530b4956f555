"""NIfTI-1/2, Analyze 7.5 (``.hdr``/``.img``) and FreeSurfer MGH (``.mgh``/``.mgz``) via nibabel.

Volumes are read lazily: the header gives the image count without touching voxels, after its
dims and voxel type are checked against what the file can hold (:mod:`~hypermodal.io.nifti_data`:
a header claiming 2³¹ slices is an error, never a catalog of 2³¹ rows). Slices are read with
plain reads, never a memory map, on one open stream that only moves forward when slices are
asked for in order; along the last axis each slice on its own, along another axis in slabs
whose size is bounded whatever the volume's size
(:func:`~hypermodal.io.nifti_data.iter_slices`).

**Slicing rule**: that of :mod:`hypermodal.io.orientation` — 2D slices along the voxel axis
closest to superior–inferior (from the affine, :func:`nibabel.aff2axcodes`), each oriented rows
anterior → posterior and columns patient right → left, as the same slice from a DICOM series.

**4D and more**: by default only the first volume (index 0 along every axis after the third) is
read — a 4D fMRI or DWI series is many near-identical volumes, and one is enough to classify
modality. ``NiftiReader(volumes="all")`` yields every volume's slices, numbered volume-major
(``index = volume * slices_per_volume + slice``).

Complex data become their magnitude; RGB(A) data become BT.601 luminance. NIfTI has no modality
field, so ``FileHeader.modality`` is None.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import nibabel as nib
import numpy as np
from nibabel.fileholders import FileHolder

from hypermodal.common.errors import CorruptFileError, ImageReadError, UnsupportedFileError
from hypermodal.io.base import FileHeader, wanted_indices
from hypermodal.io.constants import GZIP_MAGIC, LUMA_WEIGHTS
from hypermodal.io.nifti_data import check_sizes, iter_slices
from hypermodal.io.orientation import SlicePlan, plan_slices, to_grey
from hypermodal.io.streams import check_regular, read_head

__all__ = ["LUMA_WEIGHTS", "NiftiReader", "SlicePlan", "plan_slices", "sniff_nifti", "to_grey"]

#: which volumes of 4D+ data are read
Volumes = Literal["first", "all"]


def sniff_nifti(path: Path, head: bytes) -> bool:
    """True for a NIfTI-1/2 header, or a 348-byte Analyze header in a ``.hdr`` file.

    Args:
        path: The file (its name is used only for headers without a magic string).
        head: The first bytes of the content (decompressed if gzipped).

    Returns:
        Whether the bytes start a NIfTI or Analyze header.
    """
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return True
    if len(head) >= 12 and head[4:8] in (b"n+2\x00", b"ni2\x00") and head[8:12] == b"\r\n\x1a\n":
        return True
    if len(head) >= 4 and path.name.lower().endswith((".hdr", ".hdr.gz")):
        return struct.unpack("<i", head[:4])[0] == 348 or struct.unpack(">i", head[:4])[0] == 348
    return False


def _has_magic(path: Path) -> bool:
    """Whether the file's content starts with a NIfTI/Analyze header (False if unreadable)."""
    try:
        head, _ = read_head(path)
    except ImageReadError:
        return False
    return sniff_nifti(path, head)


def _image_class(head: bytes) -> type[nib.spatialimages.SpatialImage]:
    if head[344:348] == b"n+1\x00":
        return nib.Nifti1Image
    if head[4:8] == b"n+2\x00":
        return nib.Nifti2Image
    return nib.MGHImage


_STANDARD_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz", ".mgh", ".mgz")


class _Loaded:
    """A lazily loaded nibabel image plus the file object we opened for it (if any)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fileobj: Any = None
        try:
            self.img = self._load()
        except (UnsupportedFileError, CorruptFileError):
            self.close()
            raise
        except nib.filebasedimages.ImageFileError as exc:
            self.close()
            if _has_magic(path):  # the magic is there: the rest is broken
                raise CorruptFileError(path, f"unreadable NIfTI file ({exc})") from None
            raise UnsupportedFileError(path, f"not a NIfTI/Analyze/MGH file ({exc})") from None
        except (EOFError, OSError, ValueError, struct.error, gzip.BadGzipFile) as exc:
            self.close()
            raise CorruptFileError(path, f"cannot read NIfTI header ({exc})") from None

    def _load(self) -> Any:
        path = self.path
        name = path.name.lower()
        check_regular(path)
        with open(path, "rb") as fp:
            magic = fp.read(2)
        gzipped = magic == GZIP_MAGIC
        if name.endswith((".img", ".img.gz")):
            stem = path.name[: -len(".img.gz")] if name.endswith(".gz") else path.name[:-4]
            for hdr in (stem + ".hdr", stem + ".HDR", stem + ".hdr.gz"):
                if (path.parent / hdr).exists():
                    raise UnsupportedFileError(
                        path, f"pixel half of an Analyze/NIfTI pair: read {hdr} instead"
                    )
            raise UnsupportedFileError(path, "Analyze/NIfTI .img without its .hdr")
        suffix_gz = name.endswith((".gz", ".mgz"))
        if name.endswith(_STANDARD_SUFFIXES) and gzipped == suffix_gz:
            # keep_file_open=True: one gzip stream for all slices (re-opening per slice would
            # decompress from the start each time, quadratic in the volume size); no memory
            # map: slices are read with plain reads, so the process never maps a whole volume
            img = nib.load(path, mmap=False, keep_file_open=True)
            image_file = img.file_map["image"].filename
            if image_file and not Path(image_file).exists():
                raise CorruptFileError(path, f"image file {Path(image_file).name} is missing")
            return img
        # content and name disagree (e.g. gzipped data named .nii, or no suffix at all)
        if gzipped:
            self.fileobj = gzip.GzipFile(path, "rb")
        else:
            self.fileobj = open(path, "rb")  # noqa: SIM115 - closed in close()
        head = self.fileobj.read(352)
        self.fileobj.seek(0)
        klass = _image_class(head)
        holder = FileHolder(filename=str(path), fileobj=self.fileobj)
        return klass.from_file_map({"header": holder, "image": holder}, mmap=False)

    def close(self) -> None:
        self.img = None
        if self.fileobj is not None:
            self.fileobj.close()
            self.fileobj = None


def _spatial_and_extra(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = tuple(int(s) for s in shape)
    return shape[:3], shape[3:]


class NiftiReader:
    """Reader for NIfTI-1/2, Analyze and MGH volumes (see the module doc for the slicing rule).

    Args:
        volumes: ``"first"`` (default) reads only the first volume of 4D+ data; ``"all"``
            reads every volume along the 4th axis (axes after the 4th are always at index 0).

    Attributes:
        name: ``"nifti"``.
        extensions: Suffixes tried when content sniffing is inconclusive.
    """

    name: ClassVar[str] = "nifti"
    extensions: ClassVar[tuple[str, ...]] = _STANDARD_SUFFIXES

    def __init__(self, volumes: Volumes = "first") -> None:
        if volumes not in ("first", "all"):
            raise ValueError(f"volumes must be 'first' or 'all', not {volumes!r}")
        self.volumes: Volumes = volumes

    def __repr__(self) -> str:
        return f"NiftiReader(volumes={self.volumes!r})"

    def sniff(self, path: Path, head: bytes) -> bool:
        """True for NIfTI magic at byte 344 (NIfTI-1) or 4 (NIfTI-2), or an Analyze ``.hdr``."""
        return sniff_nifti(path, head)

    def _plan(self, loaded: _Loaded) -> tuple[SlicePlan, int, tuple[int, ...]]:
        img = loaded.img
        if type(img).__name__.startswith("Cifti"):
            raise UnsupportedFileError(loaded.path, "CIFTI-2 file (surface/grayordinate data)")
        spatial, extra = _spatial_and_extra(img.shape)
        affine = getattr(img, "affine", None)
        codes: tuple[str | None, ...] | None = None
        if affine is not None and len(spatial) >= 2:
            try:
                codes = tuple(nib.aff2axcodes(affine))
            except Exception:  # noqa: BLE001 - degenerate affine: orientation unknown
                codes = None
        if len(spatial) < 2:
            raise UnsupportedFileError(loaded.path, f"not an image: data shape {img.shape}")
        try:
            plan = plan_slices(spatial, codes)
        except ValueError as exc:
            raise UnsupportedFileError(loaded.path, str(exc)) from None
        n_volumes = max(extra[0] if extra and self.volumes == "all" else 1, 1)
        check_sizes(
            loaded.path,
            img,
            _image_file(loaded),
            _is_gzip_proxy(loaded),
            plan,
            plan.num_slices * n_volumes,
        )
        return plan, n_volumes, extra

    def header(self, path: Path) -> FileHeader:
        """Read shape and orientation from the header, without reading voxels.

        Args:
            path: A ``.nii``, ``.nii.gz``, ``.hdr``, ``.mgh`` or ``.mgz`` file (content decides,
                not the name).

        Returns:
            The header: ``num_images`` = slices per volume × volumes read; ``modality`` None.

        Raises:
            UnsupportedFileError: Not a spatial image (CIFTI, 1D data, ``.img`` half of a pair).
            CorruptFileError: Unreadable header.
        """
        path = Path(path)
        loaded = _Loaded(path)
        try:
            img = loaded.img
            plan, n_volumes, extra = self._plan(loaded)
            hdr = img.header
            return FileHeader(
                path=str(path),
                format="nifti",
                num_images=plan.num_slices * n_volumes,
                rows=plan.rows,
                columns=plan.columns,
                extra={
                    "type": type(img).__name__,
                    "shape": [int(s) for s in img.shape],
                    "dtype": str(hdr.get_data_dtype()),
                    "axcodes": plan.axcodes,
                    "slice_axis": plan.slice_axis,
                    "volumes": int(extra[0]) if extra else 1,
                    "volumes_read": n_volumes,
                    "zooms": [float(z) for z in hdr.get_zooms()],
                },
            )
        finally:
            loaded.close()

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Read 2D slices one at a time, in the order of ``indices`` (all when None).

        Args:
            path: The volume file.
            indices: 0-based image numbers (volume-major when ``volumes="all"``).

        Yields:
            ``(index, image)`` with ``image`` a 2D ``float32`` array (scaled by the header's
            slope/intercept, oriented as described in the module doc).

        Raises:
            IndexError: An index out of range (raised before reading any voxel).
            UnsupportedFileError: Not a spatial image.
            CorruptFileError: Truncated or unreadable voxel data.
        """
        path = Path(path)
        loaded = _Loaded(path)
        try:
            plan, n_volumes, _ = self._plan(loaded)
            spatial, extra = _spatial_and_extra(loaded.img.shape)
            wanted = wanted_indices(path, indices, plan.num_slices * n_volumes)
            itemsize = np.dtype(loaded.img.header.get_data_dtype()).itemsize
            dataobj = loaded.img.dataobj
            yield from iter_slices(path, dataobj, (spatial, extra), plan, wanted, itemsize)
        finally:
            loaded.close()


def _is_gzip_proxy(loaded: _Loaded) -> bool:
    if loaded.fileobj is not None:
        return isinstance(loaded.fileobj, gzip.GzipFile)
    file_map = getattr(loaded.img, "file_map", {})
    holder = file_map.get("image")
    name = (holder.filename or "") if holder is not None else ""
    return name.lower().endswith((".gz", ".mgz"))


def _image_file(loaded: _Loaded) -> Path:
    """The file that holds the voxels (the ``.img`` of an Analyze pair)."""
    holder = getattr(loaded.img, "file_map", {}).get("image")
    name = holder.filename if holder is not None and loaded.fileobj is None else None
    return Path(name) if name else loaded.path
