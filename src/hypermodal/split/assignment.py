"""Dataset-level split and per-dataset caps.

Every dataset lands in exactly one of train / validate / test, so test datasets are unseen in
training (paper §2.2). The split is either given explicitly (a file mapping dataset → split, as
in the paper's Appendix A) or found automatically: whole datasets are assigned so that each
class's images are shared among the splits in the target ratios, and every class is present in
every split where there are enough datasets of that class.

Caps (paper §2.2): at most 50,000 CT and 100,000 MR images per dataset by default, taken in
catalog order. The split file is written once and reused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import SplitError
from hypermodal.common.files import write_text_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "validate", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)
DEFAULT_CAPS: dict[str, int] = {"CT": 50_000, "MR": 100_000}
CAP_ORDERS = ("catalog", "spread")


@dataclass
class SplitPlan:
    """Which split each dataset belongs to, and how it was decided."""

    assignments: dict[str, str]
    method: str  # "auto" or "file"
    seed: int | None = None
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    caps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    exclude_localizers: bool = True
    quality: dict[str, Any] = field(default_factory=dict)
    #: which images a cap keeps: "catalog" = the first ones in catalog order (the paper's rule);
    #: "spread" = evenly spaced ones, so a capped volume keeps slices from its whole extent
    cap_order: str = "catalog"

    def __post_init__(self) -> None:
        if self.cap_order not in CAP_ORDERS:
            raise SplitError(f"cap_order must be one of {CAP_ORDERS}, got {self.cap_order!r}")

    @property
    def hash(self) -> str:
        content: dict[str, Any] = {
            "assignments": dict(sorted(self.assignments.items())),
            "caps": dict(sorted(self.caps.items())),
            "exclude_localizers": self.exclude_localizers,
        }
        if self.cap_order != "catalog":  # keeps the hashes of earlier split files valid
            content["cap_order"] = self.cap_order
        payload = json.dumps(content, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "method": self.method,
            "seed": self.seed,
            "ratios": list(self.ratios),
            "caps": self.caps,
            "exclude_localizers": self.exclude_localizers,
            "cap_order": self.cap_order,
            "hash": self.hash,
            "quality": self.quality,
            "assignments": dict(sorted(self.assignments.items())),
        }

    def save(self, path: Path | str) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> SplitPlan:
        """Load a split written by :meth:`save`, or an explicit split file.

        Explicit files: JSON/YAML mapping ``{dataset: split}`` (or ``{split: [datasets]}``), or a
        CSV with columns ``dataset,split``.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"split file {path} not found")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or not {"dataset", "split"} <= set(reader.fieldnames):
                    raise SplitError(f"{path}: a CSV split file needs columns dataset,split")
                data: Any = {row["dataset"]: row["split"] for row in reader}
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text())
        else:
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SplitError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise SplitError(f"{path}: expected a mapping of dataset to split")
        if "assignments" in data:
            plan = cls(
                assignments=_normalise_assignments(data["assignments"], path),
                method=data.get("method", "file"),
                seed=data.get("seed"),
                ratios=tuple(data.get("ratios", DEFAULT_RATIOS)),  # type: ignore[arg-type]
                caps={k: int(v) for k, v in data.get("caps", DEFAULT_CAPS).items()},
                exclude_localizers=bool(data.get("exclude_localizers", True)),
                quality=data.get("quality", {}),
                cap_order=str(data.get("cap_order", "catalog")),
            )
            if data.get("hash") and data["hash"] != plan.hash:
                raise SplitError(f"{path}: content does not match its recorded hash (edited?)")
            return plan
        return cls(assignments=_normalise_assignments(data, path), method="file")


def _normalise_assignments(data: Mapping[str, Any], path: Path) -> dict[str, str]:
    aliases = {"val": "validate", "valid": "validate", "validation": "validate"}
    out: dict[str, str] = {}
    if set(map(str, data)) <= set(SPLITS) | set(aliases) and all(
        isinstance(v, list) for v in data.values()
    ):
        for split, names in data.items():
            for name in names:
                out[str(name)] = aliases.get(str(split).lower(), str(split).lower())
    else:
        out = {str(k): aliases.get(str(v).lower(), str(v).lower()) for k, v in data.items()}
    bad = {k: v for k, v in out.items() if v not in SPLITS}
    if bad:
        raise SplitError(f"{path}: unknown split names {bad}; use train/validate/test")
    return out


def class_counts(catalog: pd.DataFrame, caps: Mapping[str, int]) -> pd.DataFrame:
    """Images per (dataset, label) after caps: a table with datasets as rows, classes as columns."""
    counts = catalog.groupby(["dataset", "label"], sort=True).size().unstack(fill_value=0)
    for label, cap in caps.items():
        if label in counts:
            counts[label] = counts[label].clip(upper=cap)
    return counts


def _needed_presence(counts: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """(3, classes) bool: where each class must be present. A class with k datasets should
    reach min(k, splits) splits, filled in the order train, test, validate — a class seen in
    training and tested on an unseen dataset is worth more than one that is only validated."""
    n_datasets = (counts > 0).sum(axis=0)
    need = np.zeros((3, counts.shape[1]), dtype=bool)
    rank = 0
    for s in (0, 2, 1):  # train, test, validate
        if ratios[s] > 0:
            rank += 1
            need[s] = n_datasets >= rank
    return need


@dataclass(frozen=True)
class LocationConstraint:
    """Body locations per (dataset, class), as matrices the objective can use quickly.

    ``pairs``: (datasets, P) bool, dataset d has class c imaged at location l, one column per
    (class, location) pair; ``pair_class``: (P, classes) one-hot class of each pair; ``need``:
    (3, classes) how many distinct locations each split should reach (at most ``minimum``, at
    most the number the class has, 0 where the class itself is not needed); ``weight``: penalty
    per missing location.
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
    """Build a :class:`LocationConstraint` for ``counts`` from ``locations``: dataset → class →
    iterable of body locations (``None``/empty locations are ignored). Only classes the dataset
    actually has images of (after caps) count."""
    classes = [str(c) for c in counts.columns]
    pair_index: dict[tuple[int, str], int] = {}
    cells: list[tuple[int, int]] = []
    for d, name in enumerate(counts.index):
        for c, cls in enumerate(classes):
            if counts.iat[d, c] <= 0:
                continue
            for loc in (locations.get(name) or {}).get(cls) or ():
                if loc is None or not str(loc).strip():
                    continue
                key = (c, str(loc).strip().upper())
                cells.append((d, pair_index.setdefault(key, len(pair_index))))
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


def _objective(
    assign: np.ndarray,
    counts: np.ndarray,
    ratios: np.ndarray,
    need: np.ndarray,
    locations: LocationConstraint | None = None,
) -> float:
    """Squared error of each class's image and dataset shares per split against the ratios,
    plus a large penalty per (class, split) that is empty although the class has enough
    datasets to fill it, plus (with ``locations``) a penalty per body location missing from a
    (class, split) that should show at least two."""
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

    ``counts``: images per dataset (rows) and class (columns), after caps. ``fixed``: datasets
    whose split is decided beforehand (templates and phantoms go to train). ``locations``:
    dataset → class → body locations; when given, each class should show at least
    ``min_locations`` distinct locations in every split where the data allows (the paper's
    manual rule, §2.2) — a soft penalty of ``location_weight`` per missing location, smaller
    than the penalty for a class missing from a split. Local search from a greedy start: move
    one dataset or swap two while the objective improves; random restarts escape local minima.
    Returns the assignment and a quality report.
    """
    if not np.isclose(sum(ratios), 1.0) or min(ratios) < 0:
        raise SplitError(f"split ratios must be non-negative and sum to 1, got {ratios}")
    names = list(counts.index)
    if not names:
        raise SplitError("no datasets to split")
    mat = counts.to_numpy(dtype=float)
    r = np.asarray(ratios, dtype=float)
    need = _needed_presence(mat, r)
    loc = (
        location_constraint(counts, locations, need, min_locations, location_weight)
        if locations is not None
        else None
    )
    fixed_idx = {names.index(d): SPLITS.index(s) for d, s in (fixed or {}).items() if d in names}
    free = np.array([i for i in range(len(names)) if i not in fixed_idx], dtype=int)
    rng = np.random.default_rng(seed)
    if iterations is None:  # enough local-search steps for the number of datasets
        iterations = max(2_000, min(20_000, 400 * len(names)))

    def greedy() -> np.ndarray:
        order = rng.permutation(len(names))
        order = order[np.argsort(-mat[order].sum(axis=1), kind="stable")]
        assign = np.full(len(names), -1)
        per_split = np.zeros((3, mat.shape[1]))
        totals = mat.sum(axis=0)
        for i, s in fixed_idx.items():
            assign[i] = s
            per_split[s] += mat[i]
        for i in order:
            if i in fixed_idx:
                continue
            # Put the dataset where its classes are most under their target.
            deficit = [
                float(((r[s] * totals - per_split[s]) * (mat[i] > 0)).sum()) if r[s] > 0 else -1e18
                for s in range(3)
            ]
            s = int(np.argmax(deficit))
            assign[i] = s
            per_split[s] += mat[i]
        return assign

    best, best_score = None, np.inf
    restarts = max(1, min(20, iterations // max(1, 50 * len(names))))
    steps = max(1, iterations // restarts)
    for _ in range(restarts):
        assign = greedy()
        score = _objective(assign, mat, r, need, loc)
        for _ in range(steps if len(free) else 0):
            cand = assign.copy()
            i = int(free[rng.integers(len(free))])
            if rng.random() < 0.5 or len(free) < 2:
                choices = [s for s in range(3) if s != cand[i] and r[s] > 0]
                if not choices:
                    continue
                cand[i] = choices[int(rng.integers(len(choices)))]
            else:
                j = int(free[rng.integers(len(free))])
                cand[i], cand[j] = cand[j], cand[i]
            cand_score = _objective(cand, mat, r, need, loc)
            if cand_score <= score:
                assign, score = cand, cand_score
        if score < best_score:
            best, best_score = assign, score
    assert best is not None
    assignments = {names[i]: SPLITS[int(best[i])] for i in range(len(names))}
    quality = split_quality(counts, assignments, ratios)
    if locations is not None:
        quality.update(location_quality(counts, assignments, locations, min_locations, loc, ratios))
    quality["objective"] = round(float(best_score), 6)
    return assignments, quality


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
    (``location_limits``: the class has fewer locations or datasets than needed)."""
    per: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for s in SPLITS:
        for c in counts.columns:
            locs: set[str] = set()
            for d in counts.index:
                if assignments.get(d) == s and counts.at[d, c] > 0:
                    for loc in (locations.get(d) or {}).get(str(c)) or ():
                        if loc is not None and str(loc).strip():
                            locs.add(str(loc).strip().upper())
            per[s][str(c)] = sorted(locs)
    if constraint is None:
        need = _needed_presence(counts.to_numpy(dtype=float), np.asarray(ratios, dtype=float))
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


def split_quality(
    counts: pd.DataFrame, assignments: Mapping[str, str], ratios: tuple[float, float, float]
) -> dict[str, Any]:
    """Images per class per split, each class's share per split, and classes missing anywhere."""
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


def make_split(
    catalog: pd.DataFrame,
    split_file: Path | str | None = None,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    seed: int = 0,
    caps: Mapping[str, int] | None = None,
    exclude_localizers: bool = True,
    templates_to_train: bool = True,
    cap_order: str = "catalog",
) -> SplitPlan:
    """A split for ``catalog``: from ``split_file`` when given, else found automatically.

    In an automatic split, datasets made only of templates or phantoms (atlases, averages: not
    acquisitions of a patient) go to train, so that validation and test measure real scans.
    """
    caps = dict(DEFAULT_CAPS if caps is None else caps)
    usable = catalog[~catalog["localizer"]] if exclude_localizers else catalog
    counts = class_counts(usable, caps)
    if split_file is not None:
        given = SplitPlan.load(split_file)
        missing = sorted(set(counts.index) - set(given.assignments))
        if missing:
            raise SplitError(
                f"split file {split_file} does not place {len(missing)} dataset(s) of the "
                f"catalog: {missing[:10]}{' …' if len(missing) > 10 else ''}"
            )
        plan = SplitPlan(
            assignments={d: given.assignments[d] for d in counts.index},
            method="file",
            ratios=ratios,
            caps=caps,
            exclude_localizers=exclude_localizers,
            cap_order=cap_order,
        )
    else:
        templates = (
            usable.groupby("dataset")["template"].all()
            if "template" in usable
            else pd.Series(dtype=bool)
        )
        fixed = {d: "train" for d, t in templates.items() if t} if templates_to_train else {}
        assignments, _ = auto_split(counts, ratios=ratios, seed=seed, fixed=fixed)
        plan = SplitPlan(
            assignments=assignments,
            method="auto",
            seed=seed,
            ratios=ratios,
            caps=caps,
            exclude_localizers=exclude_localizers,
            cap_order=cap_order,
        )
    plan.quality = split_quality(counts, plan.assignments, ratios)
    for miss in plan.quality["missing"]:
        log.warning("class %s has no images in the %s split", miss["class"], miss["split"])
    return plan


def apply_split(catalog: pd.DataFrame, plan: SplitPlan) -> pd.DataFrame:
    """The rows selected for the store, in catalog order, with ``split`` filled in.

    Drops localizers (when the plan says so), rows of datasets the plan does not place, and rows
    beyond each dataset's cap for their class: the first ``cap`` rows in catalog order, or
    ``cap`` evenly spaced rows with ``cap_order="spread"``.
    """
    df = catalog.copy()
    df["split"] = df["dataset"].map(plan.assignments)
    keep = df["split"].notna()
    if plan.exclude_localizers:
        keep &= ~df["localizer"].astype(bool)
    df = df[keep]
    if plan.caps:
        groups = df.groupby(["dataset", "label"], sort=False)
        rank = groups.cumcount().to_numpy()
        cap = df["label"].map(plan.caps).fillna(np.inf).to_numpy()
        if plan.cap_order == "spread":
            size = groups["label"].transform("size").to_numpy()
            keep_n = np.minimum(cap, size)
            # row k of a group of n is kept when it is the nearest row to one of keep_n evenly
            # spaced positions: floor((k+1)·m/n) > floor(k·m/n) picks exactly m rows of n
            with np.errstate(invalid="ignore"):
                picked = np.floor((rank + 1) * keep_n / size) > np.floor(rank * keep_n / size)
            df = df[picked]
        else:
            df = df[rank < cap]
    return df.reset_index(drop=True)


def split_or_reuse(
    catalog: pd.DataFrame,
    out: Path | str,
    split_file: Path | str | None = None,
    force: bool = False,
    **kwargs: Any,
) -> tuple[SplitPlan, bool]:
    """Write the split to ``out`` once; later calls reuse it. Returns (plan, reused)."""
    out = Path(out)
    if out.exists() and not force and split_file is None:
        plan = SplitPlan.load(out)
        missing = sorted(set(catalog["dataset"]) - set(plan.assignments))
        if missing:
            raise SplitError(
                f"existing split {out} does not place datasets {missing[:10]}; the catalog has "
                "changed — rerun with --force to make a new split (this changes the test set)"
            )
        return plan, True
    plan = make_split(catalog, split_file=split_file, **kwargs)
    plan.save(out)
    return plan, False
