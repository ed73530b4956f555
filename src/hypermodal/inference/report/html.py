"""Write the archive report: one self-contained HTML page plus the tables beside it.

``index.html`` holds everything it shows: the stylesheet inline, every thumbnail as a base64 PNG
``data:`` URI, the charts as inline SVG; it has no script, and its Content-Security-Policy forbids
the page any request (images only from ``data:``), so it opens the same from a laptop, a mail
attachment or an air-gapped viewer. Beside it: ``images.csv``/``images.parquet``,
``series.csv``/``series.parquet`` and ``errors.jsonl``, every file written atomically, the page
last.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.files import atomic_path, check_writable, remove_stale_temps
from hypermodal.common.isolation import DecodeLimits
from hypermodal.common.rejects import write_errors
from hypermodal.inference.report import sections
from hypermodal.inference.report.charts import confidence_histogram
from hypermodal.inference.report.sections import esc
from hypermodal.inference.report.tables import (
    Card,
    Shot,
    class_counts,
    class_order,
    flagged_cards,
    folder_counts,
    image_groups,
    load_errors,
    representative,
    sheet_sample,
    shot_of,
)
from hypermodal.inference.report.thumbnails import render_thumbnails

__all__ = ["DEFAULT_MAX_FLAGGED", "DEFAULT_MAX_PER_SHEET", "write_archive_report"]

DEFAULT_MAX_PER_SHEET = 48
#: flagged series shown with thumbnails; the rest are listed as text
DEFAULT_MAX_FLAGGED = 1000
#: a page that forbids itself every request: no script, images from data: URIs only
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'"
OWN_FILES = (
    "index.html",
    "images.csv",
    "images.parquet",
    "series.csv",
    "series.parquet",
    "errors.jsonl",
)


def _stylesheet() -> str:
    return importlib.resources.files(__package__).joinpath("report.css").read_text("utf-8")


def _check(name: str, value: int, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be a whole number {span}, not {value!r}")
    return value


def _write_tables(df: pd.DataFrame, out_dir: Path, stem: str) -> None:
    with atomic_path(out_dir / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_dir / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)


def _threshold(given: float | None, *tables: pd.DataFrame | None) -> float | None:
    if given is not None:
        return float(given)
    for df in tables:
        if df is not None and "unknown_below" in df.attrs:
            value = float(df.attrs["unknown_below"])
            return value if value > 0 else None
    return None


def write_archive_report(
    images: pd.DataFrame | None,
    series: pd.DataFrame | None,
    out_dir: Path | str,
    *,
    title: str | None = None,
    errors: Iterable[Mapping[str, Any]] | Path | str | None = None,
    thumb_size: int = 128,
    max_per_sheet: int = DEFAULT_MAX_PER_SHEET,
    max_flagged: int = DEFAULT_MAX_FLAGGED,
    per_series: int = 3,
    seed: int = 0,
    unknown_below: float | None = None,
    notes: Sequence[str] = (),
    workers: int | None = None,
    limits: DecodeLimits | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and the tables beside it; return the page's path.

    The page shows: counts per class (series, their images by the headers, images decoded) and
    per source folder × class; every conflict (the header says one class, the image another)
    and every ``UNKNOWN`` with thumbnails captioned with path, header label, prediction and
    confidence; a contact sheet per class (a seeded sample of at most ``max_per_sheet``, with
    how many are not shown); the confidence histograms; the errors with their reasons.

    Args:
        images: The per-image table of ``predict`` (may be empty).
        series: The per-series table, or ``None`` (the counts and sheets are then per image).
        out_dir: The report folder (made when missing; the report's own files are replaced).
        title: The page title (default: "Archive report").
        errors: The skipped inputs: records (``path``, ``stage``, ``reason``) or the
            ``<out>.errors.jsonl`` file.
        thumb_size: The largest side of a thumbnail in pixels (16–1024).
        max_per_sheet: Thumbnails per class on the contact sheets.
        max_flagged: Flagged series (or images) shown with thumbnails; the rest are listed.
        per_series: Flagged images shown per flagged series.
        seed: Seed of the contact-sheet samples.
        unknown_below: The ``UNKNOWN`` threshold drawn on the histograms (default: the
            tables' ``attrs["unknown_below"]`` when they carry it).
        notes: Warnings to show at the top (the model's, for example).
        workers: Processes that render the thumbnails when there are many.
        limits: Time and memory limits of each of them.

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: An option out of range.
        OutputError: ``out_dir`` cannot be written (a file, read-only).
        DiskFullError: The disk filled up while writing.
    """
    _check("thumb_size", thumb_size, 16, 1024)
    _check("max_per_sheet", max_per_sheet, 0)
    _check("max_flagged", max_flagged, 0)
    _check("per_series", per_series, 1)
    out_dir = check_writable(Path(out_dir), folder=True)
    images = images if images is not None else pd.DataFrame()
    records = load_errors(errors)
    order = class_order(series, images)
    unit_table = series if series is not None else images
    unit = "series" if series is not None else "images"
    cards = flagged_cards(images, series, per_series)
    shown, rest = cards[:max_flagged], cards[max_flagged:]
    sheets = _sheet_shots(images, series, unit_table, order, max_per_sheet, seed)
    wanted = [s.key for c in shown for s in c.shots] + [s.key for _, ss, _ in sheets for s in ss]
    thumbs = render_thumbnails(wanted, thumb_size, workers=workers, limits=limits)

    body = [
        _summary(images, series, cards, records, notes),
        _counts(images, series, order, unit_table, unit),
        _flagged(shown, rest, thumbs, series is not None),
        _charts(images, series, order, _threshold(unknown_below, series, images)),
        _sheets(sheets, thumbs, unit, max_per_sheet),
        f'<section id="errors-section"><h2>Errors</h2>{sections.errors_table(records)}</section>',
    ]
    page = _page(title or "Archive report", body, thumb_size, len(cards), len(records))
    remove_stale_temps(out_dir, OWN_FILES)  # temporary files a killed earlier run left
    _write_tables(images, out_dir, "images")
    if series is not None:
        _write_tables(series, out_dir, "series")
    else:  # a series table of an earlier report would not match this one
        for name in ("series.csv", "series.parquet"):
            (out_dir / name).unlink(missing_ok=True)
    write_errors(out_dir / "errors.jsonl", records)
    index = out_dir / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return index


def _sheet_shots(
    images: pd.DataFrame,
    series: pd.DataFrame | None,
    unit_table: pd.DataFrame,
    order: list[str],
    cap: int,
    seed: int,
) -> list[tuple[str, list[Shot], int]]:
    """Per class: the sampled series' representative images (or the sampled image rows), and
    how many the class has."""
    if not len(unit_table) or "prediction" not in unit_table:
        return []
    samples = [(cls, *sheet_sample(unit_table, cls, cap, seed)) for cls in order]
    samples = [(cls, rows, total) for cls, rows, total in samples if total]
    if series is None:
        return [(cls, [shot_of(r) for _, r in rows.iterrows()], n) for cls, rows, n in samples]
    keys = {str(k) for _, rows, _ in samples for k in rows.get("series", [])}
    groups = (
        image_groups(images[images["series"].astype(str).isin(keys)])
        if len(images) and "series" in images
        else {}
    )
    return [
        (cls, [representative(r, groups.get(str(r.get("series")))) for _, r in rows.iterrows()], n)
        for cls, rows, n in samples
    ]


def _page(title: str, body: list[str], thumb_size: int, flagged: int, errors: int) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(
        f'<a href="#{i}">{esc(t)}</a>'
        for i, t in (
            ("counts", "counts"),
            ("flagged", f"conflicts and unknowns ({flagged})"),
            ("confidence", "confidence"),
            ("sheets", "contact sheets"),
            ("errors-section", f"errors ({errors})"),
        )
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_stylesheet()}"
        f":root {{ --thumb: {thumb_size}px; }}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1>'
        f'<p class="meta">Written {stamp} by hypermodal</p>'
        f'<nav class="toc">{toc}</nav></header><main>{"".join(body)}</main>'
        '<footer>Tables beside this page: <a href="series.csv">series.csv</a>, '
        '<a href="images.csv">images.csv</a> (and .parquet), <a href="errors.jsonl">errors.jsonl'
        "</a>.</footer></body></html>\n"
    )


def _summary(
    images: pd.DataFrame,
    series: pd.DataFrame | None,
    cards: list[Card],
    records: list[dict[str, Any]],
    notes: Sequence[str],
) -> str:
    items: list[tuple[str, int, str]] = []
    if series is not None:
        items.append(("series", len(series), ""))
        if "num_images" in series:
            n = int(pd.to_numeric(series["num_images"], errors="coerce").fillna(0).sum())
            items.append(("images", n, ""))
    items.append(("images decoded", len(images), ""))
    conflicts = sum("conflict" in c.kind for c in cards)
    unknowns = sum("unknown" in c.kind for c in cards)
    # a tile is marked (coloured) only when it holds something to look at
    items.append(("conflicts", conflicts, "conflict" if conflicts else ""))
    items.append(("unknown", unknowns, "unknown" if unknowns else ""))
    items.append(("errors", len(records), "errors" if records else ""))
    listed = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return (
        f'<section id="summary"><h2>Summary</h2>{sections.tiles(items)}'
        f"{f'<ul class=notes>{listed}</ul>' if listed else ''}</section>"
    )


def _counts(
    images: pd.DataFrame,
    series: pd.DataFrame | None,
    order: list[str],
    unit_table: pd.DataFrame,
    unit: str,
) -> str:
    counts = class_counts(images, series)
    root, per_folder = folder_counts(unit_table, order) if len(unit_table) else ("", pd.DataFrame())
    return (
        '<section id="counts"><h2>Counts per class</h2>'
        f"{sections.counts_table(counts, order)}"
        f'<h3 id="folders">Per source folder</h3>{sections.folders_table(root, per_folder, unit)}'
        "</section>"
    )


def _flagged(cards: list[Card], rest: list[Card], thumbs: Any, is_series: bool) -> str:
    what = "series" if is_series else "images"
    if not cards:
        inner = f'<p class="note" id="no-flagged">No conflict and no UNKNOWN among the {what}.</p>'
    else:
        inner = (
            f'<p class="note">{len(cards) + len(rest)} {what} flagged: the header claims another '
            "class than the image shows (conflict), or no class reaches the threshold "
            f"(UNKNOWN).</p>"
            f'<div class="cards">{"".join(sections.card(c, thumbs, is_series) for c in cards)}'
            "</div>"
        )
    if rest:
        inner += (
            f'<p class="note">{len(rest)} more flagged {what}, listed without thumbnails:</p>'
            f"{sections.rest_table(rest)}"
        )
    return f'<section id="flagged"><h2>Conflicts and unknowns</h2>{inner}</section>'


def _charts(
    images: pd.DataFrame, series: pd.DataFrame | None, order: list[str], threshold: float | None
) -> str:
    charts = []
    for df, name, element in ((series, "series", "hist-series"), (images, "images", "hist-images")):
        if df is None or not len(df) or "confidence" not in df:
            continue
        svg = confidence_histogram(
            pd.to_numeric(df["confidence"], errors="coerce").to_numpy(),
            df["prediction"].astype(str).tolist(),
            order,
            title=f"Confidence of the {len(df)} {name}",
            element_id=element,
            threshold=threshold,
        )
        charts.append(f"<figure><figcaption>{esc(name)} ({len(df)})</figcaption>{svg}</figure>")
    inner = "".join(charts) or '<p class="note">Nothing was classified.</p>'
    return (
        f'<section id="confidence"><h2>Confidence</h2><div class="charts">{inner}</div></section>'
    )


def _sheets(sheets: list[tuple[str, list[Shot], int]], thumbs: Any, unit: str, cap: int) -> str:
    parts = []
    for cls, shots, total in sheets:
        hidden = total - len(shots)
        note = (
            f'<p class="note" data-hidden="{hidden}">{len(shots)} of {total} {unit} shown '
            f"(a seeded sample); {hidden} not shown.</p>"
            if hidden
            else f'<p class="note" data-hidden="0">All {total} {unit} shown.</p>'
        )
        figs = "".join(sections.figure(s, thumbs[s.key], brief=True) for s in shots)
        parts.append(
            f'<div class="sheet-block" id="sheet-{esc(cls)}" data-class="{esc(cls)}" '
            f'data-total="{total}" data-shown="{len(shots)}"><h3>{esc(cls)}: {total} {unit}</h3>'
            f'{note}<div class="sheet">{figs}</div></div>'
        )
    if not parts:
        parts.append(f'<p class="note">No {unit} to show (at most {cap} per class).</p>')
    return f'<section id="sheets"><h2>Contact sheets</h2>{"".join(parts)}</section>'
