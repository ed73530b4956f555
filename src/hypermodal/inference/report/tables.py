"""What the archive report counts and shows, worked out from the prediction tables.

The report reads two tables (:func:`~hypermodal.inference.predict.predict`'s): one row per
decoded image (``path, index, prediction, confidence, header_label, agreement, series, …``) and,
when given, one row per series (``series, path, prediction, confidence, …``, with ``folder``,
``num_images``, ``PatientID``, ``StudyDate`` and the descriptions when the table has them: each is
used when present, none is required). This module turns them into the counts, the flagged items
(conflicts and ``UNKNOWN``) and the contact-sheet samples; :mod:`.html` lays them out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.rejects import read_errors

__all__ = [
    "UNKNOWN",
    "Card",
    "Shot",
    "class_counts",
    "class_order",
    "flagged_cards",
    "flags",
    "folder_counts",
    "image_groups",
    "load_errors",
    "representative",
    "sheet_sample",
    "shot_of",
    "source_folders",
]

UNKNOWN = "UNKNOWN"
#: columns of a series row shown in a caption when the table has them, with their labels
SERIES_DETAILS = (
    ("PatientID", "patient"),
    ("StudyDate", "study date"),
    ("StudyDescription", "study"),
    ("SeriesDescription", "series"),
    ("num_images", "images"),
)


@dataclass(frozen=True)
class Shot:
    """One image to show: where it is and what was said of it."""

    path: str
    index: int | None
    prediction: str
    confidence: float
    header_label: str | None = None
    agreement: str | None = None
    pixel_prediction: str | None = None
    feature_prediction: str | None = None

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.path, self.index)


@dataclass
class Card:
    """A flagged series (or image): why it is flagged, its row, and the images shown of it."""

    kind: str
    row: dict[str, Any]
    shots: list[Shot] = field(default_factory=list)
    more: int = 0  # flagged images of it that are not shown


# ----------------------------------------------------------------------------- values
def text(value: Any) -> str | None:
    """A table value as text, or ``None`` for a missing one (NaN, None, empty)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    out = str(value)
    return out if out else None


def _index(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def confidence_value(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def flags(df: pd.DataFrame) -> pd.Series:
    """Why each row is flagged: ``conflict``, ``unknown``, both (``conflict unknown``) or ``""``."""
    if df is None or not len(df):
        return pd.Series([], dtype=object)
    conflict = (
        df["agreement"].astype(str).eq("conflict")
        if "agreement" in df
        else pd.Series(False, index=df.index)
    )
    unknown = (
        df["prediction"].astype(str).eq(UNKNOWN)
        if "prediction" in df
        else pd.Series(False, index=df.index)
    )
    kinds = np.where(conflict & unknown, "conflict unknown", np.where(conflict, "conflict", ""))
    kinds = np.where(~conflict & unknown, "unknown", kinds)
    return pd.Series(kinds, index=df.index, dtype=object)


def class_order(*tables: pd.DataFrame | None) -> list[str]:
    """The classes in the model's order (its ``p_<CLASS>`` columns), then any other predicted
    value met in the tables, ``UNKNOWN`` last."""
    order: list[str] = []
    for df in tables:
        if df is not None:
            order += [c[2:] for c in df.columns if str(c).startswith("p_")]
    for df in tables:
        if df is not None and "prediction" in df:
            order += sorted({str(v) for v in df["prediction"].dropna()})
    order = [c for c in dict.fromkeys(order) if c != UNKNOWN]
    return [*order, UNKNOWN]


# ----------------------------------------------------------------------------- counts
def class_counts(images: pd.DataFrame, series: pd.DataFrame | None) -> pd.DataFrame:
    """Counts per predicted class: ``series`` and ``images`` (the images of those series, by
    their headers) from the series table, ``decoded`` (image rows) from the image table.

    Columns the tables cannot fill are left out: without a series table only ``decoded``;
    without ``num_images`` no ``images``; with an empty image table no ``decoded``.
    """
    classes = class_order(series, images)
    out = pd.DataFrame(index=pd.Index(classes, name="class"))
    if series is not None and "prediction" in series:
        pred = series["prediction"].astype(str)
        out["series"] = pred.value_counts().reindex(classes, fill_value=0)
        if "num_images" in series:
            sizes = pd.to_numeric(series["num_images"], errors="coerce").fillna(0)
            out["images"] = sizes.groupby(pred).sum().reindex(classes, fill_value=0)
    if len(images) and "prediction" in images:
        decoded = images["prediction"].astype(str).value_counts()
        out["decoded"] = decoded.reindex(classes, fill_value=0)
    out = out.fillna(0).astype(int)
    keep = [c for c in classes if c != UNKNOWN or out.loc[c].sum() > 0]
    return out.loc[keep]


def row_folders(df: pd.DataFrame) -> list[str]:
    """Each row's folder: its ``folder`` column where the table has one, else its path's."""
    paths = df["path"].map(lambda p: text(p) or "") if "path" in df else pd.Series("", df.index)
    folders = paths.map(os.path.dirname)
    if "folder" in df:
        given = df["folder"].map(text)
        folders = given.where(given.notna(), folders)
    return [str(f) for f in folders]


def source_folders(folders: list[str]) -> tuple[str, list[str]]:
    """The common root of ``folders`` and, for each, the top-level folder under it.

    Returns:
        ``(root, sources)``: a folder equal to the root is its own source (``"."``); when the
        folders share no root (relative and absolute paths mixed) each is its own source and the
        root is ``""``.
    """
    if not folders:
        return "", []
    distinct = list(dict.fromkeys(folders))  # an archive has far fewer folders than rows
    try:
        root = os.path.commonpath(distinct)
    except ValueError:
        return "", list(folders)
    cut = len(root.rstrip(os.sep)) + 1  # every folder starts with the root and a separator
    top = {f: f[cut:].split(os.sep, 1)[0] if f.rstrip(os.sep) != root else "." for f in distinct}
    return root, [top[f] or "." for f in folders]


def folder_counts(df: pd.DataFrame, classes: list[str]) -> tuple[str, pd.DataFrame]:
    """Rows of ``df`` per source folder (:func:`source_folders`) × predicted class.

    Returns:
        ``(root, table)``: the table has one row per source (sorted), one column per class that
        occurs, and ``total``.
    """
    if not len(df):
        return "", pd.DataFrame(columns=["total"])
    root, sources = source_folders(row_folders(df))
    pred = df["prediction"].astype(str).to_numpy()
    table = pd.crosstab(pd.Series(sources, name="source"), pd.Series(pred, name="class"))
    table = table[[c for c in classes if c in table.columns]]
    table["total"] = table.sum(axis=1)
    return root, table.sort_index()


# ----------------------------------------------------------------------------- images to show
def shot_of(row: Mapping[str, Any], index: Any = None) -> Shot:
    """The image a row names (``path``, ``index``), captioned with the row's answer."""
    return Shot(
        path=text(row.get("path")) or "",
        index=_index(row.get("index", index)),
        prediction=text(row.get("prediction")) or "",
        confidence=confidence_value(row.get("confidence")),
        header_label=text(row.get("header_label")),
        agreement=text(row.get("agreement")),
        pixel_prediction=text(row.get("pixel_prediction")),
        feature_prediction=text(row.get("feature_prediction")),
    )


def image_groups(images: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The image rows of each series (by ``series`` key), in path and image order."""
    if not len(images) or "series" not in images:
        return {}
    ordered = images.sort_values(
        ["path", "index"] if "index" in images else ["path"], kind="stable"
    )
    return {str(k): g for k, g in ordered.groupby(ordered["series"].astype(str), sort=False)}


def representative(row: Mapping[str, Any], group: pd.DataFrame | None) -> Shot:
    """The image that stands for a series: the middle one of its decoded images, else the
    middle image of its first file (index ``None``), captioned with the series' answer."""
    if group is not None and len(group):
        image = group.iloc[(len(group) - 1) // 2]
        return shot_of({**dict(row), "path": image["path"], "index": image.get("index")})
    return shot_of({**dict(row), "index": None})


def flagged_cards(
    images: pd.DataFrame, series: pd.DataFrame | None, per_series: int = 3
) -> list[Card]:
    """Every conflict and every ``UNKNOWN``, one card per series (or per image row without a
    series table), in table order.

    A series is flagged when its row is, or when any of its image rows is; its card shows up to
    ``per_series`` of its flagged images (its representative image when none of its image rows
    is flagged) and counts the rest in ``more``.
    """
    image_flags = flags(images)
    if series is None:
        hit = image_flags.astype(bool).to_numpy() if len(images) else []
        return [
            Card(kind, dict(row), [shot_of(row)])
            for (_, row), kind in zip(images[hit].iterrows(), image_flags[hit], strict=True)
        ]
    flagged_images: dict[str, pd.DataFrame] = {}
    if len(images) and "series" in images:
        hit = images[image_flags.astype(bool).to_numpy()]
        flagged_images = {str(k): g for k, g in hit.groupby(hit["series"].astype(str), sort=False)}
    if not len(series):
        return []
    series_flags = flags(series)
    keys = series["series"].astype(str) if "series" in series else pd.Series("", series.index)
    chosen = (series_flags.astype(bool) | keys.isin(list(flagged_images))).to_numpy()
    groups = (
        image_groups(images[images["series"].astype(str).isin(set(keys[chosen]))])
        if (len(images) and "series" in images)
        else {}
    )
    cards: list[Card] = []
    for (_, row), kind in zip(series[chosen].iterrows(), series_flags[chosen], strict=True):
        key = str(row.get("series"))
        own = flagged_images.get(key)
        if not kind:
            kinds = set(flags(own))
            kind = " ".join(k for k in ("conflict", "unknown") if any(k in s for s in kinds))
        if own is not None and len(own):
            shots = [shot_of(r) for _, r in own.head(per_series).iterrows()]
            more = len(own) - len(shots)
        else:
            shots, more = [representative(row, groups.get(key))], 0
        cards.append(Card(kind, dict(row), shots, more))
    return cards


def sheet_sample(table: pd.DataFrame, cls: str, cap: int, seed: int) -> tuple[pd.DataFrame, int]:
    """The rows predicted ``cls``: all of them up to ``cap``, else a seeded sample of ``cap``
    (kept in table order).

    Returns:
        ``(rows, total)``: the rows to show and how many rows have that class.
    """
    rows = table[table["prediction"].astype(str) == cls]
    total = len(rows)
    if total > cap:
        rng = np.random.default_rng([seed, sum(ord(ch) for ch in cls)])
        rows = rows.iloc[np.sort(rng.choice(total, size=cap, replace=False))]
    return rows, total


def load_errors(errors: Iterable[Mapping[str, Any]] | Path | str | None) -> list[dict[str, Any]]:
    """The error records: none, a list of records, or an ``errors.jsonl`` file to read."""
    if errors is None:
        return []
    if isinstance(errors, str | Path):
        return read_errors(Path(errors))
    return [dict(record) for record in errors]


def series_details(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The descriptive values of a series row that the table has: ``[(label, value)]``."""
    out = []
    for column, label in SERIES_DETAILS:
        value = text(row.get(column))
        if value is not None:
            out.append((label, value))
    return out
