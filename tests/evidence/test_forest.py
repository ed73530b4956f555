"""The feature forest: an exact export of scikit-learn's forest, kept as arrays.

Unit tests of arithmetic on generated feature rows (a forest does not care where they came
from); the feature rows of real images are tested in ``test_features.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from hypermodal.evidence import ForestModel
from hypermodal.evidence.forest import MISSING

CLASSES = ("CT", "MR", "PT", "XR")
NAMES = tuple(f"f{i}" for i in range(6))
SETTINGS = {"n_estimators": 25, "min_samples_leaf": 2, "seed": 3}


def _data(n: int = 240, classes: tuple[int, ...] = (0, 1, 3), seed: int = 0):
    """Rows whose first two features separate the classes, plus noise features."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n)
    x = rng.normal(size=(n, len(NAMES)))
    x[:, 0] += 2.0 * y
    x[:, 1] -= 1.5 * (y == 1)
    return x.astype(np.float32), y


def _sklearn(x, y, sample_weight=None, **settings) -> RandomForestClassifier:
    """scikit-learn's forest with the settings ForestModel.fit documents."""
    rf = RandomForestClassifier(
        n_estimators=settings["n_estimators"],
        min_samples_leaf=settings["min_samples_leaf"],
        max_features="sqrt",
        class_weight="balanced",
        random_state=settings["seed"],
        n_jobs=1,
    )
    x = np.where(np.isfinite(x), x, MISSING).astype(np.float32)
    return rf.fit(x, y, sample_weight=sample_weight)


def test_probabilities_equal_scikit_learn():
    x, y = _data()
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    forest = ForestModel.fit(x, y, CLASSES, NAMES, sample_weight=weights, **SETTINGS)
    rf = _sklearn(x, y, sample_weight=weights, **SETTINGS)
    x_new, _ = _data(n=300, seed=9)
    ours = forest.predict_proba(x_new)
    theirs = rf.predict_proba(x_new)
    present = [int(c) for c in rf.classes_]
    assert ours.shape == (300, len(CLASSES))
    np.testing.assert_allclose(ours[:, present], theirs, atol=1e-6)
    assert (ours.argmax(axis=1) == np.asarray(present)[theirs.argmax(axis=1)]).all()
    # the trees learnt something: not a constant answer
    assert len(np.unique(ours.argmax(axis=1))) == 3


def test_classes_absent_from_training_get_zero():
    x, y = _data(classes=(0, 1, 3))  # no PT
    forest = ForestModel.fit(x, y, CLASSES, NAMES, **SETTINGS)
    probs = forest.predict_proba(_data(n=100, seed=5)[0])
    assert (probs[:, CLASSES.index("PT")] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert forest.classes == CLASSES and forest.feature_names == NAMES


def test_missing_values_are_a_value_of_their_own():
    """A feature missing for one class only (a PNG has no pixel spacing) is learnt from."""
    x, y = _data()
    x[y == 3, 2] = np.nan  # XR rows: feature 2 unknown
    x[:, 0] = np.random.default_rng(2).normal(size=len(y))  # take the easy feature away
    forest = ForestModel.fit(x, y, CLASSES, NAMES, **SETTINGS)
    rf = _sklearn(x, y, **SETTINGS)
    probe = _data(n=60, seed=4)[0]
    probe[:30, 2] = np.nan
    probe[30:31, 3] = np.inf  # infinite counts as missing too
    probs = forest.predict_proba(probe)
    assert np.isfinite(probs).all()
    clean = np.where(np.isfinite(probe), probe, MISSING).astype(np.float32)
    present = [int(c) for c in rf.classes_]
    np.testing.assert_allclose(probs[:, present], rf.predict_proba(clean), atol=1e-6)
    xr = CLASSES.index("XR")
    assert (probs[:30].argmax(axis=1) == xr).mean() > 0.9
    assert (probs[31:].argmax(axis=1) == xr).mean() < 0.5


def test_state_survives_a_weights_only_checkpoint():
    x, y = _data()
    forest = ForestModel.fit(x, y, CLASSES, NAMES, **SETTINGS)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        for k, v in forest.to_state().items()
    }
    buf = io.BytesIO()
    torch.save({"forest": state}, buf)
    buf.seek(0)
    loaded = ForestModel.from_state(torch.load(buf, weights_only=True)["forest"])
    probe = _data(n=80, seed=6)[0]
    np.testing.assert_array_equal(loaded.predict_proba(probe), forest.predict_proba(probe))
    assert loaded.classes == CLASSES and loaded.feature_names == NAMES
    # and from plain numpy arrays (no torch)
    again = ForestModel.from_state(forest.to_state())
    np.testing.assert_array_equal(again.predict_proba(probe), forest.predict_proba(probe))


def test_same_seed_same_forest_other_seed_other_forest():
    x, y = _data()
    a = ForestModel.fit(x, y, CLASSES, NAMES, **SETTINGS)
    b = ForestModel.fit(x, y, CLASSES, NAMES, **SETTINGS)
    c = ForestModel.fit(x, y, CLASSES, NAMES, **{**SETTINGS, "seed": 4})
    probe = _data(n=50, seed=7)[0]
    np.testing.assert_array_equal(a.predict_proba(probe), b.predict_proba(probe))
    assert not np.array_equal(a.predict_proba(probe), c.predict_proba(probe))


def test_split_between_adjacent_float32_values_matches_scikit_learn():
    low = np.nextafter(np.float32(1024), np.float32(2048))  # odd last mantissa bit
    high = np.nextafter(low, np.float32(2048))
    x = np.array([[low]] * 10 + [[high]] * 10, dtype=np.float32)
    y = np.array([0] * 10 + [1] * 10)
    settings = {"n_estimators": 5, "min_samples_leaf": 1, "seed": 0}
    forest = ForestModel.fit(x, y, ("A", "B"), ("f",), **settings)
    rf = _sklearn(x, y, **settings)
    np.testing.assert_allclose(forest.predict_proba(x), rf.predict_proba(x), atol=1e-6)


def test_a_forest_from_a_shorter_feature_list_reads_todays_rows_by_name():
    # a checkpoint fitted before features "new" and "g" were added, in the middle and at the end
    x, y = _data()
    forest = ForestModel.fit(x, y, CLASSES, NAMES, **SETTINGS)
    today = (*NAMES[:3], "new", *NAMES[3:], "g")
    rng = np.random.default_rng(5)
    rows, _ = _data(n=100, seed=4)
    wide = np.column_stack([rows[:, :3], rng.normal(size=100), rows[:, 3:], rng.normal(size=100)])
    aligned = forest.aligned(today)
    assert aligned.feature_names == today
    np.testing.assert_array_equal(aligned.predict_proba(wide), forest.predict_proba(rows))
    assert forest.aligned(NAMES) is forest
    # a feature the forest splits on that today's rows lack: refused, by name
    with pytest.raises(ValueError, match="f0"):
        forest.aligned(NAMES[1:])
