"""The typed manifest of the PyPI wheels that ship real medical images, and its loader.

The curated data live in ``packages.yaml`` next to this module (package data, loaded once at
import). For each package and pinned version it says:

* where to look for DICOM files (``dicom``: the code reads every header there and decides from
  the file itself: pixel data that decode, a modality, a study; see
  :mod:`hypermodal.sources.samples.dicom`);
* which curated files those rules must not take although they decode (``excluded``: synthetic
  test patterns, derived maps), with the reason;
* which non-DICOM files (NIfTI, PAR/REC, ...) are acquired images (``volumes``), with the class,
  body part and the ``template`` / ``phantom`` flags that a NIfTI header cannot give;
* which files are copies of another one (``derived``: crops, downsampled or edited versions of
  the same acquisition) that byte or pixel comparisons cannot prove on their own;
* which files are deliberately broken (``broken``: good bad-input fixtures).

In the YAML, ``excluded``, ``broken`` and a volume's ``re_encodings`` are mappings from a
pattern (or path) to its reason, in order (first match wins); fields left out take the defaults
of the dataclasses below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib.resources import files
from typing import Any

import yaml

#: Smallest in-plane size (rows and columns) of an image worth keeping. Smaller arrays in these
#: wheels are toys or crops made to keep test data small (16x16 DICOMDIR thumbnails, 10x10 DWI
#: crops): upsampled to the network's input they show nothing of a modality.
MIN_SIDE = 32

#: Thumbnail correlation above which a lossy-compressed image counts as a re-encoding of another
#: image of the same geometry. Measured on these wheels: true lossy re-encodings give
#: 0.9988-1.0000 (693_UNCI vs 693_UNCR is the lowest); different slices of one series give
#: 0.88-0.94. Only pairs where one side is lossy are compared: repeated acquisitions (three b0
#: volumes in heudiconv) can be just as similar, and they are different images.
NEAR_IDENTICAL_CORRELATION = 0.995

#: File name endings of image-like files that get an explicit verdict in ``samples.json``
#: (included, rejected, or excluded with a reason), as do files named literally in ``excluded``.
#: Other members (code, text, surfaces, streamlines, arrays) are not images and are not listed.
VOLUME_SUFFIXES: tuple[str, ...] = (
    ".nii",
    ".nii.gz",
    ".mgz",
    ".mgh",
    ".mnc",
    ".par",
    ".rec",
    ".head",
    ".brik",
    ".brik.gz",
    ".v",
    ".hdr",
    ".img",
    ".nrrd",
    ".mha",
)

MANIFEST_FILE = "packages.yaml"


@dataclass(frozen=True)
class Volume:
    """A non-DICOM file curated as an acquired image (or an average of acquired images)."""

    path: str  #: path inside the wheel
    name: str  #: dataset id suffix (the id is ``<package>.<name>``)
    label: str  #: class (``MR``, ``CT``, ...): a NIfTI header has no modality
    body_part: str | None = None
    template: bool = False  #: an average/atlas (MNI152, mean of registered heads)
    phantom: bool = False  #: a test object, not a person
    companions: tuple[str, ...] = ()  #: other members the reader needs (a PAR's REC)
    convert: bool = False  #: store as NIfTI: the format is not read by ``hypermodal.io``
    #: ``(path, evidence)``: other files of this package holding the same acquisition
    #: (re-encoded, resampled, cropped, denoised). Recorded, not copied.
    re_encodings: tuple[tuple[str, str], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class DicomDataset:
    """Facts about a DICOM dataset that the files cannot tell; matched by any member's path."""

    member: str  #: path (in this package) of any file of the dataset, canonical or not
    name: str  #: dataset id suffix
    body_part: str | None = None  #: overrides BodyPartExamined
    phantom: bool = False
    note: str = ""


@dataclass(frozen=True)
class DerivedCopy:
    """A file that is a crop / downsampled / edited copy of another acquisition's file."""

    path: str  #: path in this package
    of: str  #: ``package:path`` of the original
    evidence: str


@dataclass(frozen=True)
class PackageManifest:
    """One pinned wheel and the curation of the files in it."""

    name: str
    version: str
    #: Expected licence (SPDX-like). The written licence is read from the wheel's METADATA;
    #: this value is the fallback and a check.
    licence: str
    #: fnmatch patterns (``*`` spans folders) of members whose headers are read as DICOM.
    dicom: tuple[str, ...] = ()
    #: tar archives inside the wheel whose members are scanned like files (``archive!member``).
    archives: tuple[str, ...] = ()
    volumes: tuple[Volume, ...] = ()
    dicom_datasets: tuple[DicomDataset, ...] = ()
    derived: tuple[DerivedCopy, ...] = ()
    #: ``(pattern, reason)``: files not taken although they may be readable; first match wins.
    excluded: tuple[tuple[str, str], ...] = ()
    #: ``(pattern, reason)``: non-DICOM files that are deliberately broken (bad-input fixtures).
    #: Broken DICOM files need no entry: they fail to read or decode, and the code says why.
    broken: tuple[tuple[str, str], ...] = ()

    @property
    def requirement(self) -> str:
        """The pip requirement that pins this wheel (``name==version``)."""
        return f"{self.name}=={self.version}"


def _build(cls: type, entry: Any, where: str) -> Any:
    """One dataclass from a YAML mapping; lists become tuples, reason mappings become pairs."""
    if not isinstance(entry, dict):
        raise ValueError(f"{MANIFEST_FILE}: {where}: expected a mapping, got {entry!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{MANIFEST_FILE}: {where}: unknown fields {unknown}")
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("excluded", "broken", "re_encodings"):
            value = tuple((str(k), str(v)) for k, v in (value or {}).items())
        elif key == "volumes":
            value = tuple(_build(Volume, v, f"{where}.volumes") for v in value)
        elif key == "dicom_datasets":
            value = tuple(_build(DicomDataset, v, f"{where}.dicom_datasets") for v in value)
        elif key == "derived":
            value = tuple(_build(DerivedCopy, v, f"{where}.derived") for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{MANIFEST_FILE}: {where}: {exc}") from exc


def load_manifest(text: str | None = None) -> tuple[PackageManifest, ...]:
    """The packages of ``packages.yaml`` (or of ``text``, the same YAML), in processing order."""
    if text is None:
        text = files(__package__).joinpath(MANIFEST_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    rows = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{MANIFEST_FILE}: expected a top-level 'packages' list")
    packages = tuple(_build(PackageManifest, row, f"packages[{i}]") for i, row in enumerate(rows))
    names = [p.name for p in packages]
    if len(names) != len(set(names)):
        raise ValueError(f"{MANIFEST_FILE}: package names repeat: {names}")
    return packages


#: All packages, in the order they are processed (and preferred when choosing a canonical file
#: among equal candidates).
PACKAGES: tuple[PackageManifest, ...] = load_manifest()

#: Position of each package in :data:`PACKAGES` (the preference order).
PACKAGE_ORDER: dict[str, int] = {p.name: i for i, p in enumerate(PACKAGES)}


def manifest_for(name: str) -> PackageManifest:
    """The manifest entry of the package called ``name``; ``KeyError`` naming the known ones."""
    for pkg in PACKAGES:
        if pkg.name == name:
            return pkg
    known = ", ".join(p.name for p in PACKAGES)
    raise KeyError(f"no sample package named {name!r} (known: {known})")
