"""The sections of the archive report page, as HTML text.

Every value that comes from a table or a file name is escaped (:func:`esc`); paths are written as
:func:`~hypermodal.common.paths.path_text` text first, so a name that is not UTF-8 shows as
``\\xNN`` instead of breaking the page. Elements carry ``id`` and ``data-`` attributes naming
what they show (``data-class``, ``data-column``, ``data-kind``, ``data-path``), so the page can
be checked by reading its DOM.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from hypermodal.common.paths import path_text
from hypermodal.inference.report.charts import class_colour
from hypermodal.inference.report.tables import Card, Shot, confidence_value, series_details, text
from hypermodal.inference.report.thumbnails import Thumbnail

#: the most error records listed on the page (all are in errors.jsonl beside it)
MAX_ERRORS_SHOWN = 2000
_COLUMN_TITLES = {
    "series": "series",
    "images": "images (by the headers)",
    "decoded": "images decoded",
}


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML, attributes included (lone surrogates escaped)."""
    raw = "" if value is None else str(value)
    raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(raw, quote=True)


def esc_path(value: Any) -> str:
    """A path as escaped :func:`~hypermodal.common.paths.path_text` text."""
    raw = text(value)
    return esc(path_text(raw)) if raw is not None else ""


def _conf(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "–"


def tiles(items: Sequence[tuple[str, int, str]]) -> str:
    """Big numbers at the top: ``(what, count, css class)``."""
    cells = "".join(
        f'<div class="tile {esc(cls)}" data-tile="{esc(what)}"><span class="n">{n}</span>'
        f'<span class="what">{esc(what)}</span></div>'
        for what, n, cls in items
    )
    return f'<div class="tiles">{cells}</div>'


def counts_table(counts: pd.DataFrame, order: Sequence[str]) -> str:
    """The per-class table (``table#class-counts``), with a total row."""
    cols = list(counts.columns)
    head = "".join(f'<th data-column="{esc(c)}">{esc(_COLUMN_TITLES.get(c, c))}</th>' for c in cols)
    rows = []
    for cls, values in counts.iterrows():
        swatch = f'<span class="swatch" style="background:{class_colour(str(cls), order)}"></span>'
        cells = "".join(f'<td data-column="{esc(c)}">{int(values[c])}</td>' for c in cols)
        rows.append(f'<tr data-class="{esc(cls)}"><td>{swatch}{esc(cls)}</td>{cells}</tr>')
    total = "".join(f'<td data-column="{esc(c)}">{int(counts[c].sum())}</td>' for c in cols)
    return (
        f'<table id="class-counts"><thead><tr><th>class</th>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody><tfoot><tr data-class="total"><td>total</td>{total}'
        "</tr></tfoot></table>"
    )


def folders_table(root: str, table: pd.DataFrame, unit: str) -> str:
    """Rows per source folder × class (``table#folder-counts``)."""
    if not len(table):
        return '<p class="note">Nothing was classified.</p>'
    cols = list(table.columns)
    head = "".join(f'<th data-column="{esc(c)}">{esc(c)}</th>' for c in cols)
    rows = []
    for source, values in table.iterrows():
        name = "(files directly in the root)" if source == "." and root else source
        cells = "".join(f'<td data-column="{esc(c)}">{int(values[c])}</td>' for c in cols)
        rows.append(
            f'<tr data-source="{esc_path(source)}"><td class="path">{esc_path(name)}</td>'
            f"{cells}</tr>"
        )
    where = f"Top-level folders under <code>{esc_path(root)}</code>; " if root else ""
    return (
        f'<p class="note">{where}{esc(unit)} counted by predicted class.</p>'
        f'<table id="folder-counts"><thead><tr><th>source folder</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def figure(shot: Shot, thumb: Thumbnail, kind: str = "", brief: bool = False) -> str:
    """One thumbnail with its caption: path (and image number), header label, prediction and
    confidence; a placeholder's reason when the image could not be read."""
    shown = shot.index if shot.index is not None else thumb.shown_index
    where = esc_path(shot.path) + (f" #{shown}" if shown is not None else "")
    label = f"{shot.prediction} {_conf(shot.confidence)}"
    lines = [f'<span class="path">{where}</span>']
    if brief:
        lines.append(f"<b>{esc(label)}</b>")
    else:
        lines.append(
            f"header <b>{esc(shot.header_label or 'none')}</b> · predicted "
            f"<b>{esc(shot.prediction)}</b> {_conf(shot.confidence)}"
        )
        evidence = (("pixels", shot.pixel_prediction), ("features", shot.feature_prediction))
        image_says = [f"{name} {esc(value)}" for name, value in evidence if value]
        if image_says:
            lines.append(" · ".join(image_says))
    if thumb.reason:
        lines.append(f'<span class="reason">not shown: {esc(thumb.reason)}</span>')
    alt = f"{shot.prediction} image of {path_text(shot.path)}"
    attrs = (
        f'data-path="{esc_path(shot.path)}" data-index="{"" if shown is None else shown}" '
        f'data-prediction="{esc(shot.prediction)}" data-header="{esc(shot.header_label or "")}" '
        f'data-confidence="{_conf(shot.confidence)}"'
    )
    if kind:
        attrs += f' data-kind="{esc(kind)}"'
    if thumb.reason:
        attrs += f' data-unreadable="{esc(thumb.reason)}"'
    return (
        f'<figure class="shot" {attrs}><div class="frame"><img src="{thumb.data_uri}" '
        f'width="{thumb.width}" height="{thumb.height}" alt="{esc(alt)}" '
        f'title="{esc_path(shot.path)}"></div><figcaption>{"<br>".join(lines)}</figcaption></figure>'
    )


def _card_title(card: Card) -> str:
    row = card.row
    header = text(row.get("header_label"))
    pred = text(row.get("prediction")) or ""
    conf = _conf(confidence_value(row.get("confidence")))
    parts = []
    if "conflict" in card.kind:
        evidence = [
            f"{name} {value}"
            for name, value in (
                ("pixels", text(row.get("pixel_prediction"))),
                ("features", text(row.get("feature_prediction"))),
            )
            if value
        ]
        says = f" ({', '.join(evidence)})" if evidence else ""
        parts.append(
            f"Conflict: the header says {header or '?'}, the image evidence disagrees{says}"
        )
    if "unknown" in card.kind:
        parts.append(f"UNKNOWN: no class reaches the threshold (best {conf})")
    parts.append(f"predicted {pred} ({conf})")
    return "; ".join(parts)


def card(card: Card, thumbs: Mapping[tuple[str, int | None], Thumbnail], is_series: bool) -> str:
    """A flagged series (or image): why, its details, its thumbnails."""
    row = card.row
    details = [("path", path_text(text(row.get("path")) or ""))]
    if is_series:
        details += series_details(row)
        key = text(row.get("series"))
        if key and key != text(row.get("path")):
            details.append(("series key", key))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in details)
    figs = "".join(figure(s, thumbs[s.key], card.kind) for s in card.shots)
    more = (
        f'<p class="more">and {card.more} more flagged image(s) of this series, not shown '
        "(all are in images.csv)</p>"
        if card.more
        else ""
    )
    kind_class = "conflict" if "conflict" in card.kind else "unknown"
    return (
        f'<article class="card {kind_class}" data-kind="{esc(card.kind)}" '
        f'data-path="{esc_path(row.get("path"))}" '
        f'data-series="{esc(text(row.get("series")) or "")}">'
        f'<h3>{esc(_card_title(card))}</h3><dl class="details">{dl}</dl>'
        f'<div class="shots">{figs}</div>{more}</article>'
    )


def rest_table(cards: Sequence[Card]) -> str:
    """Flagged items past the thumbnail cap: listed without pictures."""
    rows = "".join(
        f'<tr data-kind="{esc(c.kind)}"><td class="path">{esc_path(c.row.get("path"))}</td>'
        f"<td>{esc(c.kind)}</td><td>{esc(text(c.row.get('header_label')) or '')}</td>"
        f"<td>{esc(text(c.row.get('prediction')) or '')}</td>"
        f"<td>{_conf(confidence_value(c.row.get('confidence')))}</td></tr>"
        for c in cards
    )
    return (
        '<table id="flagged-rest"><thead><tr><th>path</th><th>flag</th><th>header</th>'
        f"<th>prediction</th><th>confidence</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def errors_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The unreadable inputs with their reasons (``table#errors``)."""
    if not records:
        return '<p class="note" id="no-errors">No input was skipped.</p>'
    shown = records[:MAX_ERRORS_SHOWN]
    rows = "".join(
        f'<tr><td class="path">{esc_path(r.get("path"))}</td><td>{esc(r.get("stage", ""))}</td>'
        f'<td class="reason">{esc(r.get("reason", ""))}</td></tr>'
        for r in shown
    )
    note = (
        f'<p class="note">The first {len(shown)} of {len(records)} are listed; all are in '
        "errors.jsonl.</p>"
        if len(records) > len(shown)
        else ""
    )
    return (
        f'{note}<table id="errors"><thead><tr><th>path</th><th>stage</th><th>reason</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
    )
