"""Folds by dataset: no dataset, and no image simulated from it, trains its own fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hypermodal.crossval import Fold, check_folds, make_folds, real_datasets

#: real datasets (name, label, images) and simulated ones (name, label, images, made from)
REAL = [
    ("ct-a", "CT", 5),
    ("ct-b", "CT", 3),
    ("ct-c", "CT", 2),
    ("mr-a", "MR", 4),
    ("mr-b", "MR", 2),
    ("xr-a", "XR", 3),
    ("xr-b", "XR", 1),
]
SIMULATED = [
    ("sim-xr-from-ct-a", "XR", 4, "ct-a"),  # radiographs projected from the ct-a volumes
    ("sim-pt-from-mr-b", "PT", 3, "mr-b"),
    ("aug-ct", "CT", 2, None),  # augmented, made from no dataset in particular
]


def _table() -> pd.DataFrame:
    rows = []
    for name, label, n in REAL:
        rows += [{"dataset": name, "label": label, "synthetic": False, "simulated_from": None}] * n
    for name, label, n, source in SIMULATED:
        rows += [{"dataset": name, "label": label, "synthetic": True, "simulated_from": source}] * n
    return pd.DataFrame(rows)


def _assert_promises(table: pd.DataFrame, folds: list[Fold]) -> None:
    """The promise of the folds, checked independently of check_folds."""
    dataset = table["dataset"].to_numpy()
    synthetic = table["synthetic"].to_numpy(bool)
    source = table["simulated_from"].to_numpy(object)
    scored = np.zeros(len(table), int)
    for fold in folds:
        held = np.isin(dataset, fold.held_out)
        assert not (fold.train & held).any()  # no held-out dataset trains its fold
        assert not (fold.train & np.isin(source, fold.held_out)).any()  # nor images made from it
        assert not (fold.test & synthetic).any()  # simulated images are never scored
        np.testing.assert_array_equal(fold.test, held & ~synthetic)
        # everything else trains
        np.testing.assert_array_equal(fold.train, ~held & ~np.isin(source, fold.held_out))
        scored += fold.test
    np.testing.assert_array_equal(scored, (~synthetic).astype(int))  # each real image once
    check_folds(table, folds)


def test_real_datasets_leave_out_the_simulated():
    assert real_datasets(_table()) == sorted(name for name, _, _ in REAL)


def test_leave_one_dataset_out():
    table = _table()
    folds = make_folds(table, "dataset")
    assert [f.held_out for f in folds] == [(d,) for d in real_datasets(table)]
    _assert_promises(table, folds)
    by_name = {f.held_out[0]: f for f in folds}
    dataset = table["dataset"]
    # the fold of ct-a trains neither ct-a nor the radiographs simulated from it ...
    assert not by_name["ct-a"].train[dataset.eq("sim-xr-from-ct-a").to_numpy()].any()
    # ... which train every other fold, as does the augmented set
    assert by_name["ct-b"].train[dataset.eq("sim-xr-from-ct-a").to_numpy()].all()
    assert all(f.train[dataset.eq("aug-ct").to_numpy()].all() for f in folds)
    assert not by_name["mr-b"].train[dataset.eq("sim-pt-from-mr-b").to_numpy()].any()


@pytest.mark.parametrize("k", [2, 3, 7])
def test_integer_folds_group_datasets_and_keep_the_promise(k):
    table = _table()
    folds = make_folds(table, k, seed=1)
    assert len(folds) == k
    held = [d for f in folds for d in f.held_out]
    assert sorted(held) == real_datasets(table)  # a partition of the real datasets
    assert all(f.held_out == tuple(sorted(f.held_out)) for f in folds)
    _assert_promises(table, folds)


def test_integer_folds_deal_each_class_across_the_folds():
    table = _table()
    for seed in range(5):
        folds = make_folds(table, 3, seed=seed)
        fold_of = {d: i for i, f in enumerate(folds) for d in f.held_out}
        assert len({fold_of[d] for d in ("ct-a", "ct-b", "ct-c")}) == 3  # CT in every fold
        assert fold_of["mr-a"] != fold_of["mr-b"] and fold_of["xr-a"] != fold_of["xr-b"]


def test_integer_folds_follow_the_seed():
    table = _table()
    a = [f.held_out for f in make_folds(table, 3, seed=0)]
    assert a == [f.held_out for f in make_folds(table, 3, seed=0)]
    others = {tuple(f.held_out for f in make_folds(table, 3, seed=s)) for s in range(1, 8)}
    assert len(others | {tuple(a)}) > 1


@pytest.mark.parametrize("folds", [1, 0, -2, "1", 8, "many"])
def test_bad_fold_counts_raise(folds):
    with pytest.raises(ValueError):
        make_folds(_table(), folds)


def test_tables_without_provenance_columns_are_all_real():
    table = _table().drop(columns=["synthetic", "simulated_from"])
    folds = make_folds(table, "dataset")
    assert len(folds) == len(set(table["dataset"]))
    assert sum(int(f.test.sum()) for f in folds) == len(table)
    check_folds(table, folds)
    check_folds(table, make_folds(table, 4))


def test_a_filtered_table_keeps_its_index():
    table = _table()
    table = table[table["dataset"] != "ct-c"]  # index no longer 0..n-1
    folds = make_folds(table, "dataset")
    check_folds(table, folds)
    assert "ct-c" not in {d for f in folds for d in f.held_out}


def _broken(table: pd.DataFrame, how: str) -> list[Fold]:
    folds = make_folds(table, "dataset")
    dataset = table["dataset"].to_numpy()
    first = folds[0]  # holds out ct-a
    if how == "trains on its held-out dataset":
        train = first.train | (dataset == "ct-a")
        return [Fold(first.held_out, train, first.test), *folds[1:]]
    if how == "trains on images simulated from it":
        train = first.train | (dataset == "sim-xr-from-ct-a")
        return [Fold(first.held_out, train, first.test), *folds[1:]]
    if how == "scores another dataset":
        test = first.test | (dataset == "ct-b")
        return [Fold(first.held_out, first.train, test), *folds[1:]]
    if how == "a dataset scored twice":
        return [*folds, folds[0]]
    if how == "a dataset never scored":
        return folds[1:]
    if how == "a synthetic dataset held out":
        synth = dataset == "aug-ct"
        extra = Fold(("aug-ct",), ~synth, synth)
        return [*folds, extra]
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "trains on its held-out dataset",
        "trains on images simulated from it",
        "scores another dataset",
        "a dataset scored twice",
        "a dataset never scored",
        "a synthetic dataset held out",
    ],
)
def test_check_folds_catches_a_broken_fold(how):
    table = _table()
    with pytest.raises(AssertionError):
        check_folds(table, _broken(table, how))


def test_check_folds_catches_a_fold_that_scores_nothing():
    table = _table()
    folds = make_folds(table, "dataset")
    first = folds[0]
    empty = Fold(first.held_out, first.train, np.zeros(len(table), bool))
    with pytest.raises(AssertionError):
        check_folds(table, [empty, *folds[1:]])
