"""The per-series table: one row per series/volume, decided from the images decoded of it.

A series' probabilities are the mean of the fused probabilities of its decoded images; its class
is the most probable one, or ``UNKNOWN`` below the threshold the images used. Its header claim
is the first one its images carry, and ``agreement`` is ``conflict`` when any decoded image
conflicts with the header. The descriptive columns (PatientID, StudyDate, …) come from the
series' headers, and ``num_images`` counts every image of the series by its headers, sampled or
not; ``images_decoded`` says how many of them the decision rests on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.evidence.fusion import UNKNOWN
from hypermodal.inference.sampling import SERIES_TEXT, Series

#: the columns of the series table besides the probabilities, in order
LEAD_COLUMNS = ("series", "path", "folder", "prediction", "confidence")
TAIL_COLUMNS = (
    "header_label",
    "agreement",
    "pixel_prediction",
    "feature_prediction",
    *(column for column, _ in SERIES_TEXT),
    "num_files",
    "num_images",
    "images_decoded",
)


def series_columns(classes: Sequence[str]) -> list[str]:
    """The series table's columns for ``classes`` (also those of an empty table)."""
    return [*LEAD_COLUMNS, *(f"p_{c}" for c in classes), *TAIL_COLUMNS]


def _folder(paths: Sequence[str]) -> str:
    if len(paths) == 1:
        return os.path.dirname(paths[0])
    try:
        return os.path.commonpath(paths)
    except ValueError:  # relative and absolute paths mixed
        return os.path.dirname(paths[0])


def series_table(
    images: pd.DataFrame, classes: Sequence[str], series: Sequence[Series]
) -> pd.DataFrame:
    """One row per series with at least one decoded image, in the order series were met.

    Args:
        images: The per-image table (``series``, ``prediction``, ``p_<CLASS>``, ``header_label``,
            ``agreement``, …), with ``attrs["unknown_below"]``.
        classes: The model's classes.
        series: Every series the headers described.

    Returns:
        The table of :func:`series_columns`.
    """
    columns = series_columns(classes)
    if not len(images):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    pcols = [f"p_{c}" for c in classes]
    grouped = images.groupby("series", sort=False)
    probs = grouped[pcols].mean()
    decoded = grouped.size()
    labels = grouped["header_label"].agg(lambda v: next(iter(v.dropna()), None))
    agreement = grouped["agreement"].agg(_series_agreement)
    majority = {n: grouped[n].agg(_majority) for n in ("pixel_prediction", "feature_prediction")}
    threshold = float(images.attrs.get("unknown_below", 0.0))
    rows: list[dict[str, Any]] = []
    for s in series:
        if s.key not in probs.index:
            continue  # every file of it was unreadable: they are in the errors file
        p = probs.loc[s.key].to_numpy(dtype=np.float64)
        best = int(np.argmax(p))
        paths = [f.path for f in s.files]
        row: dict[str, Any] = {
            "series": s.key,
            "path": paths[0],
            "folder": _folder(paths),
            "prediction": classes[best] if p[best] >= threshold else UNKNOWN,
            "confidence": np.float32(p[best]),
            **{c: np.float32(v) for c, v in zip(pcols, p, strict=True)},
            "header_label": labels.loc[s.key],
            "agreement": agreement.loc[s.key],
            "pixel_prediction": majority["pixel_prediction"].loc[s.key],
            "feature_prediction": majority["feature_prediction"].loc[s.key],
            **{column: s.text.get(column) for column, _ in SERIES_TEXT},
            "num_files": len(paths),
            "num_images": s.num_images,
            "images_decoded": int(decoded.loc[s.key]),
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _majority(values: pd.Series) -> Any:
    counts = values.dropna().value_counts()
    return counts.index[0] if len(counts) else None


def _series_agreement(values: pd.Series) -> str:
    kinds = set(values)
    for kind in ("conflict", "header only", "agree"):
        if kind in kinds:
            return kind
    return "no header"
