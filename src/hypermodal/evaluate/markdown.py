"""Markdown pieces the reports share: percentages, numbers, durations and tables."""

from __future__ import annotations

from typing import Any

from hypermodal.evaluate.metrics import finite_or_none


def pct(value: Any) -> str:
    """``0.5`` → ``"50.00%"``; ``"n/a"`` when not a finite number."""
    v = finite_or_none(value)
    return "n/a" if v is None else f"{v:.2%}"


def num(value: Any, digits: int = 1) -> str:
    """A number with thousands separators and ``digits`` decimals (``"n/a"`` when none)."""
    v = finite_or_none(value)
    return "n/a" if v is None else f"{v:,.{digits}f}"


def duration(seconds: Any) -> str:
    """Seconds as ``"12.0 s"``, ``"3.5 min"`` or ``"1.20 h"``."""
    s = finite_or_none(seconds)
    if s is None:
        return "n/a"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` is one char per column (l/r)."""
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
