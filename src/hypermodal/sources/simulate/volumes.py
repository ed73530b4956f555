"""The real datasets of a samples folder, and the 3D volumes among them that simulations start from.

A *samples folder* (``hypermodal samples DIR``) holds one sub-folder per dataset, each with a
``dataset.json`` (``name``, ``label``, ``body_part``, ``template``, ``phantom``, ``modalities``).
:func:`list_datasets` reads those; :func:`load_volumes` loads the NIfTI volumes that can serve as
anatomy:

* a NIfTI file (``.nii`` / ``.nii.gz``) of a CT or MR dataset that is not a phantom;
* at least :data:`MIN_SLICES` slices along the axial axis; 4D data give their first volume;
* reoriented to RAS+ (``nibabel.as_closest_canonical``): array axes are patient left → right,
  posterior → anterior, inferior → superior, so ``data[:, :, k]`` is axial slice ``k``;
* values in the file's own units (CT in HU, MR in arbitrary scanner units), as ``float32``;
* voxel size (mm) from the header zooms; volumes over :data:`MAX_VOXELS` are downsampled.

Atlases and templates are used: they are averages of real scans, i.e. real anatomy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from hypermodal.io import ImageReadError, read_header
from hypermodal.labels import DEFAULT_MODALITY_MAP

DATASET_JSON = "dataset.json"
#: fewest axial slices a volume needs to be used as anatomy
MIN_SLICES = 24
#: larger volumes are downsampled (by a whole factor) to stay under this many voxels
MAX_VOXELS = 12_000_000
#: the labels simulated datasets may carry
LABELS = ("CT", "MR", "PT", "XR", "OTHER")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class RealDataset:
    """One dataset folder of a samples folder, as its ``dataset.json`` describes it."""

    name: str  # the folder name (what ``simulated_from`` records)
    folder: Path
    label: str  # one of LABELS, from the dataset label or its main DICOM modality
    body_part: str | None
    template: bool
    phantom: bool
    files: tuple[Path, ...]  # image files, sorted

    @property
    def is_synthetic(self) -> bool:
        return self.name.startswith("sim-")


@dataclass
class SourceVolume:
    """A real 3D volume in RAS+ orientation and its own units."""

    dataset: str
    path: Path
    kind: str  # "CT" or "MR"
    data: np.ndarray  # float32 (x, y, z)
    spacing: tuple[float, float, float]  # mm along x, y, z
    body_part: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(float(n * s) for n, s in zip(self.data.shape, self.spacing, strict=True))


def _modalities_of(files: tuple[Path, ...], limit: int = 20) -> dict[str, int]:
    """DICOM Modality counts over the first ``limit`` readable files (headers only)."""
    counts: dict[str, int] = {}
    for path in files[:limit]:
        try:
            modality = read_header(path).modality
        except ImageReadError:
            continue
        if modality:
            counts[modality.upper()] = counts.get(modality.upper(), 0) + 1
    return counts


def _label_of(meta: dict[str, Any], files: tuple[Path, ...]) -> str:
    """The class a dataset belongs to: its label, else its most frequent modality (from
    ``dataset.json``, else from the DICOM headers), else OTHER."""
    label = str(meta.get("label") or "").upper()
    if label in LABELS:
        return label
    alias = {"PET": "PT", "MRI": "MR", "XRAY": "XR", "X-RAY": "XR"}.get(label)
    if alias:
        return alias
    modalities = meta.get("modalities") or _modalities_of(files)
    if modalities:
        top = max(sorted(modalities), key=lambda m: modalities[m])
        return DEFAULT_MODALITY_MAP.get(str(top).upper(), "OTHER")
    return "OTHER"


def _image_files(folder: Path) -> tuple[Path, ...]:
    skip = {DATASET_JSON, "summary.json"}
    return tuple(
        sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.name not in skip and not p.name.startswith(".")
        )
    )


def list_datasets(samples_dir: Path) -> list[RealDataset]:
    """Every dataset folder of ``samples_dir`` (sorted by name), simulated ones excluded.

    Folders without a ``dataset.json`` are datasets too (labelled by their DICOM Modality);
    folders named ``sim-*`` are simulation outputs and are left out.
    """
    out: list[RealDataset] = []
    for folder in sorted(p for p in Path(samples_dir).iterdir() if p.is_dir()):
        if folder.name.startswith((".", "sim-")):
            continue
        meta_path = folder / DATASET_JSON
        meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        files = _image_files(folder)
        if not files:
            continue
        out.append(
            RealDataset(
                name=folder.name,
                folder=folder,
                label=_label_of(meta, files),
                body_part=meta.get("body_part"),
                template=bool(meta.get("template", False)),
                phantom=bool(meta.get("phantom", False)),
                files=files,
            )
        )
    return out


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_volume(path: Path, dataset: str, kind: str, body_part: str | None = None) -> SourceVolume:
    """Load one NIfTI file as a RAS+ ``float32`` volume (first volume of 4D data).

    Raises:
        ValueError: The file is not 3D (after dropping extra volumes).
    """
    img = nib.as_closest_canonical(nib.load(path))
    shape = img.shape
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise ValueError(f"{path}: not a 3D volume (shape {shape})")
    index = (slice(None),) * 3 + (0,) * (len(shape) - 3)
    data = np.asarray(img.dataobj[index], dtype=np.float32)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    spacing = tuple(float(abs(z)) or 1.0 for z in img.header.get_zooms()[:3])
    factor = 1
    while data.size // factor**3 > MAX_VOXELS:
        factor += 1
    if factor > 1:
        data = ndimage.zoom(data, 1.0 / factor, order=1, prefilter=False).astype(np.float32)
        spacing = tuple(s * factor for s in spacing)
    return SourceVolume(
        dataset=dataset,
        path=path,
        kind=kind,
        data=np.ascontiguousarray(data),
        spacing=spacing,  # type: ignore[arg-type]
        body_part=body_part,
    )


def volume_files(dataset: RealDataset) -> list[Path]:
    """The NIfTI files of a CT/MR dataset that hold at least :data:`MIN_SLICES` axial slices."""
    if dataset.label not in ("CT", "MR") or dataset.phantom:
        return []
    out = []
    for path in dataset.files:
        if not _is_nifti(path):
            continue
        try:
            img = nib.load(path)
            codes = nib.aff2axcodes(img.affine)
        except Exception:  # noqa: BLE001 - unreadable: not a usable volume
            continue
        if len(img.shape) < 3:
            continue
        axial = [c in ("S", "I") for c in codes[:3]]
        n_axial = img.shape[axial.index(True)] if any(axial) else img.shape[2]
        if n_axial >= MIN_SLICES:
            out.append(path)
    return out


def load_volumes(datasets: list[RealDataset]) -> list[SourceVolume]:
    """The usable volumes of ``datasets``, in dataset then file order (one read per file)."""
    out = []
    for ds in datasets:
        for path in volume_files(ds):
            out.append(read_volume(path, ds.name, ds.label, ds.body_part))
    return out
