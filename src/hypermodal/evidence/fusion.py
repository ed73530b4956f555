"""Fusion: one fitted rule that turns the evidence into a class and a calibrated confidence.

The rule is **weighted log-linear pooling** (a product of experts with fitted exponents)::

    log p(c | x)  =  b_c  +  sum_e  w_e * log p_e(c | x)  -  log Z(x)

over the evidence ``e`` in :data:`EVIDENCE` (pixels: the CNN; features: the intensity and
geometry forest of the image; series: the forest of its whole series or volume; header: the
DICOM claim with its trust). The weights ``w_e >= 0`` and class
biases ``b_c`` are fitted by maximum likelihood (L-BFGS; a small L2 penalty pulls the weights
towards 1 and a strong one the biases towards 0, so that a few odd datasets cannot tilt the
whole vocabulary; classes and datasets weighted equally) on predictions for images the evidence
models never saw — the validation split in ``train``, the held-out datasets in ``crossval``.
The weights act as temperatures, so the fused probability is calibrated on that data (its
expected calibration error is reported beside the accuracy). Evidence that is absent for a row
(no header in a PNG, no CNN in a features-only checkpoint) is uniform and drops out of the sum.

Two poolings are fitted: ``full`` (all evidence, fitted on the rows that have a header claim)
fuses the images whose header claims a class; ``image`` (everything but the header, fitted on
every row) fuses the others, and is what the image says without the header, the reference of
the ``conflict`` flag. A fused confidence below ``unknown_below`` is reported as :data:`UNKNOWN`.

**One answer per series.** The slices of one volume or series are one acquisition: after pooling,
:func:`series_consensus` gives every image of a series the normalised geometric mean of its
images' fused probabilities (the product of their evidence, tempered by their number), so a
volume is never half CT and half MR, and an empty end slice takes its volume's class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Evidence sources, in the order of the fitted weights.
EVIDENCE: tuple[str, ...] = ("pixels", "features", "series", "header")
IMAGE_EVIDENCE: tuple[str, ...] = ("pixels", "features", "series")
#: The label of a prediction whose confidence is below the threshold.
UNKNOWN = "UNKNOWN"
#: Default confidence below which a prediction is UNKNOWN.
DEFAULT_UNKNOWN_BELOW = 0.5
#: ``agreement`` values of a prediction row.
AGREEMENT = ("agree", "conflict", "header only", "no header")
_EPS = 1e-6


def _logs(probs: Mapping[str, np.ndarray | None], names: tuple[str, ...], n: int, k: int):
    out = np.zeros((len(names), n, k))
    for i, name in enumerate(names):
        p = probs.get(name)
        if p is None:
            out[i] = np.log(1.0 / k)
        else:
            p = np.asarray(p, dtype=np.float64).reshape(n, k)
            p = np.where(np.isfinite(p), p, 1.0 / k)
            out[i] = np.log(np.clip(p, _EPS, 1.0))
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Pooling:
    """Fitted exponents per evidence source and a bias per class."""

    names: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray

    def __call__(self, probs: Mapping[str, np.ndarray | None], n: int) -> np.ndarray:
        k = len(self.bias)
        logs = _logs(probs, self.names, n, k)
        z = np.tensordot(self.weights, logs, axes=1) + self.bias
        return _softmax(z)

    @classmethod
    def fit(
        cls,
        names: tuple[str, ...],
        probs: Mapping[str, np.ndarray | None],
        y: np.ndarray,
        k: int,
        sample_weight: np.ndarray | None = None,
        l2: float = 1e-2,
        l2_bias: float = 1.0,
    ) -> Pooling:
        from scipy.optimize import minimize

        y = np.asarray(y, dtype=np.int64)
        n = len(y)
        logs = _logs(probs, names, n, k)
        sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
        sw = sw / sw.sum()
        m = len(names)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:m], theta[m:]
            p = _softmax(np.tensordot(w, logs, axes=1) + b)
            nll = -np.sum(sw * np.log(np.clip(p[np.arange(n), y], 1e-12, 1)))
            g = p.copy()
            g[np.arange(n), y] -= 1.0
            g *= sw[:, None]
            grad_w = np.einsum("enk,nk->e", logs, g) + 2 * l2 * (w - 1.0)
            grad_b = g.sum(axis=0) + 2 * l2_bias * b
            reg = l2 * np.sum((w - 1.0) ** 2) + l2_bias * np.sum(b**2)
            return nll + reg, np.concatenate([grad_w, grad_b])

        theta0 = np.concatenate([np.ones(m), np.zeros(k)])
        bounds = [(0.0, 20.0)] * m + [(-10.0, 10.0)] * k
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
        return cls(tuple(names), res.x[:m].copy(), res.x[m:].copy())

    def to_state(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "weights": [float(w) for w in self.weights],
            "bias": [float(b) for b in self.bias],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Pooling:
        return cls(
            tuple(state["names"]),
            np.asarray(state["weights"], float),
            np.asarray(state["bias"], float),
        )

    @classmethod
    def neutral(cls, names: tuple[str, ...], k: int) -> Pooling:
        """Weights 1 and no bias: the plain product of the evidence (used until fitted)."""
        return cls(tuple(names), np.ones(len(names)), np.zeros(k))


def balanced_weights(y: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Row weights giving every class, and within a class every group (dataset), equal mass."""
    y = np.asarray(y)
    w = np.ones(len(y), dtype=np.float64)
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        keys = np.array([f"{a}\x00{b}" for a, b in zip(y, groups, strict=True)], dtype=object)
        _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        w /= counts[inv]
        for c in np.unique(y):
            sel = y == c
            n_groups = len(np.unique(groups[sel]))
            w[sel] /= max(n_groups, 1)
    else:
        _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
        w /= counts[inv]
    return w * len(y) / w.sum()


@dataclass
class Fusion:
    """The fitted rule: the ``full`` and ``image`` poolings, the UNKNOWN threshold, and how it
    was fitted (``fitted_on``: rows, datasets, or why it stayed neutral)."""

    classes: tuple[str, ...]
    full: Pooling
    image: Pooling
    unknown_below: float = DEFAULT_UNKNOWN_BELOW
    fitted_on: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def neutral(cls, classes: tuple[str, ...], reason: str) -> Fusion:
        k = len(classes)
        return cls(
            tuple(classes),
            Pooling.neutral(EVIDENCE, k),
            Pooling.neutral(IMAGE_EVIDENCE, k),
            fitted_on={"fitted": False, "reason": reason},
        )

    @classmethod
    def fit(
        cls,
        classes: tuple[str, ...],
        probs: Mapping[str, np.ndarray | None],
        y: np.ndarray,
        groups: np.ndarray | None = None,
        unknown_below: float = DEFAULT_UNKNOWN_BELOW,
    ) -> Fusion:
        """Fit both poolings on held-out evidence ``probs`` with true class indices ``y``.

        ``full`` is fitted on the rows that have a header claim, ``image`` on every row.
        """
        k = len(classes)
        y = np.asarray(y)
        claimed = has_claim(probs.get("header"), len(y))
        groups_arr = None if groups is None else np.asarray(groups, dtype=object)
        image = Pooling.fit(IMAGE_EVIDENCE, probs, y, k, balanced_weights(y, groups_arr))
        if claimed.sum() and len(np.unique(y[claimed])) > 1:
            sub = {n: (None if p is None else np.asarray(p)[claimed]) for n, p in probs.items()}
            g = None if groups_arr is None else groups_arr[claimed]
            full = Pooling.fit(EVIDENCE, sub, y[claimed], k, balanced_weights(y[claimed], g))
        else:
            full = Pooling(EVIDENCE, np.append(image.weights, 1.0), image.bias.copy())
        info = {
            "fitted": True,
            "rows": int(len(y)),
            "rows_with_header": int(claimed.sum()),
            "groups": int(len(np.unique(groups_arr))) if groups_arr is not None else None,
            "classes_seen": sorted({classes[i] for i in np.unique(y)}),
        }
        return cls(tuple(classes), full, image, unknown_below, info)

    def predict(self, probs: Mapping[str, np.ndarray | None], n: int) -> dict[str, np.ndarray]:
        """Fused and image-only probabilities (``probs``, ``image_probs``: rows × classes).

        Rows with a header claim are fused by ``full``, the others by ``image``.
        """
        image = self.image(probs, n)
        fused = image.copy()
        claimed = has_claim(probs.get("header"), n)
        if claimed.any():
            fused[claimed] = self.full(
                {k: (None if p is None else np.asarray(p)[claimed]) for k, p in probs.items()},
                int(claimed.sum()),
            )
        return {"probs": fused, "image_probs": image}

    def labels(self, fused: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(prediction, confidence)``: the class name, or UNKNOWN below the threshold."""
        conf = fused.max(axis=1) if len(fused) else np.zeros(0)
        names = np.asarray(self.classes, dtype=object)[fused.argmax(axis=1)] if len(fused) else []
        pred = np.where(conf >= self.unknown_below, names, UNKNOWN).astype(object)
        return pred, conf

    def to_state(self) -> dict[str, Any]:
        return {
            "rule": "weighted log-linear pooling",
            "classes": list(self.classes),
            "full": self.full.to_state(),
            "image": self.image.to_state(),
            "unknown_below": float(self.unknown_below),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Fusion:
        return cls(
            tuple(state["classes"]),
            Pooling.from_state(state["full"]),
            Pooling.from_state(state["image"]),
            float(state.get("unknown_below", DEFAULT_UNKNOWN_BELOW)),
            dict(state.get("fitted_on") or {}),
        )


def has_claim(header: np.ndarray | None, n: int) -> np.ndarray:
    """Rows whose header probabilities are not uniform (the header claims a class)."""
    if header is None or n == 0:
        return np.zeros(n, dtype=bool)
    header = np.asarray(header, dtype=np.float64).reshape(n, -1)
    return (header.max(axis=1) - header.min(axis=1)) > 1e-9


def agreement(
    claims: list[str | None], image_label: np.ndarray, has_image: np.ndarray
) -> list[str]:
    """Per row: ``agree``/``conflict`` (header claim vs the image-only class), ``header only``
    (a claim but no image evidence), ``no header``."""
    out = []
    for claim, label, image in zip(claims, image_label, has_image, strict=True):
        if claim is None:
            out.append("no header")
        elif not image:
            out.append("header only")
        else:
            out.append("agree" if claim == label else "conflict")
    return out


def series_consensus(
    probs: np.ndarray, series: np.ndarray | None, rows: np.ndarray | None = None
) -> np.ndarray:
    """Each image's probabilities replaced by its series': the normalised geometric mean of the
    series' images (``rows``: the images that carry evidence; default all). A series with no
    such image keeps its rows as they are; ``series=None`` changes nothing.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if series is None or not len(probs):
        return probs
    keys = np.asarray(series, dtype=object)
    use = np.ones(len(probs), bool) if rows is None else np.asarray(rows, bool)
    _, inv = np.unique(keys.astype(str), return_inverse=True)
    logs = np.log(np.clip(probs, 1e-12, 1.0))
    k = probs.shape[1]
    total = np.zeros((inv.max() + 1, k))
    np.add.at(total, inv[use], logs[use])
    count = np.bincount(inv[use], minlength=inv.max() + 1)
    out = probs.copy()
    has = count[inv] > 0
    mean = total[inv[has]] / count[inv[has]][:, None]
    out[has] = _softmax(mean)
    return out


def calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    if len(y) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
