"""Every evidence mode of a model on one split, and whether the split can stand beside the paper.

A checkpoint trained with ``--evidence all`` (or the crossval default model) carries a feature
forest and a fitted fusion (:class:`hypermodal.evidence.EvidenceModel`). :func:`decide` turns the
CNN's probabilities, the store's intensity statistics (the manifest's ``stats`` column) and each
image's header claim (``modality``, ``sop_class``) into the model's decision — the fused class or
``UNKNOWN`` below the fusion's threshold — and the prediction of each mode alone:

* ``pixels`` — the CNN alone (the paper's model);
* ``features`` — the image feature forest alone (absent without a forest or without ``stats``;
  a series forest, when the checkpoint has one, adds to the fused decision only);
* ``header`` — the class the DICOM header claims (a row without a claim counts as wrong);
* ``fused`` — the model's decision.

A checkpoint without evidence decides with the CNN alone, as before (``prediction`` is the
CNN's top class; no ``UNKNOWN``). :func:`mode_scores` scores each mode like the headline
(balanced accuracy = mean recall over the classes present); :func:`paper_comparison` says when a
split is too small to set beside the paper's figures.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.evidence import (
    UNKNOWN,
    agreement,
    calibration_error,
    feature_matrix,
    series_keys,
    stats_array,
    table_claims,
)
from hypermodal.store import STATS_COLUMN

log = logging.getLogger(__name__)

#: The evidence modes, in report order.
MODES = ("pixels", "features", "header", "fused")
#: The per-image columns every ``predictions.parquet`` gains.
EVIDENCE_COLUMNS = (
    "pixel_prediction",
    "feature_prediction",
    "header_label",
    "agreement",
    "confidence",
)
#: A split is set beside the paper only with at least this many classes, images per class and
#: images.
MIN_CLASSES, MIN_PER_CLASS, MIN_IMAGES = 3, 10, 30


@dataclass
class Decision:
    """What a model decides for the rows of one split.

    Attributes:
        prediction: the decided class name per row (``UNKNOWN`` possible with evidence).
        probs: rows × model classes: the fused probabilities (with evidence) or the CNN's.
        columns: :data:`EVIDENCE_COLUMNS` per row.
        modes: each mode's predicted class names per row (``None``: mode unavailable).
        reasons: why a mode is unavailable.
        evidence: whether the checkpoint carries evidence.
    """

    prediction: np.ndarray
    probs: np.ndarray
    columns: pd.DataFrame
    modes: dict[str, np.ndarray | None]
    reasons: dict[str, str] = field(default_factory=dict)
    evidence: bool = False


def _top(classes: tuple[str, ...], probs: np.ndarray) -> np.ndarray:
    if not len(probs):
        return np.zeros(0, dtype=object)
    return np.asarray(classes, dtype=object)[probs.argmax(axis=1)]


def _pixels_only(loaded: Any, probs: np.ndarray, claims: list[str | None]) -> Decision:
    n = len(claims)
    pixel = _top(loaded.classes, probs)
    columns = pd.DataFrame(
        {
            "pixel_prediction": pixel,
            "feature_prediction": pd.Series([None] * n, dtype=object),
            "header_label": pd.Series(claims, dtype=object),
            "agreement": agreement(claims, pixel, np.ones(n, dtype=bool)),
            "confidence": probs.max(axis=1).astype(np.float32) if n else np.zeros(0, np.float32),
        }
    )
    reason = "the checkpoint has no evidence (pixels only)"
    return Decision(
        prediction=pixel,
        probs=probs,
        columns=columns,
        modes={"pixels": pixel, "features": None, "header": _claimed(claims), "fused": None},
        reasons={"features": reason, "fused": reason},
    )


def _claimed(claims: list[str | None]) -> np.ndarray:
    return np.asarray([c if c is not None else "none" for c in claims], dtype=object)


def decide(loaded: Any, table: pd.DataFrame, probs: np.ndarray, notes: list[str]) -> Decision:
    """The model's decision and every mode's prediction for the store rows ``table``.

    Args:
        loaded: a :class:`~hypermodal.inference.LoadedModel`.
        table: the manifest rows of the split (in the order of ``probs``).
        probs: the CNN's probabilities (rows × model classes).
        notes: warnings are appended here.
    """
    table = table.reset_index(drop=True)
    claims = table_claims(table, loaded.vocabulary)
    model = loaded.evidence
    if model is None:
        return _pixels_only(loaded, probs, claims)
    n = len(table)
    reasons: dict[str, str] = {}
    features = None
    if model.forest is None:
        reasons["features"] = "the checkpoint has no feature forest"
    elif STATS_COLUMN not in table.columns:
        reasons["features"] = f"the store has no {STATS_COLUMN!r} column (built before it existed)"
        notes.append(f"{reasons['features']}: the fusion decides without the feature forest")
        log.warning(notes[-1])
    elif n:
        features = feature_matrix(stats_array(table[STATS_COLUMN]), table)
    series = series_keys(table) if features is not None else None  # for a series forest
    decided = model.decide(probs if n else None, features, claims, series=series)
    fused = decided[[f"p_{c}" for c in loaded.classes]].to_numpy(dtype=np.float32)
    feature_pred = decided["feature_prediction"].to_numpy(dtype=object)
    return Decision(
        prediction=decided["prediction"].to_numpy(dtype=object),
        probs=fused.reshape(n, len(loaded.classes)),
        columns=decided[list(EVIDENCE_COLUMNS)].reset_index(drop=True),
        modes={
            "pixels": _top(loaded.classes, probs),
            "features": feature_pred if "features" not in reasons else None,
            "header": _claimed(claims),
            "fused": decided["prediction"].to_numpy(dtype=object),
        },
        reasons=reasons,
        evidence=True,
    )


def _scores(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, Any]:
    correct = np.asarray(predicted, dtype=object) == labels
    recall = {
        c: float(correct[labels == c].mean()) if (labels == c).any() else None for c in classes
    }
    present = [v for v in recall.values() if v is not None]
    return {
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "accuracy": float(correct.mean()) if len(labels) else None,
        "recall": recall,
    }


def mode_scores(
    labels: np.ndarray,
    decision: Decision,
    classes: list[str],
    model_classes: list[str],
    cnn_probs: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """``{mode: {balanced_accuracy, accuracy, recall, images, coverage, available, reason}}``.

    ``coverage`` is the share of rows the mode names a class for (header: rows with a claim;
    fused: rows not ``UNKNOWN``); the fused and pixels modes add ``calibration_error`` (of the
    top-class confidence).
    """
    labels = np.asarray(labels, dtype=object)
    index = {c: i for i, c in enumerate(model_classes)}
    y = np.array([index.get(str(c), -1) for c in labels], dtype=np.int64)
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        predicted = decision.modes.get(mode)
        if predicted is None:
            out[mode] = {"available": False, "reason": decision.reasons.get(mode, "absent")}
            continue
        named = np.isin(predicted, model_classes)
        entry = {
            "available": True,
            **_scores(labels, predicted, classes),
            "images": int(len(labels)),
            "coverage": float(named.mean()) if len(labels) else None,
        }
        if mode == "fused":
            entry["calibration_error"] = calibration_error(decision.probs, y)
        if mode == "pixels":
            entry["calibration_error"] = calibration_error(cnn_probs, y)
        out[mode] = entry
    return out


def evidence_summary(loaded: Any, decision: Decision) -> dict[str, Any]:
    """``metrics["evidence"]``: what decides, how the fusion was fitted, the agreement counts."""
    counts = Counter(decision.columns["agreement"])
    summary: dict[str, Any] = {
        "decides": "fused evidence" if decision.evidence else "pixels only",
        "agreement": {k: int(v) for k, v in sorted(counts.items())},
        "unknown": int((decision.prediction == UNKNOWN).sum()),
    }
    model = loaded.evidence
    if model is not None:
        summary.update(
            {
                "forest": model.forest is not None,
                "fusion": dict(model.fusion.fitted_on),
                "weights": {
                    name: dict(zip(pool.names, pool.weights.tolist(), strict=True))
                    for name, pool in (("full", model.fusion.full), ("image", model.fusion.image))
                },
                "unknown_below": float(model.fusion.unknown_below),
                "header_trust": float(model.header_trust),
                "info": dict(model.info),
            }
        )
    return summary


def simulated_share(loaded: Any) -> float | None:
    """The share of simulated training images the checkpoint records (None: not recorded)."""
    share = loaded.meta.get("simulated_share")
    if share is None and loaded.evidence is not None:
        share = loaded.evidence.info.get("simulated_share_of_training")
    return None if share is None else float(share)


def simulated_images(table: pd.DataFrame) -> int:
    """Rows of ``table`` marked ``synthetic`` (0 when the column is absent)."""
    if "synthetic" not in table.columns:
        return 0
    return int(table["synthetic"].astype("boolean").fillna(False).to_numpy(dtype=bool).sum())


def paper_comparison(labels: np.ndarray, split: str) -> dict[str, Any]:
    """``{"comparable", "reason"}``: a split is too small to set beside the paper with fewer
    than :data:`MIN_CLASSES` classes, a class with fewer than :data:`MIN_PER_CLASS` images, or
    fewer than :data:`MIN_IMAGES` images."""
    counts = Counter(str(v) for v in labels)
    n = int(sum(counts.values()))
    if n >= MIN_IMAGES and len(counts) >= MIN_CLASSES and min(counts.values()) >= MIN_PER_CLASS:
        return {"comparable": True, "reason": None}
    parts = [f"{v:,} {c}" for c, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    images = f"{n:,} image{'' if n == 1 else 's'}"
    reason = f"{split} split too small to compare with the paper: " + ", ".join([images, *parts])
    return {"comparable": False, "reason": reason}


def evidence_metrics(
    loaded: Any,
    decision: Decision,
    table: pd.DataFrame,
    classes: list[str],
    cnn_probs: np.ndarray,
    split: str,
) -> dict[str, Any]:
    """The keys :func:`hypermodal.evaluate.evaluate` adds to ``metrics.json`` from this module:
    ``paper_comparison``, ``simulated_share_of_training``, ``simulated_images_in_split``,
    ``evidence`` and ``evidence_modes``."""
    labels = table["label"].astype(str).to_numpy()
    return {
        "paper_comparison": paper_comparison(labels, split),
        "simulated_share_of_training": simulated_share(loaded),
        "simulated_images_in_split": simulated_images(table),
        "evidence": evidence_summary(loaded, decision),
        "evidence_modes": mode_scores(labels, decision, classes, list(loaded.classes), cnn_probs),
    }
