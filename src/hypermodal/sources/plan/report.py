"""The files a plan writes: ``plan.parquet``, ``summary.json``, ``summary.md`` and the spec."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypermodal.common.files import write_text_atomic, write_with
from hypermodal.sources.plan.build import CorpusPlan
from hypermodal.sources.plan.spec import CorpusSpec
from hypermodal.split import SPLITS


def _fmt(n: Any) -> str:
    return f"{int(n):,}" if n is not None else "–"


def _overview_lines(summary: Mapping[str, Any]) -> list[str]:
    """Title, catalog source and timing, caps, the Fig. 3 table, series and download size."""
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
    return lines


def _comparison_lines(summary: Mapping[str, Any], comp: Mapping[str, Any]) -> list[str]:
    """Planned counts beside the paper's, split totals, and the notes."""
    lines = [
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
    return lines


def _split_lines(sp: Mapping[str, Any], classes: list[str]) -> list[str]:
    """How the split came out: class shares and body locations per split."""
    lines = [f"## Split ({sp.get('method')})", ""]
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
    return lines


def _dataset_lines(summary: Mapping[str, Any], classes: list[str]) -> list[str]:
    """One table row per dataset of the spec."""
    lines = [
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
    return lines


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: the summary of :func:`~hypermodal.sources.plan.summary.summarise` as
    Markdown tables."""
    classes = summary["classes"]
    lines = _overview_lines(summary)
    comp = summary.get("paper_comparison")
    if comp:
        lines += _comparison_lines(summary, comp)
    sp = summary.get("split") or {}
    if sp:
        lines += _split_lines(sp, classes)
    lines += _dataset_lines(summary, classes)
    return "\n".join(lines)


def write_plan(
    plan: CorpusPlan, out: Path | str, spec: CorpusSpec | None = None
) -> dict[str, Path]:
    """Write ``plan.parquet``, ``summary.json``, ``summary.md`` (and the spec used) to ``out``."""
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
