"""The feature model: a random forest fitted with scikit-learn, kept as plain arrays.

A checkpoint must load with ``torch.load(weights_only=True)``, which refuses pickled Python
objects such as a scikit-learn estimator. So the fitted forest is exported to a handful of
arrays (children, split feature, threshold, leaf class distribution per node, one row per tree,
padded) and evaluated here with numpy: the same probabilities as
``RandomForestClassifier.predict_proba``, without scikit-learn or pickle at prediction time.

Missing values (NaN: a PNG has no pixel spacing) are replaced by :data:`MISSING` before fitting
and predicting, so a tree can split "unknown" off from every real value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Stand-in for a missing feature value (below any real one).
MISSING = -1.0e9


def _clean(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, MISSING)
    return np.clip(x, MISSING, 1.0e12).astype(np.float32)


@dataclass
class ForestModel:
    """A fitted forest as arrays: ``left``, ``right``, ``feature`` (trees × nodes, int32; -1 at
    a leaf), ``threshold`` (float64, as scikit-learn keeps it) and ``value`` (trees × nodes ×
    classes, the class shares)."""

    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        classes: tuple[str, ...],
        feature_names: tuple[str, ...],
        sample_weight: np.ndarray | None = None,
        seed: int = 0,
        n_estimators: int = 200,
        min_samples_leaf: int = 2,
    ) -> ForestModel:
        """Fit on features ``x`` (rows × features) and labels ``y`` (class indices).

        Classes absent from ``y`` get probability 0 from every tree.
        """
        from sklearn.ensemble import RandomForestClassifier

        y = np.asarray(y, dtype=np.int64)
        rf = RandomForestClassifier(
            n_estimators=n_estimators,
            min_samples_leaf=min_samples_leaf,
            max_features="sqrt",
            class_weight="balanced",
            random_state=seed,
            n_jobs=1,
        )
        rf.fit(_clean(x), y, sample_weight=sample_weight)
        present = [int(c) for c in rf.classes_]
        n_nodes = max(t.tree_.node_count for t in rf.estimators_)
        shape = (len(rf.estimators_), n_nodes)
        left = np.full(shape, -1, np.int32)
        right = np.full(shape, -1, np.int32)
        feature = np.full(shape, -1, np.int32)
        threshold = np.zeros(shape, np.float64)
        value = np.zeros((*shape, len(classes)), np.float32)
        for i, est in enumerate(rf.estimators_):
            t = est.tree_
            n = t.node_count
            leaf = t.children_left == -1
            left[i, :n] = t.children_left
            right[i, :n] = t.children_right
            feature[i, :n] = np.where(leaf, -1, t.feature)
            threshold[i, :n] = t.threshold
            shares = t.value[:, 0, :]
            shares = shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-12)
            value[i, :n][:, present] = shares
        return cls(tuple(classes), tuple(feature_names), left, right, feature, threshold, value)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (rows × classes): the mean of the trees' leaf distributions."""
        x = _clean(x)
        n = x.shape[0]
        trees = self.left.shape[0]
        node = np.zeros((trees, n), np.int64)
        tree_idx = np.arange(trees)[:, None]
        for _ in range(self.left.shape[1]):
            feat = self.feature[tree_idx, node]
            active = feat >= 0
            if not active.any():
                break
            values = x[np.arange(n)[None, :], np.where(active, feat, 0)]
            go_left = values <= self.threshold[tree_idx, node]
            nxt = np.where(go_left, self.left[tree_idx, node], self.right[tree_idx, node])
            node = np.where(active, nxt, node)
        probs = self.value[tree_idx, node].mean(axis=0)
        return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)

    def aligned(self, names: tuple[str, ...]) -> ForestModel:
        """This forest reading rows in ``names`` order: a checkpoint fitted when the feature list
        was shorter (features are only ever added) keeps working, each split finding its feature
        by name.

        Raises:
            ValueError: a feature the forest splits on is not in ``names``.
        """
        names = tuple(names)
        if names == self.feature_names:
            return self
        position = {name: i for i, name in enumerate(names)}
        used = {int(f) for f in np.unique(self.feature) if f >= 0}
        missing = sorted(n for n in (self.feature_names[f] for f in used) if n not in position)
        if missing:
            raise ValueError(
                f"the feature model splits on features this version does not compute: {missing}"
            )
        lookup = np.array([position.get(n, -1) for n in self.feature_names], dtype=np.int32)
        feature = np.where(self.feature >= 0, lookup[np.maximum(self.feature, 0)], -1)
        return ForestModel(
            self.classes, names, self.left, self.right, feature.astype(np.int32),
            self.threshold, self.value,
        )  # fmt: skip

    def to_state(self) -> dict[str, Any]:
        """Plain data for a checkpoint (numpy arrays become tensors in the caller)."""
        return {
            "kind": "random_forest",
            "classes": list(self.classes),
            "feature_names": list(self.feature_names),
            "left": self.left,
            "right": self.right,
            "feature": self.feature,
            "threshold": self.threshold,
            "value": self.value,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ForestModel:
        """Inverse of :meth:`to_state` (arrays may be tensors)."""

        def arr(name: str, dtype: Any) -> np.ndarray:
            v = state[name]
            v = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
            return np.asarray(v, dtype=dtype)

        return cls(
            classes=tuple(state["classes"]),
            feature_names=tuple(state["feature_names"]),
            left=arr("left", np.int32),
            right=arr("right", np.int32),
            feature=arr("feature", np.int32),
            threshold=arr("threshold", np.float64),
            value=arr("value", np.float32),
        )
