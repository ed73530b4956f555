"""Plan a corpus at series level from a catalog of series, before downloading anything.

A *corpus spec* (YAML) names the datasets, the split of each, the caps per class and the class
vocabulary. :func:`build_plan` joins it with a series catalog (the IDC index by default, see
:mod:`hypermodal.sources.plan.idc_index`) and returns one row per series with its label, split and
the number of its images kept after caps, plus a summary: images per class per split (the
paper's Fig. 3), per dataset, download size, and, for the bundled paper spec, a comparison with
the paper's own counts.

Spec format::

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

Images: the index counts instances; one instance is one 2D image except for multi-frame
objects (breast tomosynthesis, enhanced CT/MR), which the index cannot expand (it has no frame
count), so they count as one image each and are flagged ``multiframe``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import SpecError
from hypermodal.labels import DEFAULT_CLASSES, DEFAULT_MODALITY_MAP, ClassVocabulary
from hypermodal.split import DEFAULT_RATIOS, SPLITS, auto_split, location_quality, split_quality

log = logging.getLogger(__name__)

SOURCES = ("idc", "tcia", "external")
_SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}
_MULTIFRAME_HINTS = ("Tomosynthesis", "Enhanced", "Multi-frame", "Multiframe")

#: Columns of ``plan.parquet``, in order.
PLAN_COLUMNS = (
    "dataset",
    "collection_id",
    "source",
    "split",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "label",
    "BodyPartExamined",
    "images",
    "kept_images",
    "capped",
    "multiframe",
    "series_size_MB",
    "series_aws_url",
    "license_short_name",
)


@dataclass
class DatasetSpec:
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
        if ds.caps is not None:
            return ds.caps
        return dict(self.caps) if ds.source in self.caps_apply_to else {}


# ------------------------------------------------------------------------------------ spec
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
    text = _SPLIT_ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
    if text not in SPLITS:
        raise SpecError(
            f"{where}: unknown split {value!r}; use train, validate or test "
            "(or leave it out and plan with --auto-split)"
        )
    return text


def parse_spec(data: Any, origin: str = "spec") -> CorpusSpec:
    """Validate a spec mapping (as read from YAML) and return it as a :class:`CorpusSpec`."""
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
    entries = data.get("datasets")
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
        ds = DatasetSpec(
            name=name,
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
        if source != "external":
            if ds.key in seen_keys:
                raise SpecError(
                    f"{where}: collection {ds.key!r} is already planned as dataset "
                    f"{seen_keys[ds.key]!r}; a collection belongs to one dataset"
                )
            seen_keys[ds.key] = name
        datasets.append(ds)
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
    from importlib.resources import files

    return Path(str(files("hypermodal.sources.plan").joinpath("paper_spec.yaml")))


def paper_spec() -> CorpusSpec:
    """The bundled spec of the paper's Appendix A (IDC collection_ids, split, caps)."""
    return load_spec(paper_spec_path())


# ------------------------------------------------------------------------------------ plan
@dataclass
class CorpusPlan:
    series: pd.DataFrame
    summary: dict[str, Any]


def _norm_location(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().upper()
    return text or None


def apply_caps(series: pd.DataFrame, caps_by_dataset: Mapping[str, Mapping[str, int]]) -> pd.Series:
    """Images kept per series: the first ``cap`` images of each (dataset, label), in row order
    (catalog order); the series that crosses the cap is kept in part."""
    images = series["images"].to_numpy(dtype=np.int64)
    before = series.groupby(["dataset", "label"], sort=False)["images"].cumsum().to_numpy() - images
    cap = np.full(len(series), np.iinfo(np.int64).max, dtype=np.int64)
    names = series["dataset"].to_numpy(dtype=object)
    labels = series["label"].to_numpy(dtype=object)
    for name, caps in caps_by_dataset.items():
        if not caps:
            continue
        in_dataset = names == name
        for label, n in caps.items():
            cap[in_dataset & (labels == label)] = n
    kept = np.clip(cap - before, 0, images)
    return pd.Series(kept, index=series.index, dtype="int64")


def build_plan(
    spec: CorpusSpec,
    catalog: pd.DataFrame,
    *,
    auto: bool = False,
    seed: int = 0,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    min_locations: int = 2,
    fallback_locations: Mapping[str, str] | None = None,
    source_info: Mapping[str, Any] | None = None,
    known_collections: set[str] | None = None,
) -> CorpusPlan:
    """Join ``spec`` with a series ``catalog`` (columns of
    :data:`hypermodal.sources.plan.idc_index.SERIES_COLUMNS`, in catalog order).

    ``auto``: ignore the spec's splits and assign whole datasets with
    :func:`hypermodal.split.assignment.auto_split` (external datasets take part with their published
    sizes). ``fallback_locations``: collection_id → body location for datasets whose series have
    no ``BodyPartExamined``.
    """
    started = time.perf_counter()
    vocab = spec.vocabulary
    by_key = {ds.key: ds for ds in spec.datasets if ds.source != "external"}
    df = catalog[catalog["collection_id"].isin(list(by_key))].copy()
    df["dataset"] = df["collection_id"].map({k: d.name for k, d in by_key.items()})
    df["source"] = df["collection_id"].map({k: d.source for k, d in by_key.items()})
    modality = df["Modality"].astype("string").str.strip().str.upper()
    df["label"] = modality.map(
        lambda m: vocab.label_for_modality(m) if isinstance(m, str) else None
    )
    excluded = (
        df[df["label"].isna()]
        .groupby("dataset")["Modality"]
        .agg(lambda m: sorted(set(map(str, m))))
    )
    df = df[df["label"].notna()].copy()
    df["images"] = df["instanceCount"].fillna(0).astype("int64")
    sop = df["sop_class_name"].astype("string").fillna("")
    df["multiframe"] = sop.str.contains("|".join(_MULTIFRAME_HINTS), regex=True).astype(bool)
    caps_by_dataset = {ds.name: spec.caps_for(ds) for ds in spec.datasets}
    df["kept_images"] = apply_caps(df, caps_by_dataset)
    df["capped"] = df["kept_images"] < df["images"]

    # Images per dataset and class after caps (external: published sizes).
    kept = df.groupby(["dataset", "label"], sort=False)["kept_images"].sum().unstack(fill_value=0)
    kept = kept.reindex(index=[d.name for d in spec.datasets], columns=list(spec.classes))
    kept = kept.fillna(0).astype("int64")
    for ds in spec.datasets:
        if ds.source == "external":
            for cls, n in ds.published.items():
                kept.at[ds.name, cls] = n

    locations = _locations(spec, df, fallback_locations or {})
    splits = {ds.name: ds.split for ds in spec.datasets}
    split_report: dict[str, Any] = {}
    if auto:
        usable = kept[kept.sum(axis=1) > 0]
        assigned, split_report = auto_split(
            usable, ratios=ratios, seed=seed, locations=locations, min_locations=min_locations
        )
        # Datasets with no images to weigh (absent from the catalog, or external without a
        # published size) keep the spec's split when it has one.
        splits = {name: assigned.get(name, splits.get(name)) for name in kept.index}
        split_report["method"] = "auto"
        split_report["seed"] = seed
        split_report["not_weighed"] = [n for n in kept.index if n not in assigned]
    else:
        missing = [n for n, s in splits.items() if s is None]
        if missing:
            raise SpecError(
                f"{spec.origin}: datasets without a split: {missing[:10]}; give each a split "
                "or plan with --auto-split"
            )
        placed = kept[kept.sum(axis=1) > 0]
        split_report = split_quality(placed, {n: splits[n] for n in placed.index}, ratios)  # type: ignore[misc]
        split_report.update(
            location_quality(placed, splits, locations, min_locations, ratios=ratios)  # type: ignore[arg-type]
        )
        split_report["method"] = "spec"
    df["split"] = df["dataset"].map(splits)
    df = df.reindex(columns=list(PLAN_COLUMNS)).reset_index(drop=True)

    summary = summarise(spec, df, kept, splits, excluded.to_dict(), split_report, known_collections)
    summary["source"] = dict(source_info or {})
    summary["plan_seconds"] = round(time.perf_counter() - started, 3)
    return CorpusPlan(series=df, summary=summary)


def _locations(
    spec: CorpusSpec, df: pd.DataFrame, fallback: Mapping[str, str]
) -> dict[str, dict[str, list[str]]]:
    """dataset → class → body locations of the series kept after caps."""
    out: dict[str, dict[str, list[str]]] = {}
    live = df[df["kept_images"] > 0]
    parts = live["BodyPartExamined"].map(_norm_location)
    for (name, label), locs in parts.groupby([live["dataset"], live["label"]], sort=False):
        out.setdefault(str(name), {})[str(label)] = sorted(
            {x for x in locs if isinstance(x, str) and x}
        )
    for ds in spec.datasets:
        per = out.setdefault(ds.name, {})
        default = ds.location or _norm_location(fallback.get(ds.collection_id or ""))
        classes = list(ds.classes) if ds.source == "external" else list(per)
        for cls in classes:
            if not per.get(cls) and default:
                per[cls] = [default]
    return out


# --------------------------------------------------------------------------------- summary
def summarise(
    spec: CorpusSpec,
    df: pd.DataFrame,
    kept: pd.DataFrame,
    splits: Mapping[str, str | None],
    excluded_modalities: Mapping[str, list[str]],
    split_report: Mapping[str, Any],
    known_collections: set[str] | None = None,
) -> dict[str, Any]:
    """The plan's summary; ``known_collections``: every collection_id of the catalog, to tell
    a dataset absent from it from one that has no series of the planned classes."""
    classes = list(spec.classes)
    catalog_images = {s: dict.fromkeys(classes, 0) for s in SPLITS}
    external_images = {s: dict.fromkeys(classes, 0) for s in SPLITS}
    live = df[df["kept_images"] > 0]
    for (s, c), n in df.groupby(["split", "label"])["kept_images"].sum().items():
        catalog_images[str(s)][str(c)] = int(n)
    raw = df.groupby(["dataset", "label"])["images"].sum().unstack(fill_value=0)
    per_dataset: list[dict[str, Any]] = []
    groups = dict(tuple(df.groupby("dataset", sort=False)))
    empty_rows = df.iloc[:0]
    for ds in spec.datasets:
        rows = groups.get(ds.name, empty_rows)
        kept_rows = rows[rows["kept_images"] > 0]
        split = splits.get(ds.name)
        if ds.source == "external":
            status = "external"
            for cls, n in ds.published.items():
                if split:
                    external_images[split][cls] += int(n)
        elif rows.empty:
            known = known_collections is None or ds.key in known_collections
            status = "no_images" if known else "not_in_catalog"
        else:
            status = "planned"
        full_mb = float(kept_rows["series_size_MB"].fillna(0).sum())
        frac = (kept_rows["kept_images"] / kept_rows["images"].clip(lower=1)).to_numpy()
        kept_mb = float((kept_rows["series_size_MB"].fillna(0).to_numpy() * frac).sum())
        entry: dict[str, Any] = {
            "dataset": ds.name,
            "split": split,
            "source": ds.source,
            "collection_id": ds.collection_id,
            "status": status,
            "series": int(len(rows)),
            "series_kept": int(len(kept_rows)),
            "images": {
                c: int(raw.at[ds.name, c]) if ds.name in raw.index and c in raw else 0
                for c in classes
            },
            "kept_images": {
                c: int(kept.at[ds.name, c]) if ds.source != "external" else 0 for c in classes
            },
            "capped": sorted({str(x) for x in rows.loc[rows["capped"], "label"]}),
            "download_MB": round(full_mb, 1),
            "download_MB_kept_fraction": round(kept_mb, 1),
            "multiframe_series": int(rows["multiframe"].sum()),
            "body_parts": sorted(
                {p for p in map(_norm_location, kept_rows["BodyPartExamined"]) if p}
            ),
        }
        if excluded_modalities.get(ds.name):
            entry["other_modalities"] = excluded_modalities[ds.name]
        if ds.classes:
            entry["classes"] = list(ds.classes)
        for key in ("published", "published_note", "access", "url", "reason", "note", "location"):
            value = getattr(ds, key)
            if value:
                entry[key] = value
        per_dataset.append(entry)
    totals = {s: {c: catalog_images[s][c] + external_images[s][c] for c in classes} for s in SPLITS}
    summary: dict[str, Any] = {
        "spec": spec.name,
        "classes": classes,
        "caps": spec.caps,
        "caps_apply_to": list(spec.caps_apply_to),
        "datasets": len(spec.datasets),
        "datasets_by_status": pd.Series([d["status"] for d in per_dataset])
        .value_counts()
        .to_dict(),
        "images_catalog": catalog_images,
        "images_external_published": external_images,
        "images_total": totals,
        "series": int(len(df)),
        "series_kept": int(len(live)),
        "multiframe_series_kept": int(live["multiframe"].sum()),
        "download_MB": round(float(live["series_size_MB"].fillna(0).sum()), 1),
        "per_dataset": per_dataset,
        "split": dict(split_report),
        "image_count_rule": (
            "images = instanceCount of the series; multi-frame objects (tomosynthesis, enhanced "
            "CT/MR) count one image per instance because the index has no frame count"
        ),
        "catalog_order": "collection, PatientID, StudyInstanceUID, SeriesInstanceUID",
    }
    if spec.paper_counts:
        summary["paper_comparison"] = compare_with_paper(spec, summary)
        summary["comparison_notes"] = list(spec.comparison_notes)
    return summary


def compare_with_paper(spec: CorpusSpec, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Planned counts beside the paper's, with the reasons for the large differences."""
    paper = spec.paper_counts or {}
    pclasses = [str(c).upper() for c in paper["classes"]]
    rows: list[dict[str, Any]] = []
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for d in summary["per_dataset"]:
        if d["split"]:
            by_split[d["split"]].append(d)
    for s in SPLITS:
        for i, c in enumerate(pclasses):
            p = int(paper[s][i])
            planned = int(summary["images_catalog"][s].get(c, 0))
            ext = int(summary["images_external_published"][s].get(c, 0))
            total = planned + ext
            diff = total - p
            reasons: list[str] = []
            if p and abs(diff) > max(10_000, 0.05 * p):
                reasons = _explain(s, c, by_split[s], diff, spec)
            rows.append(
                {
                    "split": s,
                    "class": c,
                    "paper": p,
                    "planned_catalog": planned,
                    "external_published": ext,
                    "planned_total": total,
                    "difference": diff,
                    "ratio": round(total / p, 3) if p else None,
                    "explanation": reasons,
                }
            )
    split_totals = {
        s: {
            "paper": int(sum(paper[s])),
            "planned_total": int(sum(summary["images_total"][s].values())),
        }
        for s in SPLITS
    }
    notes: list[str] = []
    text = paper.get("text_totals") or {}
    if text:
        sums = {s: int(sum(paper[s])) for s in SPLITS}
        for s, n in text.items():
            if sums.get(s) != n:
                match = [t for t, m in sums.items() if m == n]
                notes.append(
                    f"The paper's text gives {n:,} images for {s}, but its per-class counts sum "
                    f"to {sums.get(s, 0):,} for {s}"
                    + (
                        f" and to exactly {n:,} for {match[0]}: the text swaps {s} and {match[0]}."
                        if match
                        else "."
                    )
                )
    return {
        "classes": pclasses,
        "source": paper.get("source"),
        "rows": rows,
        "split_totals": split_totals,
        "notes": notes,
    }


def _explain(
    split: str, cls: str, datasets: list[dict[str, Any]], diff: int, spec: CorpusSpec
) -> list[str]:
    out: list[str] = []

    def holds(d: dict[str, Any]) -> bool:
        return not d.get("classes") or cls in d["classes"]

    missing = [d["dataset"] for d in datasets if d["status"] == "not_in_catalog" and holds(d)]
    empty = [d["dataset"] for d in datasets if d["status"] == "no_images" and holds(d)]
    unsized = [
        d["dataset"]
        for d in datasets
        if d["source"] == "external"
        and cls in d.get("classes", [])
        and cls not in (d.get("published") or {})
    ]
    ext = [
        f"{d['dataset']} ({d['published'][cls]:,} published)"
        for d in datasets
        if d["source"] == "external" and cls in (d.get("published") or {})
    ]
    if diff < 0 and missing:
        out.append(f"not in the catalog (TCIA only): {', '.join(missing)}")
    if diff < 0 and empty:
        out.append(
            "in the catalog without series of this class (radiology not hosted): "
            + ", ".join(empty)
        )
    if diff < 0 and unsized:
        out.append(f"external sets without a published image count: {', '.join(unsized)}")
    if ext:
        out.append(f"external, counted at published size: {', '.join(ext)}")
    capped = [d["dataset"] for d in datasets if cls in d["capped"]]
    if capped and cls in spec.caps:
        out.append(
            f"{len(capped)} dataset(s) at the {cls} cap of {spec.caps[cls]:,}: {', '.join(capped)}"
        )
    uncapped = sorted(
        (d for d in datasets if d["kept_images"].get(cls, 0) > 0 and cls not in spec.caps),
        key=lambda d: -d["kept_images"][cls],
    )[:3]
    if diff > 0 and uncapped:
        out.append(
            "largest uncapped contributors now: "
            + ", ".join(f"{d['dataset']} {d['kept_images'][cls]:,}" for d in uncapped)
        )
    return out


# ---------------------------------------------------------------------------------- output
def _fmt(n: Any) -> str:
    return f"{int(n):,}" if n is not None else "–"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    classes = summary["classes"]
    lines = [f"# Corpus plan: {summary['spec']}", ""]
    src = summary.get("source") or {}
    if src:
        lines += [
            f"Source: {src.get('kind', '?')} `{src.get('path', '')}`"
            + (f" (idc-index-data {src['version']})" if src.get("version") else "")
            + f"; planned in {summary.get('plan_seconds', 0):.2f} s"
            + (
                f", {src['query_seconds']:.2f} s reading the catalog"
                if "query_seconds" in src
                else ""
            )
            + ".",
            "",
        ]
    lines += [
        f"Caps per dataset: {summary['caps'] or 'none'} "
        f"(sources: {', '.join(summary['caps_apply_to'])}), "
        f"taken in catalog order ({summary['catalog_order']}). {summary['image_count_rule']}.",
        "",
        "## Images per class per split (Fig. 3)",
        "",
        "Catalog series after caps; `+ext` adds the external datasets at their published sizes.",
        "",
        "| split | "
        + " | ".join(classes)
        + " | total | "
        + " | ".join(f"{c} +ext" for c in classes)
        + " | total +ext |",
        "|---" * (2 * len(classes) + 3) + "|",
    ]
    for s in SPLITS:
        cat = summary["images_catalog"][s]
        tot = summary["images_total"][s]
        lines.append(
            f"| {s} | "
            + " | ".join(_fmt(cat[c]) for c in classes)
            + f" | {_fmt(sum(cat.values()))} | "
            + " | ".join(_fmt(tot[c]) for c in classes)
            + f" | {_fmt(sum(tot.values()))} |"
        )
    lines += [
        "",
        f"Series planned: {summary['series']:,}, with images kept: {summary['series_kept']:,} "
        f"(multi-frame: {summary['multiframe_series_kept']:,}); download ≈ "
        f"{summary['download_MB'] / 1024:,.1f} GiB (whole series with any image kept).",
        "",
    ]
    comp = summary.get("paper_comparison")
    if comp:
        lines += [
            "## Compared with the paper",
            "",
            f"Paper counts: {comp.get('source') or 'spec'}.",
            "",
            "| split | class | paper | planned (IDC) | external (published) | planned total | "
            "difference | × paper | explanation |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in comp["rows"]:
            lines.append(
                f"| {r['split']} | {r['class']} | {_fmt(r['paper'])} | "
                f"{_fmt(r['planned_catalog'])} | "
                f"{_fmt(r['external_published'])} | {_fmt(r['planned_total'])} | "
                f"{r['difference']:+,} | {r['ratio'] if r['ratio'] is not None else '–'} | "
                + "; ".join(r["explanation"])
                + " |"
            )
        lines += ["", "| split | paper | planned total |", "|---|---:|---:|"]
        for s, t in comp["split_totals"].items():
            lines.append(f"| {s} | {_fmt(t['paper'])} | {_fmt(t['planned_total'])} |")
        lines.append("")
        for note in comp["notes"] + list(summary.get("comparison_notes") or []):
            lines.append(f"- {note}")
        lines.append("")
    sp = summary.get("split") or {}
    if sp:
        lines += [f"## Split ({sp.get('method')})", ""]
        if "shares" in sp:
            lines += [
                "| split | "
                + " | ".join(f"{c} share" for c in classes)
                + " | "
                + " | ".join(f"{c} locations" for c in classes)
                + " |",
                "|---" * (2 * len(classes) + 1) + "|",
            ]
            for s in SPLITS:
                locs = sp.get("locations_per_class", {}).get(s, {})
                lines.append(
                    f"| {s} | "
                    + " | ".join(f"{sp['shares'][s].get(c, 0):.3f}" for c in classes)
                    + " | "
                    + " | ".join(str(len(locs.get(c, []))) for c in classes)
                    + " |"
                )
            lines += [
                "",
                f"Target ratios {sp.get('target_ratios')}; largest share deviation "
                f"{sp.get('max_share_deviation')}; classes missing from a split: "
                f"{sp.get('missing') or 'none'}; fewer than {sp.get('min_locations', 2)} body "
                f"locations although the data has more: {sp.get('location_shortfalls') or 'none'}; "
                f"where the data cannot: {sp.get('location_limits') or 'none'}.",
                "",
            ]
    lines += [
        "## Per dataset",
        "",
        "| dataset | split | source | collection_id | status | series | "
        + " | ".join(f"{c} kept" for c in classes)
        + " | capped | GiB | note |",
        "|---" * (len(classes) + 9) + "|",
    ]
    for d in summary["per_dataset"]:
        note = d.get("published_note") or d.get("note") or d.get("reason") or ""
        if d.get("access"):
            note = f"access: {d['access']}. {note}"
        kept = d["kept_images"] if d["source"] != "external" else d.get("published", {})
        lines.append(
            f"| {d['dataset']} | {d['split'] or '–'} | {d['source']} | "
            f"{d['collection_id'] or '–'} | "
            f"{d['status']} | {d['series']:,} | "
            + " | ".join(
                _fmt(kept.get(c, 0)) if c in kept or d["source"] != "external" else "?"
                for c in classes
            )
            + f" | {','.join(d['capped']) or ''} | {d['download_MB'] / 1024:.2f} | "
            + note.replace("\n", " ").replace("|", "/")[:300]
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


def write_plan(
    plan: CorpusPlan, out: Path | str, spec: CorpusSpec | None = None
) -> dict[str, Path]:
    """Write ``plan.parquet``, ``summary.json``, ``summary.md`` (and the spec used) to ``out``."""
    import json

    from hypermodal.common.files import write_text_atomic, write_with

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "plan": out / "plan.parquet",
        "summary_json": out / "summary.json",
        "summary_md": out / "summary.md",
    }
    write_with(paths["plan"], lambda tmp: plan.series.to_parquet(tmp, index=False))
    write_text_atomic(paths["summary_json"], json.dumps(plan.summary, indent=2, default=str))
    write_text_atomic(paths["summary_md"], summary_markdown(plan.summary))
    if spec is not None and Path(spec.origin).exists():
        paths["spec"] = out / "spec.yaml"
        write_text_atomic(paths["spec"], Path(spec.origin).read_text())
    return paths


def plan_from_index(
    spec: CorpusSpec,
    index: Path | str | None = None,
    catalog: Path | str | None = None,
    combine: bool = False,
    **kwargs: Any,
) -> CorpusPlan:
    """Read the series of ``spec``'s datasets from the IDC index (or a local ``catalog``) and
    plan them.

    ``combine``: read both; the catalog supplies the collections the index lacks (for example
    a TCIA listing of the brain and head-and-neck collections IDC does not host).
    """
    from hypermodal.sources.plan import idc_index

    t0 = time.perf_counter()
    index_path = Path(index) if index is not None else idc_index.default_index_path()
    use_index = catalog is None or combine
    keys = [ds.key for ds in spec.datasets if ds.source != "external"]
    modalities = list(spec.modality_map)
    parts: list[pd.DataFrame] = []
    known: set[str] = set()
    fallback: dict[str, str] = {}
    if use_index:
        parts.append(idc_index.query_series(index_path, collections=keys, modalities=modalities))
        known |= set(idc_index.list_collections(index_path))
        fallback = idc_index.collection_locations(index_path)
    if catalog is not None:
        extra = idc_index.query_series(catalog, collections=keys, modalities=modalities)
        if use_index:  # the index wins for collections it has
            extra = extra[~extra["collection_id"].isin(known)]
        parts.append(extra)
        known |= set(idc_index.list_collections(catalog))
    series = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        series["collection_id"] = series["collection_id"].astype(object)
        series = series.sort_values(list(idc_index.CATALOG_ORDER), kind="stable")
        series = series.reset_index(drop=True)
    kind = {(True, False): "IDC index", (False, True): "local catalog"}.get(
        (use_index, catalog is not None), "IDC index + local catalog"
    )
    info = {
        "kind": kind,
        "path": ", ".join(
            str(p) for p in ([index_path] if use_index else []) + ([catalog] if catalog else [])
        ),
        "version": idc_index.index_version() if use_index and index is None else None,
        "query_seconds": round(time.perf_counter() - t0, 3),
        "series_read": int(len(series)),
    }
    plan = build_plan(
        spec,
        series,
        fallback_locations=fallback,
        source_info=info,
        known_collections=known,
        **kwargs,
    )
    plan.summary["plan_seconds_total"] = round(time.perf_counter() - t0, 3)
    return plan
