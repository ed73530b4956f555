"""Charts of the archive report, drawn as inline SVG (no plotting library, no script).

:func:`confidence_histogram` stacks the confidences of one table's rows by predicted class in
bins of equal width from 0 to 1, marks the ``UNKNOWN`` threshold, and carries its counts in
``data-`` attributes and ``<title>`` tooltips, so the page shows them without JavaScript and a
test can read them back.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

__all__ = ["CLASS_COLOURS", "class_colour", "confidence_histogram"]

#: colours of the usual classes; any other class takes the next colour of :data:`_EXTRA`
CLASS_COLOURS = {
    "CT": "#1f77b4",
    "MR": "#ff7f0e",
    "PT": "#2ca02c",
    "XR": "#d62728",
    "OTHER": "#9467bd",
    "UNKNOWN": "#7f7f7f",
}
_EXTRA = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39")


def class_colour(name: str, order: Sequence[str]) -> str:
    """The colour of class ``name``; classes without a fixed one are coloured by position."""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    others = [c for c in order if c not in CLASS_COLOURS]
    pos = others.index(name) if name in others else len(others)
    return _EXTRA[pos % len(_EXTRA)]


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def confidence_histogram(
    confidence: Sequence[float] | np.ndarray,
    prediction: Sequence[str],
    classes: Sequence[str],
    *,
    title: str,
    element_id: str,
    bins: int = 20,
    threshold: float | None = None,
    width: int = 640,
    height: int = 260,
) -> str:
    """An SVG histogram of confidences, stacked by predicted class.

    Args:
        confidence: One confidence per row (non-finite values are left out and counted in the
            ``data-missing`` attribute).
        prediction: The predicted class of each row.
        classes: The classes in legend order (a class not listed is added after them).
        title: The chart's accessible name.
        element_id: The ``id`` of the ``<svg>``.
        bins: How many bins of equal width from 0 to 1 (1.0 falls in the last).
        threshold: The confidence below which a prediction is ``UNKNOWN``, drawn as a dashed
            line (``None``: not drawn).
        width: Width in pixels.
        height: Height in pixels.

    Returns:
        The ``<svg>`` element as text.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    pred = np.asarray([str(p) for p in prediction], dtype=object)
    ok = np.isfinite(conf)
    order = list(dict.fromkeys([*classes, *sorted(set(pred[ok]))]))
    order = [c for c in order if (pred[ok] == c).any()]
    edges = np.linspace(0.0, 1.0, bins + 1)
    where = np.clip(np.searchsorted(edges, conf[ok], side="right") - 1, 0, bins - 1)
    counts = {c: np.bincount(where[pred[ok] == c], minlength=bins) for c in order}
    totals = sum(counts.values()) if counts else np.zeros(bins, int)
    top = max(1, int(np.max(totals)) if len(totals) else 1)
    left, right, upper, lower = 48, 120, 14, 36
    plot_w, plot_h = width - left - right, height - upper - lower
    bar_w = plot_w / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{_esc(element_id)}" class="chart" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(title)}" data-total="{int(ok.sum())}" '
        f'data-missing="{int((~ok).sum())}" data-bins="{bins}">',
        f"<title>{_esc(title)}</title>",
    ]
    for tick in _ticks(top):  # horizontal grid and the count axis
        y = upper + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for b in range(bins):
        base = 0
        x = left + b * bar_w
        for c in order:
            n = int(counts[c][b])
            if not n:
                continue
            h = plot_h * n / top
            y = upper + plot_h - plot_h * (base + n) / top
            tip = f"{c}: {n} with confidence {edges[b]:.2f}–{edges[b + 1]:.2f}"
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{class_colour(c, order)}" data-class="{_esc(c)}" '
                f'data-bin="{b}" data-count="{n}"><title>{_esc(tip)}</title></rect>'
            )
            base += n
    axis_y = upper + plot_h
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" class="axis"/>'
    )
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * v
        parts.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" class="axis"/>'
            f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{v:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">confidence</text>'
    )
    if threshold is not None and 0.0 <= threshold <= 1.0:
        x = left + plot_w * threshold
        parts.append(
            f'<line x1="{x:.1f}" y1="{upper}" x2="{x:.1f}" y2="{axis_y}" class="threshold"/>'
            f'<text x="{x + 4:.1f}" y="{upper + 10}" class="threshold-label">'
            f"UNKNOWN below {threshold:g}</text>"
        )
    for i, c in enumerate(order):  # the legend, with each class's total
        y = upper + 4 + i * 18
        parts.append(
            f'<rect x="{width - right + 14}" y="{y}" width="12" height="12" '
            f'fill="{class_colour(c, order)}"/>'
            f'<text x="{width - right + 32}" y="{y + 10}" data-legend="{_esc(c)}">'
            f"{_esc(c)} ({int(counts[c].sum())})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(top: int) -> list[int]:
    """Up to about five round count ticks from 0 to ``top``."""
    raw = top / 4
    magnitude = 10 ** int(np.floor(np.log10(raw))) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return list(range(0, top + 1, max(1, int(step))))
