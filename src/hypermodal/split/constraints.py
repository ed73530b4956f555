"""What an automatic split should satisfy beyond the ratios: class presence and body locations.

Both are matrices over (split, class), in the split order of :data:`~hypermodal.split.plan.SPLITS`,
so that the objective of :func:`hypermodal.split.auto.auto_split` can check them quickly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def needed_presence(counts: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """(3, classes) bool: where each class must be present.

    A class with k datasets should reach min(k, splits) splits, filled in the order train, test,
    validate: a class seen in training and tested on an unseen dataset is worth more than one that
    is only validated. Splits with a zero ratio are skipped.
    """
    n_datasets = (counts > 0).sum(axis=0)
    need = np.zeros((3, counts.shape[1]), dtype=bool)
    rank = 0
    for s in (0, 2, 1):  # train, test, validate
        if ratios[s] > 0:
            rank += 1
            need[s] = n_datasets >= rank
    return need


def clean_locations(values: Iterable[Any] | None) -> list[str]:
    """Body locations as upper-case names, blanks and ``None`` dropped (order and repeats kept)."""
    return [str(v).strip().upper() for v in values or () if v is not None and str(v).strip()]


@dataclass(frozen=True)
class LocationConstraint:
    """Body locations per (dataset, class), as matrices the objective can use quickly.

    Attributes:
        pairs: (datasets, P) 0/1, dataset d has class c imaged at location l, one column per
            (class, location) pair.
        pair_class: (P, classes) one-hot class of each pair.
        need: (3, classes) how many distinct locations each split should reach (at most
            ``minimum``, at most the number the class has, 0 where the class itself is not
            needed).
        weight: penalty per missing location.
    """

    pairs: np.ndarray
    pair_class: np.ndarray
    need: np.ndarray
    weight: float = 1.0

    def shortfall(self, onehot: np.ndarray) -> np.ndarray:
        """(3, classes) locations missing against ``need`` for a one-hot assignment."""
        present = (onehot @ self.pairs) > 0
        have = present.astype(float) @ self.pair_class
        return np.maximum(self.need - have, 0.0)


def location_constraint(
    counts: pd.DataFrame,
    locations: Mapping[str, Mapping[str, Any]],
    need: np.ndarray,
    minimum: int = 2,
    weight: float = 1.0,
) -> LocationConstraint:
    """A :class:`LocationConstraint` for ``counts``.

    Args:
        counts: images per dataset (rows) and class (columns), after caps.
        locations: dataset → class → iterable of body locations (``None``/empty locations are
            ignored). Only classes the dataset actually has images of (after caps) count.
        need: :func:`needed_presence` of ``counts``.
        minimum: distinct locations each (class, split) should reach where the data allows.
        weight: penalty per missing location.
    """
    classes = [str(c) for c in counts.columns]
    pair_index: dict[tuple[int, str], int] = {}
    cells: list[tuple[int, int]] = []
    for d, name in enumerate(counts.index):
        for c, cls in enumerate(classes):
            if counts.iat[d, c] <= 0:
                continue
            for loc in clean_locations((locations.get(name) or {}).get(cls)):
                cells.append((d, pair_index.setdefault((c, loc), len(pair_index))))
    pairs = np.zeros((len(counts.index), len(pair_index)))
    for d, p in cells:
        pairs[d, p] = 1.0
    pair_class = np.zeros((len(pair_index), len(classes)))
    for (c, _), p in pair_index.items():
        pair_class[p, c] = 1.0
    # Where the data allows: no more than the class's distinct locations, and no more than its
    # (dataset, location) incidences shared evenly among the splits that need the class.
    available = pair_class.sum(axis=0)
    incidences = pairs.sum(axis=0) @ pair_class
    splits_needing = np.maximum(need.sum(axis=0), 1)
    reachable = np.maximum(np.floor(incidences / splits_needing), np.minimum(available, 1))
    need_loc = np.minimum(float(minimum), np.minimum(available, reachable))[None, :] * need
    return LocationConstraint(pairs=pairs, pair_class=pair_class, need=need_loc, weight=weight)
