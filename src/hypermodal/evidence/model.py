"""The evidence a model carries beside its CNN, and the decision it makes with it.

:class:`EvidenceModel` holds the feature forest, the header trust and the fitted fusion. It is
saved in a checkpoint under the key ``evidence`` as plain values and tensors (so the checkpoint
still loads with ``weights_only=True``) and turns per-image evidence into the prediction
columns: ``prediction`` (fused, or ``UNKNOWN``), ``confidence``, ``p_<CLASS>``,
``pixel_prediction``, ``feature_prediction``, ``header_label`` and ``agreement``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.evidence.features import FEATURE_NAMES, SERIES_FEATURE_NAMES, series_matrix
from hypermodal.evidence.forest import ForestModel
from hypermodal.evidence.fusion import (
    EVIDENCE,
    IMAGE_EVIDENCE,
    UNKNOWN,
    Fusion,
    Pooling,
    agreement,
    balanced_weights,
    series_consensus,
)
from hypermodal.evidence.header import DEFAULT_TRUST, header_probs


def fit_forest(
    x: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    groups: np.ndarray | None = None,
    seed: int = 0,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
    max_rows_per_group: int | None = 5000,
) -> ForestModel:
    """Fit a forest on rows ``x`` (``feature_names``: the image features by default, or
    :data:`SERIES_FEATURE_NAMES`) with class names ``labels``; every class, and every dataset
    (``groups``) within a class, weighs the same."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[str(v)] for v in labels], dtype=np.int64)
    keep = _bounded_rows(y, groups, max_rows_per_group, seed)
    x, y = np.asarray(x)[keep], y[keep]
    groups = None if groups is None else np.asarray(groups, dtype=object)[keep]
    weights = balanced_weights(y, groups)
    return ForestModel.fit(x, y, tuple(classes), feature_names, sample_weight=weights, seed=seed)


def _bounded_rows(
    y: np.ndarray, groups: np.ndarray | None, cap: int | None, seed: int
) -> np.ndarray:
    """Row indices with at most ``cap`` rows per (class, group), drawn evenly with a seed: the
    forest's cost stays bounded on an archive (the weights already give each group equal mass,
    so the cap changes which rows speak for a group, not how much it counts)."""
    n = len(y)
    if cap is None or groups is None or n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keys = np.array([f"{a}\x00{b}" for a, b in zip(y, groups, strict=True)], dtype=object)
    out = []
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        out.append(rows)
    return np.sort(np.concatenate(out))


def _names(classes: tuple[str, ...], probs: np.ndarray | None, n: int) -> list[Any]:
    if probs is None:
        return [None] * n
    return [classes[i] for i in np.asarray(probs).argmax(axis=1)] if n else []


@dataclass
class EvidenceModel:
    """Image and series feature forests (None: pixels and header only), header trust and fusion
    for ``classes``."""

    classes: tuple[str, ...]
    forest: ForestModel | None
    fusion: Fusion
    header_trust: float = DEFAULT_TRUST
    info: dict[str, Any] = field(default_factory=dict)
    series_forest: ForestModel | None = None

    def evidence(
        self,
        pixel_probs: np.ndarray | None,
        features: np.ndarray | None,
        claims: list[str | None],
        series: np.ndarray | None = None,
    ) -> dict[str, np.ndarray | None]:
        """Each source's probabilities (rows × classes, or None when the source is absent).

        ``series`` (one key per row) groups the rows into series for the series forest.
        """
        feature_probs = series_probs = None
        if self.forest is not None and features is not None and len(claims):
            feature_probs = self.forest.predict_proba(features)
            if self.series_forest is not None and series is not None:
                series_probs = self.series_forest.predict_proba(series_matrix(features, series))
        return {
            "pixels": pixel_probs,
            "features": feature_probs,
            "series": series_probs,
            "header": header_probs(claims, self.classes, self.header_trust),
        }

    def decide(
        self,
        pixel_probs: np.ndarray | None,
        features: np.ndarray | None,
        claims: list[str | None],
        has_image: np.ndarray | None = None,
        series: np.ndarray | None = None,
        consensus: bool = True,
    ) -> pd.DataFrame:
        """The prediction columns for ``len(claims)`` images.

        Args:
            pixel_probs: the CNN's probabilities, or None.
            features: the :data:`FEATURE_NAMES` matrix, or None.
            claims: the class each header claims (None: no claim).
            has_image: rows with decoded image evidence (default: all); the others are
                decided on the header alone (``agreement = "header only"``).
            series: the series key of each row (for the series forest; None: no series
                evidence).
            consensus: give every image of a series the series' answer
                (:func:`~hypermodal.evidence.fusion.series_consensus`); False: each image
                on its own evidence.
        """
        n = len(claims)
        ev = self.evidence(pixel_probs, features, claims, series)
        if has_image is not None and not np.all(has_image):
            keep = np.asarray(has_image, dtype=bool)
            k = len(self.classes)
            for name in ("pixels", "features", "series"):
                if ev[name] is not None:
                    arr = np.array(ev[name], dtype=np.float64)
                    arr[~keep] = 1.0 / k
                    ev[name] = arr
        fused = self.fusion.predict(ev, n)
        image = np.ones(n, bool) if has_image is None else np.asarray(has_image, bool)
        covered = image
        if consensus and series is not None:  # one answer per series (fusion.series_consensus)
            for key in ("probs", "image_probs"):
                fused[key] = series_consensus(fused[key], series, image)
            keys = np.asarray(series, dtype=object).astype(str)
            covered = image | np.isin(keys, keys[image])
        header_only = ~covered & np.array([c is not None for c in claims], bool)
        if header_only.any():  # nothing but the header to go on: its claim at its trust
            fused["probs"][header_only] = ev["header"][header_only]
        prediction, confidence = self.fusion.labels(fused["probs"])
        image_label = _names(self.classes, fused["image_probs"], n)
        table = pd.DataFrame(
            {
                "prediction": prediction,
                "confidence": confidence.astype(np.float32),
                "pixel_prediction": _names(self.classes, ev["pixels"], n),
                "feature_prediction": _names(self.classes, ev["features"], n),
                "header_label": claims,
                "agreement": agreement(claims, np.asarray(image_label, dtype=object), covered),
            }
        )
        for name in ("pixel_prediction", "feature_prediction"):
            table.loc[~image, name] = None
        # no image evidence and no header claim: nothing to decide on, whatever the threshold
        table.loc[~covered & np.array([c is None for c in claims], bool), "prediction"] = UNKNOWN
        for j, c in enumerate(self.classes):
            table[f"p_{c}"] = fused["probs"][:, j].astype(np.float32) if n else []
        return table

    def to_state(self) -> dict[str, Any]:
        """Plain values and tensors for the checkpoint key ``evidence``."""
        import torch

        def tensors(model: ForestModel | None) -> dict[str, Any] | None:
            if model is None:
                return None
            return {
                k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in model.to_state().items()
            }

        return {
            "classes": list(self.classes),
            "forest": tensors(self.forest),
            "series_forest": tensors(self.series_forest),
            "fusion": self.fusion.to_state(),
            "header_trust": float(self.header_trust),
            "info": self.info,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EvidenceModel:
        # checkpoints from before a feature was added read today's rows by feature name
        image, series = state.get("forest"), state.get("series_forest")
        forest = ForestModel.from_state(image).aligned(FEATURE_NAMES) if image else None
        series_forest = (
            ForestModel.from_state(series).aligned(SERIES_FEATURE_NAMES) if series else None
        )
        return cls(
            classes=tuple(state["classes"]),
            forest=forest,
            fusion=Fusion.from_state(state["fusion"]),
            header_trust=float(state.get("header_trust", DEFAULT_TRUST)),
            info=dict(state.get("info") or {}),
            series_forest=series_forest,
        )

    @classmethod
    def pixels_only(cls, classes: tuple[str, ...], reason: str) -> EvidenceModel:
        """What a checkpoint without evidence predicts with: the CNN's probabilities as they
        are (weight 1 on pixels, 0 on the rest, no UNKNOWN), the header only compared."""
        k = len(classes)
        only_pixels = [1.0 if name == "pixels" else 0.0 for name in EVIDENCE]
        fusion = Fusion(
            tuple(classes),
            Pooling(EVIDENCE, np.array(only_pixels), np.zeros(k)),
            Pooling(IMAGE_EVIDENCE, np.array(only_pixels[: len(IMAGE_EVIDENCE)]), np.zeros(k)),
            unknown_below=0.0,
            fitted_on={"fitted": False, "reason": reason},
        )
        return cls(tuple(classes), None, fusion)
