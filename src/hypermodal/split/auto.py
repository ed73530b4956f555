"""The automatic split: whole datasets to train/validate/test by local search.

Whole datasets are assigned so that each class's images (and datasets) are shared among the
splits in the target ratios, every class is present in every split where there are enough
datasets of that class, and (optionally) each class shows several body locations per split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import SplitError
from hypermodal.split.constraints import LocationConstraint, location_constraint, needed_presence
from hypermodal.split.plan import DEFAULT_RATIOS, SPLITS
from hypermodal.split.quality import location_quality, split_quality


def objective(
    assign: np.ndarray,
    counts: np.ndarray,
    ratios: np.ndarray,
    need: np.ndarray,
    locations: LocationConstraint | None = None,
) -> float:
    """Score of an assignment (lower is better).

    Squared error of each class's image and dataset shares per split against the ratios, plus a
    large penalty per (class, split) that is empty although the class has enough datasets to
    fill it (``need``, from :func:`~hypermodal.split.constraints.needed_presence`), plus (with
    ``locations``) a penalty per body location missing from a (class, split).

    Args:
        assign: split index (0 train, 1 validate, 2 test) of each dataset.
        counts: (datasets, classes) images after caps.
        ratios: the three target shares.
        need: (3, classes) where each class must be present.
        locations: the body-location constraint, if any.
    """
    onehot = np.zeros((3, len(assign)))
    onehot[assign, np.arange(len(assign))] = 1.0
    has = counts > 0
    per_split = onehot @ counts
    datasets_per_split = onehot @ has
    present = datasets_per_split > 0
    # Shares of images AND of datasets: image shares are the paper's target; dataset shares keep
    # the variety of acquisitions spread out when a few datasets hold most of a class's images.
    image_shares = per_split / np.maximum(counts.sum(axis=0), 1)
    dataset_shares = datasets_per_split / np.maximum(has.sum(axis=0), 1)
    err = float(((image_shares - ratios[:, None]) ** 2).sum())
    err += float(((dataset_shares - ratios[:, None]) ** 2).sum())
    missing = int(((~present) & need).sum())
    score = err + 10.0 * missing
    if locations is not None and locations.pairs.size:
        score += locations.weight * float(locations.shortfall(onehot).sum())
    return score


def _greedy_start(
    mat: np.ndarray, ratios: np.ndarray, fixed: dict[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Largest datasets first (ties in random order), each where its classes are most under
    their target; ``fixed`` datasets keep their split."""
    n = len(mat)
    order = rng.permutation(n)
    order = order[np.argsort(-mat[order].sum(axis=1), kind="stable")]
    assign = np.full(n, -1)
    per_split = np.zeros((3, mat.shape[1]))
    totals = mat.sum(axis=0)
    for i, s in fixed.items():
        assign[i] = s
        per_split[s] += mat[i]
    for i in order:
        if i in fixed:
            continue
        deficit = [
            float(((ratios[s] * totals - per_split[s]) * (mat[i] > 0)).sum())
            if ratios[s] > 0
            else -1e18
            for s in range(3)
        ]
        s = int(np.argmax(deficit))
        assign[i] = s
        per_split[s] += mat[i]
    return assign


def _local_search(
    assign: np.ndarray,
    steps: int,
    free: np.ndarray,
    open_splits: list[int],
    rng: np.random.Generator,
    score_of: Callable[[np.ndarray], float],
) -> tuple[np.ndarray, float]:
    """Move one ``free`` dataset to another of the ``open_splits`` (non-zero ratio), or swap two,
    ``steps`` times, keeping every change that does not raise ``score_of``; returns the final
    assignment and its score."""
    score = score_of(assign)
    for _ in range(steps if len(free) else 0):
        cand = assign.copy()
        i = int(free[rng.integers(len(free))])
        if rng.random() < 0.5 or len(free) < 2:
            choices = [s for s in open_splits if s != cand[i]]
            if not choices:
                continue
            cand[i] = choices[int(rng.integers(len(choices)))]
        else:
            j = int(free[rng.integers(len(free))])
            cand[i], cand[j] = cand[j], cand[i]
        cand_score = score_of(cand)
        if cand_score <= score:
            assign, score = cand, cand_score
    return assign, score


def auto_split(
    counts: pd.DataFrame,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    seed: int = 0,
    iterations: int | None = None,
    fixed: Mapping[str, str] | None = None,
    locations: Mapping[str, Mapping[str, Any]] | None = None,
    min_locations: int = 2,
    location_weight: float = 1.0,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Assign whole datasets to splits (deterministic for a seed).

    Local search from a greedy start: move one dataset or swap two while the objective
    (:func:`objective`) improves; random restarts escape local minima.

    Args:
        counts: images per dataset (rows) and class (columns), after caps.
        ratios: target train/validate/test shares (non-negative, summing to 1).
        seed: seed of the random restarts and moves.
        iterations: local-search steps over all restarts (default: from the number of
            datasets).
        fixed: datasets whose split is decided beforehand (templates and phantoms go to train).
        locations: dataset → class → body locations; when given, each class should show at
            least ``min_locations`` distinct locations in every split where the data allows
            (the paper's manual rule, §2.2).
        min_locations: see ``locations``.
        location_weight: the soft penalty per missing location, smaller than the penalty for a
            class missing from a split.

    Returns:
        The assignment (dataset → split) and a quality report (:func:`split_quality`, plus
        :func:`location_quality` with ``locations``, plus the ``objective`` reached).

    Raises:
        SplitError: invalid ratios, or no datasets.
    """
    if not np.isclose(sum(ratios), 1.0) or min(ratios) < 0:
        raise SplitError(f"split ratios must be non-negative and sum to 1, got {ratios}")
    names = list(counts.index)
    if not names:
        raise SplitError("no datasets to split")
    mat = counts.to_numpy(dtype=float)
    r = np.asarray(ratios, dtype=float)
    need = needed_presence(mat, r)
    loc = (
        location_constraint(counts, locations, need, min_locations, location_weight)
        if locations is not None
        else None
    )
    fixed_idx = {names.index(d): SPLITS.index(s) for d, s in (fixed or {}).items() if d in names}
    free = np.array([i for i in range(len(names)) if i not in fixed_idx], dtype=int)
    open_splits = [s for s in range(3) if r[s] > 0]
    rng = np.random.default_rng(seed)
    if iterations is None:  # enough local-search steps for the number of datasets
        iterations = max(2_000, min(20_000, 400 * len(names)))

    def score_of(assign: np.ndarray) -> float:
        return objective(assign, mat, r, need, loc)

    best, best_score = None, np.inf
    restarts = max(1, min(20, iterations // max(1, 50 * len(names))))
    steps = max(1, iterations // restarts)
    for _ in range(restarts):
        start = _greedy_start(mat, r, fixed_idx, rng)
        assign, score = _local_search(start, steps, free, open_splits, rng, score_of)
        if score < best_score:
            best, best_score = assign, score
    assert best is not None
    assignments = {names[i]: SPLITS[int(best[i])] for i in range(len(names))}
    quality = split_quality(counts, assignments, ratios)
    if locations is not None:
        quality.update(location_quality(counts, assignments, locations, min_locations, loc, ratios))
    quality["objective"] = round(float(best_score), 6)
    return assignments, quality
