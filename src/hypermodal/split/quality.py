"""How good a split is: images, datasets and shares per class per split, and body locations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.split.constraints import (
    LocationConstraint,
    clean_locations,
    location_constraint,
    needed_presence,
)
from hypermodal.split.plan import DEFAULT_RATIOS, SPLITS


def split_quality(
    counts: pd.DataFrame, assignments: Mapping[str, str], ratios: tuple[float, float, float]
) -> dict[str, Any]:
    """Images per class per split, each class's share per split, and classes missing anywhere.

    Args:
        counts: images per dataset (rows) and class (columns), after caps.
        assignments: dataset → split.
        ratios: the target train/validate/test shares.

    Returns:
        ``images``, ``datasets``, ``datasets_per_class``, ``shares``, ``target_ratios``,
        ``max_share_deviation`` and ``missing`` (the (split, class) pairs without images, for
        splits with a non-zero ratio).
    """
    table: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    per_class_datasets: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    datasets: dict[str, int] = {s: 0 for s in SPLITS}
    for s in SPLITS:
        names = [d for d in counts.index if assignments.get(d) == s]
        datasets[s] = len(names)
        sub = counts.loc[names]
        table[s] = {str(c): int(sub[c].sum()) for c in counts.columns}
        per_class_datasets[s] = {str(c): int((sub[c] > 0).sum()) for c in counts.columns}
    totals = {str(c): int(counts[c].sum()) for c in counts.columns}
    shares = {
        s: {c: round(table[s][c] / totals[c], 4) if totals[c] else 0.0 for c in totals}
        for s in SPLITS
    }
    missing = [
        {"split": s, "class": c}
        for s, r in zip(SPLITS, ratios, strict=True)
        if r > 0
        for c in totals
        if table[s][c] == 0
    ]
    max_dev = max(
        (abs(shares[s][c] - r) for s, r in zip(SPLITS, ratios, strict=True) for c in totals),
        default=0.0,
    )
    return {
        "images": table,
        "datasets": datasets,
        "datasets_per_class": per_class_datasets,
        "shares": shares,
        "target_ratios": list(ratios),
        "max_share_deviation": round(float(max_dev), 4),
        "missing": missing,
    }


def location_quality(
    counts: pd.DataFrame,
    assignments: Mapping[str, str],
    locations: Mapping[str, Mapping[str, Any]],
    min_locations: int = 2,
    constraint: LocationConstraint | None = None,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
) -> dict[str, Any]:
    """Distinct body locations per class per split, and where fewer than ``min_locations`` are
    reached although the data has more (``location_shortfalls``) or cannot have more
    (``location_limits``: the class has fewer locations or datasets than needed).

    ``constraint`` is the :class:`~hypermodal.split.constraints.LocationConstraint` the split was
    searched with; by default it is rebuilt from ``counts``, ``locations`` and ``ratios``.
    """
    per: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for s in SPLITS:
        for c in counts.columns:
            locs: set[str] = set()
            for d in counts.index:
                if assignments.get(d) == s and counts.at[d, c] > 0:
                    locs.update(clean_locations((locations.get(d) or {}).get(str(c))))
            per[s][str(c)] = sorted(locs)
    if constraint is None:
        need = needed_presence(counts.to_numpy(dtype=float), np.asarray(ratios, dtype=float))
        constraint = location_constraint(counts, locations, need, min_locations)
    shortfalls, limits = [], []
    for si, s in enumerate(SPLITS):
        for ci, c in enumerate(map(str, counts.columns)):
            have = len(per[s][c])
            if have >= min_locations:
                continue
            item = {"split": s, "class": c, "locations": have}
            if have < constraint.need[si, ci]:
                shortfalls.append(item)
            else:
                limits.append(item)
    return {
        "min_locations": min_locations,
        "locations_per_class": per,
        "location_shortfalls": shortfalls,
        "location_limits": limits,
    }
