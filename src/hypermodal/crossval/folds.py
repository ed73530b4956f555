"""Folds for cross-validation by dataset: no dataset is ever in its own training fold.

Only **real** datasets are held out and scored. Simulated and augmented images
(``synthetic = True``) may train every fold except the ones holding out the dataset they were
made from (``simulated_from``): a radiograph simulated from a CT volume never trains the model
that is then asked about that CT volume.

``folds="dataset"`` is leave-one-dataset-out (one fold per real dataset, the paper's "unseen
datasets" taken to its limit). An integer ``k`` deals the real datasets into ``k`` folds,
class by class in a seeded order, so each fold holds out several datasets of several classes —
cheaper when a fold costs a CNN training, and still every dataset is predicted by a model that
never saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Fold:
    """One fold: the real datasets it holds out, and row masks into the table."""

    held_out: tuple[str, ...]
    train: np.ndarray  # bool per row: may train this fold's models
    test: np.ndarray  # bool per row: scored in this fold


def real_datasets(table: pd.DataFrame) -> list[str]:
    """The real (not synthetic) datasets of ``table``, in sorted order."""
    synthetic = _synthetic(table)
    return sorted(set(table.loc[~synthetic, "dataset"].astype(str)))


def _synthetic(table: pd.DataFrame) -> np.ndarray:
    if "synthetic" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table["synthetic"].fillna(False).to_numpy(dtype=bool)


def make_folds(table: pd.DataFrame, folds: str | int = "dataset", seed: int = 0) -> list[Fold]:
    """The folds over ``table`` (catalog-like rows with ``dataset``, ``label``, ``synthetic``,
    ``simulated_from``).

    Raises:
        ValueError: ``folds`` is neither ``"dataset"`` nor an integer >= 2, or there are fewer
            real datasets than folds.
    """
    names = real_datasets(table)
    if folds == "dataset":
        groups = [[d] for d in names]
    else:
        k = int(folds)
        if k < 2:
            raise ValueError(f"folds must be 'dataset' or an integer >= 2, got {folds!r}")
        if k > len(names):
            raise ValueError(f"{k} folds asked for but only {len(names)} real datasets")
        rng = np.random.default_rng(seed)
        real = table.loc[~_synthetic(table)]
        label_of = real.groupby("dataset")["label"].agg(lambda s: s.mode().iat[0])
        groups = [[] for _ in range(k)]
        slot = int(rng.integers(k))
        for label in sorted(label_of.unique()):
            members = sorted(label_of.index[label_of == label])
            rng.shuffle(members)
            for d in members:
                groups[slot % k].append(d)
                slot += 1
        groups = [sorted(g) for g in groups if g]
    dataset = table["dataset"].astype(str).to_numpy()
    source = (
        table["simulated_from"].astype(object).where(table["simulated_from"].notna(), None)
        if "simulated_from" in table.columns
        else pd.Series([None] * len(table))
    ).to_numpy()
    synthetic = _synthetic(table)
    out = []
    for group in groups:
        held = np.isin(dataset, group)
        from_held = np.array([s in group for s in source], dtype=bool)
        out.append(
            Fold(
                held_out=tuple(group),
                train=~held & ~from_held,
                test=held & ~synthetic,
            )
        )
    return out


def check_folds(table: pd.DataFrame, folds: list[Fold]) -> None:
    """Raise AssertionError unless the folds keep their promise: every real dataset scored once,
    never by a fold that trained on it or on images simulated from it."""
    dataset = table["dataset"].astype(str).to_numpy()
    scored: list[str] = []
    for fold in folds:
        trained = set(dataset[fold.train])
        assert not trained & set(fold.held_out), fold.held_out
        if "simulated_from" in table.columns:
            sources = set(table.loc[fold.train, "simulated_from"].dropna().astype(str))
            assert not sources & set(fold.held_out), fold.held_out
        assert set(dataset[fold.test]) == set(fold.held_out), f"{fold.held_out}: not all scored"
        scored.extend(fold.held_out)
    assert sorted(scored) == real_datasets(table), "a real dataset is not scored exactly once"
