"""Plan a corpus at series level from a catalog of series, before downloading anything.

A corpus spec (:mod:`hypermodal.sources.plan.spec`) names the datasets, the split of each, the
caps per class and the class vocabulary. :func:`build_plan` joins it with a series catalog (the
IDC index by default, see :mod:`hypermodal.sources.plan.idc_index`) and returns one row per series
with its label, split and the number of its images kept after caps, plus a summary
(:mod:`hypermodal.sources.plan.summary`): images per class per split (the paper's Fig. 3), per
dataset, download size, and, for the bundled paper spec, a comparison with the paper's own
counts. :func:`~hypermodal.sources.plan.report.write_plan` writes both.

Images: the index counts instances; one instance is one 2D image except for multi-frame
objects (breast tomosynthesis, enhanced CT/MR), which the index cannot expand (it has no frame
count), so they count as one image each and are flagged ``multiframe``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import SpecError
from hypermodal.sources.plan.idc_index import (
    CATALOG_ORDER,
    collection_locations,
    default_index_path,
    index_version,
    list_collections,
    query_series,
)
from hypermodal.sources.plan.spec import CorpusSpec, norm_location
from hypermodal.sources.plan.summary import summarise
from hypermodal.split import DEFAULT_RATIOS, auto_split, location_quality, split_quality

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
class CorpusPlan:
    """A plan: one row per series (columns :data:`PLAN_COLUMNS`) and its summary."""

    series: pd.DataFrame
    summary: dict[str, Any]


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
    :func:`hypermodal.split.auto_split` (external datasets take part with their published
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
    parts = live["BodyPartExamined"].map(norm_location)
    for (name, label), locs in parts.groupby([live["dataset"], live["label"]], sort=False):
        out.setdefault(str(name), {})[str(label)] = sorted(
            {x for x in locs if isinstance(x, str) and x}
        )
    for ds in spec.datasets:
        per = out.setdefault(ds.name, {})
        default = ds.location or norm_location(fallback.get(ds.collection_id or ""))
        classes = list(ds.classes) if ds.source == "external" else list(per)
        for cls in classes:
            if not per.get(cls) and default:
                per[cls] = [default]
    return out


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
    t0 = time.perf_counter()
    index_path = Path(index) if index is not None else default_index_path()
    use_index = catalog is None or combine
    keys = [ds.key for ds in spec.datasets if ds.source != "external"]
    modalities = list(spec.modality_map)
    parts: list[pd.DataFrame] = []
    known: set[str] = set()
    fallback: dict[str, str] = {}
    if use_index:
        parts.append(query_series(index_path, collections=keys, modalities=modalities))
        known |= set(list_collections(index_path))
        fallback = collection_locations(index_path)
    if catalog is not None:
        extra = query_series(catalog, collections=keys, modalities=modalities)
        if use_index:  # the index wins for collections it has
            extra = extra[~extra["collection_id"].isin(known)]
        parts.append(extra)
        known |= set(list_collections(catalog))
    series = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        series["collection_id"] = series["collection_id"].astype(object)
        series = series.sort_values(list(CATALOG_ORDER), kind="stable")
        series = series.reset_index(drop=True)
    kind = {(True, False): "IDC index", (False, True): "local catalog"}.get(
        (use_index, catalog is not None), "IDC index + local catalog"
    )
    info = {
        "kind": kind,
        "path": ", ".join(
            str(p) for p in ([index_path] if use_index else []) + ([catalog] if catalog else [])
        ),
        "version": index_version() if use_index and index is None else None,
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
