"""One simulated dataset each: DRRs, CT exports or PET of a real volume, exports of a dataset's
images.

Each producer writes the image files of one dataset folder and returns how many files and 2D
images it wrote; :mod:`~hypermodal.sources.simulate.run` writes ``dataset.json`` after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hypermodal.io import ImageReadError, iter_images, read_header
from hypermodal.sources.simulate.anatomy import Anatomy
from hypermodal.sources.simulate.ct import KINDS as CT_KINDS
from hypermodal.sources.simulate.ct import simulate_ct, write_ct_nifti
from hypermodal.sources.simulate.drr import simulate_drrs
from hypermodal.sources.simulate.export import export_image, sample_export_params
from hypermodal.sources.simulate.mr import KINDS as MR_KINDS
from hypermodal.sources.simulate.mr import simulate_mr
from hypermodal.sources.simulate.pet import sample_pet_params, simulate_pet
from hypermodal.sources.simulate.volumes import SourceVolume
from hypermodal.sources.simulate.write import (
    SeriesIds,
    write_export,
    write_pet_nifti,
    write_pet_series,
    write_radiograph,
)


@dataclass(frozen=True)
class Settings:
    """How much to simulate (from the scale) and the seed."""

    seed: int
    drr_per_volume: int
    pet_per_volume: int
    pet_max_slices: int
    export_slices: int
    export_variants: tuple[int, int]  # fewest, most variants per picked image

    @classmethod
    def for_scale(cls, seed: int, scale: float) -> Settings:
        return cls(
            seed=int(seed),
            drr_per_volume=max(1, round(12 * scale)),
            pet_per_volume=max(1, round(scale)),
            pet_max_slices=max(8, round(80 * min(1.0, scale))),
            export_slices=max(1, round(4 * scale)),
            export_variants=(
                max(1, round(2 * min(1.0, scale))),
                max(1, round(4 * min(1.0, scale))),
            ),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "drr_per_volume": self.drr_per_volume,
            "pet_per_volume": self.pet_per_volume,
            "pet_max_slices": self.pet_max_slices,
            "export_slices": self.export_slices,
            "export_variants": list(self.export_variants),
        }


@dataclass
class Written:
    files: int = 0
    images: int = 0
    skipped: int = 0  # source images that could not be read (exports)


def _slices(kind: str, settings: Settings) -> int:
    """Slices kept of a CT or MR export: templates up to ``4 * pet_max_slices`` (320 at scale 1:
    every slice of the bundled volumes, as an atlas is one whole volume whatever its modality),
    the other exports the middle ``pet_max_slices / 2``."""
    return 4 * settings.pet_max_slices if kind == "template" else settings.pet_max_slices // 2


def write_drr_dataset(
    folder: Path,
    name: str,
    anatomies: list[tuple[str, Anatomy]],
    source: str,
    body_part: str | None,
    settings: Settings,
    rng: np.random.Generator,
) -> Written:
    """``drr_per_volume`` radiographs of each volume, one DICOM file (and series) each."""
    out = Written()
    for v, (vol_name, anatomy) in enumerate(anatomies):
        for i, image in enumerate(simulate_drrs(anatomy, settings.drr_per_volume, rng)):
            n = v * settings.drr_per_volume + i + 1
            desc = f"DRR {image.params.view}"
            ids = SeriesIds.make(settings.seed, name, vol_name, str(i), n, desc, source)
            write_radiograph(folder / f"drr-{n:03d}-{image.params.view}.dcm", image, ids, body_part)
            out.files += 1
            out.images += 1
    return out


def write_ct_dataset(
    folder: Path,
    name: str,
    anatomies: list[tuple[str, Anatomy]],
    source: str,
    body_part: str | None,
    settings: Settings,
    rng: np.random.Generator,
) -> Written:
    """One CT export of each kind (HU, windowed, skull-stripped windowed, template) of each
    volume."""
    out = Written()
    for v, (vol_name, anatomy) in enumerate(anatomies):
        for kind in CT_KINDS:
            ct = simulate_ct(anatomy, kind, rng, max_slices=_slices(kind, settings))
            path = folder / f"ct-{v + 1:02d}-{kind}.nii.gz"
            write_ct_nifti(path, ct, f"simulated CT ({kind}) from {source} {vol_name}")
            out.files += 1
            out.images += int(ct.values.shape[2])
    return out


def write_mr_dataset(
    folder: Path,
    name: str,
    volumes: list[tuple[str, SourceVolume, Anatomy | None]],
    source: str,
    body_part: str | None,
    settings: Settings,
    rng: np.random.Generator,
) -> Written:
    """One MR export of each kind (8-bit, skull-stripped 8-bit, template, scaled, standardised,
    EPI grid) of each real MR volume."""
    out = Written()
    for v, (vol_name, vol, anatomy) in enumerate(volumes):
        for kind in MR_KINDS:
            mr = simulate_mr(vol, kind, rng, anatomy, max_slices=_slices(kind, settings))
            path = folder / f"mr-{v + 1:02d}-{kind}.nii.gz"
            write_ct_nifti(path, mr, f"MR export ({kind}) of {source} {vol_name}")
            out.files += 1
            out.images += int(mr.values.shape[2])
    return out


def write_pet_dataset(
    folder: Path,
    name: str,
    anatomies: list[tuple[str, Anatomy]],
    source: str,
    body_part: str | None,
    settings: Settings,
    rng: np.random.Generator,
    nifti_every: int = 3,
    offset: int = 0,
) -> Written:
    """``pet_per_volume`` PET volumes of each volume: a DICOM series, or (every ``nifti_every``
    acquisition, counted from ``offset``) a NIfTI file."""
    out = Written()
    for v, (vol_name, anatomy) in enumerate(anatomies):
        for j in range(settings.pet_per_volume):
            params = sample_pet_params(rng)
            params.max_slices = settings.pet_max_slices
            pet = simulate_pet(anatomy, params, rng)
            n = v * settings.pet_per_volume + j + 1
            nz = pet.values.shape[2]
            desc = f"PET {params.recon} {params.matrix}"
            if (offset + v + j) % nifti_every == nifti_every - 1:
                write_pet_nifti(
                    folder / f"pet-{n:02d}.nii.gz", pet, f"simulated {desc} from {source}"
                )
                out.files += 1
            else:
                ids = SeriesIds.make(settings.seed, name, vol_name, str(j), n, desc, source)
                sub = folder / f"pet-{n:02d}"
                out.files += len(
                    write_pet_series(sub, pet, ids, body_part, bool(rng.random() < 0.6))
                )
            out.images += nz
    return out


def _picks(files: list[Path], n: int) -> tuple[list[tuple[Path, int]], int]:
    """``n`` (file, image index) pairs spread over the files, from the middle of volumes."""
    candidates: list[tuple[Path, int]] = []
    skipped = 0
    for path in files:
        try:
            count = read_header(path).num_images
        except ImageReadError:
            skipped += 1
            continue
        if count <= 3:
            idx = list(range(count))
        else:
            lo, hi = int(count * 0.15), max(int(count * 0.85), int(count * 0.15) + 1)
            idx = list(range(lo, hi))
        candidates.extend((path, i) for i in idx)
    if not candidates:
        return [], skipped
    pos = np.unique(
        np.linspace(0, len(candidates) - 1, min(n, len(candidates))).round().astype(int)
    )
    return [candidates[int(p)] for p in pos], skipped


def write_export_dataset(
    folder: Path,
    files: list[Path],
    label: str,
    settings: Settings,
    rng: np.random.Generator,
) -> Written:
    """PNG / JPEG exports: ``export_slices`` images of ``files``, 2-4 variants each."""
    out = Written()
    picks, out.skipped = _picks(files, settings.export_slices)
    lo, hi = settings.export_variants
    for p, (path, index) in enumerate(picks):
        try:
            _, image = next(iter_images(path, [index]))
        except (ImageReadError, StopIteration):
            out.skipped += 1
            continue
        if image.size < 16 or not np.isfinite(image).all():
            out.skipped += 1
            continue
        for k in range(int(rng.integers(lo, hi + 1))):
            params = sample_export_params(rng, label)
            img8 = export_image(image, params)
            ext = "jpg" if params.format == "jpg" else "png"
            write_export(folder / f"exp-{p:03d}-{k}.{ext}", img8, params.format, params.quality)
            out.files += 1
            out.images += 1
    return out
