"""The corpus spec: which datasets a plan takes, the split of each, the caps and the classes.

Spec format (YAML)::

    name: my-corpus
    classes: [CT, MR, PT, XR]          # optional, the default vocabulary
    modality_map: {CT: CT, ...}        # optional, DICOM Modality -> class
    caps: {CT: 50000, MR: 100000}      # images per dataset and class, in catalog order
    caps_apply_to: [idc, tcia]         # sources the caps apply to (not external sets)
    datasets:
      - name: LIDC-IDRI
        collection_id: lidc_idri       # IDC collection_id (source idc)
        split: validate                # train / validate / test; omit with --auto-split
      - name: HNSCC
        source: tcia                   # a TCIA collection absent from IDC: rows of a --catalog
        split: train                   #   whose collection_id is the dataset name match it
      - name: MURA
        source: external               # not in any catalog: listed with its published size
        split: test
        access: Stanford research use agreement
        published: {XR: 40005}
        location: UPPER EXTREMITY

The bundled ``paper_spec.yaml`` (:func:`paper_spec`) is the paper's Appendix A; it also carries
``paper_counts`` (the paper's images per class per split) and ``comparison_notes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypermodal.common.errors import SpecError
from hypermodal.labels import DEFAULT_CLASSES, DEFAULT_MODALITY_MAP, ClassVocabulary
from hypermodal.split import SPLITS, split_name

SOURCES = ("idc", "tcia", "external")


@dataclass
class DatasetSpec:
    """One dataset of a spec: where its series come from, its split, caps and published size."""

    name: str
    split: str | None
    source: str = "idc"
    collection_id: str | None = None
    caps: dict[str, int] | None = None
    location: str | None = None
    url: str | None = None
    access: str | None = None
    published: dict[str, int] = field(default_factory=dict)
    published_note: str | None = None
    classes: tuple[str, ...] = ()  # external: classes it holds, also when no size is published
    reason: str | None = None
    note: str | None = None

    @property
    def key(self) -> str:
        """The catalog ``collection_id`` this dataset's series carry."""
        return self.collection_id or self.name


@dataclass
class CorpusSpec:
    """A validated corpus spec (see the module docstring for the YAML it comes from)."""

    name: str
    datasets: list[DatasetSpec]
    classes: tuple[str, ...] = DEFAULT_CLASSES
    modality_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODALITY_MAP))
    caps: dict[str, int] = field(default_factory=dict)
    caps_apply_to: tuple[str, ...] = ("idc", "tcia")
    description: str = ""
    paper_counts: dict[str, Any] | None = None
    comparison_notes: list[str] = field(default_factory=list)
    origin: str = "spec"

    @property
    def vocabulary(self) -> ClassVocabulary:
        return ClassVocabulary(classes=self.classes, modality_map=self.modality_map)

    def caps_for(self, ds: DatasetSpec) -> dict[str, int]:
        """The caps of one dataset: its own, else the spec's where its source takes caps."""
        if ds.caps is not None:
            return ds.caps
        return dict(self.caps) if ds.source in self.caps_apply_to else {}


def norm_location(value: Any) -> str | None:
    """A body location as upper-case text; None for missing or blank values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().upper()
    return text or None


# ---------------------------------------------------------------------------------- parsing
def _caps(value: Any, where: str, classes: Sequence[str]) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: caps must be a mapping CLASS: N, got {value!r}")
    out: dict[str, int] = {}
    for cls, n in value.items():
        name = str(cls).upper()
        if name not in classes:
            raise SpecError(
                f"{where}: caps name unknown class {cls!r}; classes are {list(classes)}"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SpecError(f"{where}: cap for {name} must be a non-negative integer, got {n!r}")
        out[name] = n
    return out


def _split(value: Any, where: str) -> str | None:
    if value is None:
        return None
    text = split_name(str(value).strip())
    if text not in SPLITS:
        raise SpecError(
            f"{where}: unknown split {value!r}; use train, validate or test "
            "(or leave it out and plan with --auto-split)"
        )
    return text


def _parse_dataset(entry: Mapping[str, Any], where: str, classes: Sequence[str]) -> DatasetSpec:
    """One ``datasets`` entry (already known to be a mapping with a name) as a DatasetSpec."""
    source = str(entry.get("source") or "idc").lower()
    if source not in SOURCES:
        raise SpecError(f"{where}: unknown source {source!r}; use one of {list(SOURCES)}")
    collection_id = entry.get("collection_id")
    if source == "idc" and not collection_id:
        raise SpecError(f"{where}: an IDC dataset needs a collection_id")
    published = entry.get("published") or {}
    if not isinstance(published, Mapping):
        raise SpecError(f"{where}: published must be a mapping CLASS: images")
    pub = _caps(published, f"{where}: published", classes)
    held = tuple(str(c).upper() for c in entry.get("classes") or ())
    unknown = [c for c in held if c not in classes]
    if unknown:
        raise SpecError(f"{where}: classes {unknown} are not in {list(classes)}")
    return DatasetSpec(
        name=str(entry["name"]),
        split=_split(entry.get("split"), where),
        source=source,
        collection_id=str(collection_id) if collection_id else None,
        caps=_caps(entry["caps"], where, classes) if "caps" in entry else None,
        location=str(entry["location"]).upper() if entry.get("location") else None,
        url=entry.get("url"),
        access=entry.get("access"),
        published=pub,
        published_note=entry.get("published_note"),
        classes=tuple(dict.fromkeys(held + tuple(pub))),
        reason=entry.get("reason"),
        note=entry.get("note"),
    )


def _parse_datasets(entries: Any, origin: str, classes: Sequence[str]) -> list[DatasetSpec]:
    """The ``datasets`` list: unique names, and each collection in one dataset only."""
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{origin}: 'datasets' must be a non-empty list")
    datasets: list[DatasetSpec] = []
    seen: dict[str, int] = {}
    seen_keys: dict[str, str] = {}
    for i, entry in enumerate(entries, 1):
        where = f"{origin}: dataset #{i}"
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise SpecError(f"{where}: each dataset needs at least a 'name'")
        name = str(entry["name"])
        where = f"{origin}: dataset {name!r}"
        if name in seen:
            raise SpecError(f"{where}: duplicate dataset (entries #{seen[name]} and #{i})")
        seen[name] = i
        ds = _parse_dataset(entry, where, classes)
        if ds.source != "external":
            if ds.key in seen_keys:
                raise SpecError(
                    f"{where}: collection {ds.key!r} is already planned as dataset "
                    f"{seen_keys[ds.key]!r}; a collection belongs to one dataset"
                )
            seen_keys[ds.key] = name
        datasets.append(ds)
    return datasets


def parse_spec(data: Any, origin: str = "spec") -> CorpusSpec:
    """Validate a spec mapping (as read from YAML) and return it as a :class:`CorpusSpec`.

    Raises:
        SpecError: the first problem found, naming ``origin`` and the dataset.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{origin}: a corpus spec must be a mapping with a 'datasets' list")
    classes = tuple(str(c).upper() for c in data.get("classes") or DEFAULT_CLASSES)
    if data.get("modality_map"):
        if not isinstance(data["modality_map"], Mapping):
            raise SpecError(f"{origin}: modality_map must be a mapping MODALITY: CLASS")
        modality_map = {str(k).upper(): str(v).upper() for k, v in data["modality_map"].items()}
    else:
        modality_map = {k: v for k, v in DEFAULT_MODALITY_MAP.items() if v in classes}
    try:
        ClassVocabulary(classes=classes, modality_map=modality_map)
    except ValueError as exc:
        raise SpecError(f"{origin}: {exc}") from None
    caps = _caps(data.get("caps"), f"{origin}: caps", classes)
    apply_to = tuple(str(s) for s in data.get("caps_apply_to") or ("idc", "tcia"))
    bad = [s for s in apply_to if s not in SOURCES]
    if bad:
        raise SpecError(f"{origin}: caps_apply_to names unknown sources {bad}; use {SOURCES}")
    datasets = _parse_datasets(data.get("datasets"), origin, classes)
    paper = data.get("paper_counts")
    if paper is not None:
        pclasses = paper.get("classes") if isinstance(paper, Mapping) else None
        if not pclasses or any(
            not isinstance(paper.get(s), list) or len(paper[s]) != len(pclasses) for s in SPLITS
        ):
            raise SpecError(
                f"{origin}: paper_counts needs 'classes' and one list per split of the same length"
            )
    return CorpusSpec(
        name=str(data.get("name") or Path(origin).stem),
        datasets=datasets,
        classes=classes,
        modality_map=modality_map,
        caps=caps,
        caps_apply_to=apply_to,
        description=str(data.get("description") or ""),
        paper_counts=dict(paper) if paper is not None else None,
        comparison_notes=[str(n) for n in data.get("comparison_notes") or []],
        origin=origin,
    )


def load_spec(path: Path | str) -> CorpusSpec:
    """Read and validate a spec YAML file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SpecError: the file is not valid YAML or not a valid spec.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus spec {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None
    return parse_spec(data, origin=str(path))


def paper_spec_path() -> Path:
    """Where the bundled ``paper_spec.yaml`` is installed."""
    from importlib.resources import files

    return Path(str(files("hypermodal.sources.plan").joinpath("paper_spec.yaml")))


def paper_spec() -> CorpusSpec:
    """The bundled spec of the paper's Appendix A (IDC collection_ids, split, caps)."""
    return load_spec(paper_spec_path())
