"""The summary of a plan: images per class per split and per dataset, and the paper beside it.

:func:`summarise` is what ``summary.json`` holds; for a spec with ``paper_counts`` (the bundled
paper spec) :func:`compare_with_paper` sets the planned counts beside the paper's and explains
the large differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from hypermodal.sources.plan.spec import CorpusSpec, DatasetSpec, norm_location
from hypermodal.split import SPLITS


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
        entry = _dataset_entry(ds, rows, split, status, raw, kept, classes)
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


def _dataset_entry(
    ds: DatasetSpec,
    rows: pd.DataFrame,
    split: str | None,
    status: str,
    raw: pd.DataFrame,
    kept: pd.DataFrame,
    classes: list[str],
) -> dict[str, Any]:
    """The counts of one dataset in the summary's ``per_dataset`` list."""
    kept_rows = rows[rows["kept_images"] > 0]
    full_mb = float(kept_rows["series_size_MB"].fillna(0).sum())
    frac = (kept_rows["kept_images"] / kept_rows["images"].clip(lower=1)).to_numpy()
    kept_mb = float((kept_rows["series_size_MB"].fillna(0).to_numpy() * frac).sum())
    return {
        "dataset": ds.name,
        "split": split,
        "source": ds.source,
        "collection_id": ds.collection_id,
        "status": status,
        "series": int(len(rows)),
        "series_kept": int(len(kept_rows)),
        "images": {
            c: int(raw.at[ds.name, c]) if ds.name in raw.index and c in raw else 0 for c in classes
        },
        "kept_images": {
            c: int(kept.at[ds.name, c]) if ds.source != "external" else 0 for c in classes
        },
        "capped": sorted({str(x) for x in rows.loc[rows["capped"], "label"]}),
        "download_MB": round(full_mb, 1),
        "download_MB_kept_fraction": round(kept_mb, 1),
        "multiframe_series": int(rows["multiframe"].sum()),
        "body_parts": sorted({p for p in map(norm_location, kept_rows["BodyPartExamined"]) if p}),
    }


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
