"""One acquisition, one dataset: group image clusters into the datasets that are written.

DICOM images are grouped by StudyInstanceUID and by a specific PatientID, after the
re-encodings are merged; so a study split across two packages (pydicom's ``693_J2KI.dcm`` and
pydicom-data's ``693_*.dcm``) lands in one dataset, and the split, which moves whole datasets,
can never put the same acquisition in train and test. Non-DICOM volumes are one dataset each,
with the copies of the same acquisition listed as re-encodings.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hypermodal.labels import ClassVocabulary
from hypermodal.sources.samples.dedupe import Cluster, UnionFind, file_rank
from hypermodal.sources.samples.manifest import (
    PACKAGE_ORDER,
    DicomDataset,
    PackageManifest,
    Volume,
)
from hypermodal.sources.samples.records import Image

log = logging.getLogger(__name__)

_GENERIC_PATIENTS = {
    "anon",
    "anonymous",
    "anonymized",
    "anonymised",
    "unknown",
    "none",
    "null",
    "test",
    "patient",
    "phantom",
    "id",
}


@dataclass
class Dataset:
    """One acquisition: its id (``<package>.<name>``), clusters and curated facts."""

    id: str
    package: str
    clusters: list[Cluster]
    label: str | None
    body_part: str | None
    template: bool
    phantom: bool
    note: str


def specific_patient(pid: str | None) -> bool:
    """A PatientID that names one person (not empty, not 'Anonymous', not '0000')."""
    if not pid:
        return False
    text = pid.strip().lower()
    return len(text) >= 4 and text not in _GENERIC_PATIENTS and len(set(text)) > 1


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "x"


def group_dicom(clusters: list[Cluster], packages: Sequence[PackageManifest]) -> list[Dataset]:
    """Group image clusters into datasets: same study or same specific patient."""
    uf = UnionFind(len(clusters))
    for attr in ("study", "patient"):
        first: dict[str, int] = {}
        for i, cl in enumerate(clusters):
            for img in (cl.canonical, *cl.others):
                value = getattr(img, attr)
                if attr == "patient" and not specific_patient(value):
                    continue
                if value:
                    uf.union(first.setdefault(value, i), i)
    curated: dict[str, tuple[PackageManifest, DicomDataset]] = {}
    for pkg in packages:
        for entry in pkg.dicom_datasets:
            curated[f"{pkg.name}:{entry.member}"] = (pkg, entry)
    datasets = []
    for group in uf.groups():
        members = sorted((clusters[i] for i in group), key=lambda c: file_rank(c.canonical))
        keys = [img.key for cl in members for img in (cl.canonical, *cl.others)]
        matches = [curated[k] for k in keys if k in curated]
        lead = members[0].canonical
        if matches:
            pkg, entry = min(matches, key=lambda m: PACKAGE_ORDER[m[0].name])
            if len({id(m[1]) for m in matches}) > 1:
                log.warning(
                    "several manifest names match one dataset: %s", [m[1].name for m in matches]
                )
            package, name = pkg.name, entry.name
            body_part, phantom, note = entry.body_part, entry.phantom, entry.note
        else:
            package = lead.package
            stem = lead.name.rsplit(".", 1)[0] if "." in lead.name else lead.name
            name, body_part, phantom, note = _slug(stem), None, False, ""
        if body_part is None:
            parts = Counter(
                cl.canonical.body_part.upper() for cl in members if cl.canonical.body_part
            )
            body_part = parts.most_common(1)[0][0] if parts else None
        datasets.append(
            Dataset(f"{package}.{name}", package, members, None, body_part, False, phantom, note)
        )
    return datasets


def volume_datasets(
    volumes: list[tuple[PackageManifest, Volume, Image]], vocab: ClassVocabulary
) -> list[Dataset]:
    """One dataset per curated volume, its manifest re-encodings recorded (not copied)."""
    datasets = []
    seen_pixels: dict[str, str] = {}
    for pkg, vol, img in volumes:
        others = []
        evidence = {}
        for path, why in vol.re_encodings:
            key = f"{pkg.name}:{path}"
            others.append(Image(pkg.name, path, b"", path.rsplit("/", 1)[-1], "nifti", 0, 0, 0, ""))
            evidence[key] = f"derived copy: {why}"
        ds_id = f"{pkg.name}.{vol.name}"
        if img.pixel_sha256 in seen_pixels:
            log.warning("%s holds the same voxels as %s", ds_id, seen_pixels[img.pixel_sha256])
        seen_pixels.setdefault(img.pixel_sha256, ds_id)
        datasets.append(
            Dataset(
                ds_id,
                pkg.name,
                [Cluster(img, others, evidence)],
                vocab.normalise_label(vol.label) or vol.label,
                vol.body_part,
                vol.template,
                vol.phantom,
                vol.note,
            )
        )
    return datasets


def unique_ids(datasets: list[Dataset]) -> list[Dataset]:
    """The datasets sorted by id, a repeated id suffixed ``-2``, ``-3``... (a fallback name may
    clash with a curated one)."""
    used: Counter[str] = Counter()
    for ds in sorted(datasets, key=lambda d: d.id):
        used[ds.id] += 1
        if used[ds.id] > 1:
            ds.id = f"{ds.id}-{used[ds.id]}"
    return sorted(datasets, key=lambda d: d.id)
