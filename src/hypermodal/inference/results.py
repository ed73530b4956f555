"""What a ``predict`` run ends with, whichever engine decoded and classified its files: the fused
decision of every decoded image (:func:`decide_images`), and the tables and counts
(:func:`finish`, :class:`PredictResult`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.evidence.features import FEATURE_NAMES, STAT_NAMES, feature_matrix, series_keys
from hypermodal.evidence.table import table_claims
from hypermodal.inference.sampling import Series
from hypermodal.inference.series import series_table
from hypermodal.inference.summary import PredictSummary
from hypermodal.labels import ClassVocabulary

#: Per-image values gathered from each decoded file (the feature model needs the geometry).
META_COLUMNS = (
    "path",
    "index",
    "series",
    "modality",
    "sop_class",
    "localizer",
    "rows",
    "columns",
    "frames",
    "pixel_spacing",
    "slice_thickness",
    "bits_stored",
    "samples",
)


@dataclass
class PredictResult:
    """What :func:`classify` found: the two tables, the series, the unreadable files.

    Attributes:
        images: One row per decoded image (see :func:`predict`).
        series: One row per series (:func:`~hypermodal.inference.series.series_table`).
        groups: Every series the headers described, its files in order (readable files only).
        errors: One record per unreadable file (:func:`~hypermodal.common.rejects.error_record`).
        summary: The counts.
    """

    images: pd.DataFrame
    series: pd.DataFrame
    groups: list[Series]
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: PredictSummary = field(default_factory=PredictSummary)


def decide_images(
    loaded: Any,
    meta_rows: list[dict],
    stats: list[np.ndarray],
    p: np.ndarray,
    sizes: dict[str, int],
) -> pd.DataFrame:
    """The per-image table: the fused decision for every decoded image.

    ``sizes`` (series key -> images by the headers) gives the feature ``images_in_series`` its
    true value when only a sample of a series was decoded.
    """
    from hypermodal.inference.loaded import evidence_model

    vocab: ClassVocabulary = loaded.vocabulary
    table = pd.DataFrame(meta_rows, columns=list(META_COLUMNS))
    model = evidence_model(loaded)
    n = len(table)
    x = feature_matrix(np.concatenate(stats) if stats else np.zeros((0, len(STAT_NAMES))), table)
    if n:
        counted = table["series"].map(sizes).to_numpy(dtype=np.float64)
        column = FEATURE_NAMES.index("images_in_series")
        x[:, column] = np.fmax(x[:, column], counted)
    claims = table_claims(table, vocab)
    # an image without finite values or with one value everywhere carries no image evidence:
    # it is decided on its header alone, or comes out UNKNOWN
    std = x[:, STAT_NAMES.index("std")] if n else np.zeros(0)
    has_image = np.isfinite(std) & (std > 0)
    decided = model.decide(
        p if n else None, x if n else None, claims, has_image=has_image, series=series_keys(table)
    )
    pcols = [f"p_{c}" for c in loaded.classes]
    out = pd.concat([table[["path", "index"]], decided], axis=1)
    first = ["path", "index", "prediction", "confidence", *pcols]
    rest = ["pixel_prediction", "feature_prediction", "header_label", "agreement"]
    out = pd.concat([out[first + rest], table[["series", "modality", "localizer"]]], axis=1)
    out.attrs["unknown_below"] = model.fusion.unknown_below
    return out


def finish(
    loaded: Any,
    meta_rows: list[dict[str, Any]],
    stats: list[np.ndarray],
    p: np.ndarray | None,
    groups: list[Series],
    errors: list[dict[str, Any]],
    summary: PredictSummary,
    *,
    sampled_out: int,
    where: str,
    start: float,
) -> PredictResult:
    """The tables and counts of a run whose files are decoded and classified (``p``: the CNN's
    probabilities, one row per entry of ``meta_rows``; None when nothing was decoded), whichever
    engine did the work; ``where`` names the inputs for the warning of a run without images."""
    summary.files_skipped = len(errors)
    summary.files_sampled_out = sampled_out
    if p is None:
        p = np.zeros((0, len(loaded.vocabulary.classes)), dtype=np.float32)
    images = decide_images(loaded, meta_rows, stats, p, {s.key: s.num_images for s in groups})
    series = series_table(images, tuple(loaded.vocabulary.classes), groups)
    summary.count(series, images)
    if not len(series):
        summary.warnings.append(
            f"no images found in {summary.files_seen} file(s) under {where}: none could be "
            "read as an image (the reasons are in the errors file)"
        )
    summary.seconds = round(time.perf_counter() - start, 3)
    if summary.seconds:
        summary.images_per_second = round(summary.images / summary.seconds, 1)
        summary.series_per_second = round(summary.series / summary.seconds, 2)
    assert summary.reconciles(), summary
    return PredictResult(images, series, groups, errors, summary)
