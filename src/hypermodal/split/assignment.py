"""Dataset-level split and per-dataset caps: make the split, reuse it, select the images.

Every dataset lands in exactly one of train / validate / test, so test datasets are unseen in
training (paper §2.2). The split is either given explicitly (a file mapping dataset → split, as
in the paper's Appendix A; see :meth:`~hypermodal.split.plan.SplitPlan.load`) or found
automatically (:func:`~hypermodal.split.auto.auto_split`).

Caps (paper §2.2): at most 50,000 CT and 100,000 MR images per dataset by default, taken in
catalog order. The split file is written once and reused.

Synthetic datasets (catalog column ``synthetic``: simulated or augmented images) always go to
``train``: the automatic split leaves them out of its search and places them there, and a split
file, a reused split or a plan applied to a catalog that puts one in ``validate`` or ``test`` is
refused (:class:`~hypermodal.common.errors.SplitError`): validation and test measure real
images only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.errors import SplitError
from hypermodal.split.auto import auto_split
from hypermodal.split.plan import DEFAULT_CAPS, DEFAULT_RATIOS, SplitPlan
from hypermodal.split.quality import split_quality

log = logging.getLogger(__name__)


def class_counts(catalog: pd.DataFrame, caps: Mapping[str, int]) -> pd.DataFrame:
    """Images per (dataset, label) after caps: a table with datasets as rows, classes as columns."""
    counts = catalog.groupby(["dataset", "label"], sort=True).size().unstack(fill_value=0)
    for label, cap in caps.items():
        if label in counts:
            counts[label] = counts[label].clip(upper=cap)
    return counts


def usable_rows(catalog: pd.DataFrame, exclude_localizers: bool) -> pd.DataFrame:
    """The rows a split is made from: every row, less localizers (scouts) when they are
    excluded. A dataset of localizers only has no usable rows, so no split places it."""
    if not exclude_localizers:
        return catalog
    return catalog[~catalog["localizer"].astype("boolean").fillna(False).to_numpy(dtype=bool)]


def placed_datasets(catalog: pd.DataFrame, exclude_localizers: bool) -> set[str]:
    """The datasets a split of ``catalog`` must place (those with usable rows)."""
    return set(usable_rows(catalog, exclude_localizers)["dataset"].astype(str))


def synthetic_datasets(catalog: pd.DataFrame) -> list[str]:
    """Datasets with any row marked ``synthetic`` (none when the column is absent), sorted."""
    if "synthetic" not in catalog.columns:
        return []
    flags = catalog["synthetic"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return sorted(set(catalog.loc[flags, "dataset"].astype(str)))


def check_synthetic(assignments: Mapping[str, str], synthetic: list[str], source: str) -> None:
    """Refuse an assignment that puts a synthetic dataset outside ``train``.

    Raises:
        SplitError: ``source`` (a file or split named in the message) places one elsewhere.
    """
    bad = [f"{d} → {assignments[d]}" for d in synthetic if assignments.get(d, "train") != "train"]
    if bad:
        shown = ", ".join(bad[:5]) + (" …" if len(bad) > 5 else "")
        raise SplitError(
            f"{source} puts {len(bad)} synthetic dataset(s) outside train ({shown}); simulated "
            "images may only train, validation and test measure real images"
        )


def _assignments_from_file(split_file: Path | str, datasets: pd.Index) -> dict[str, str]:
    """The split file's assignment of ``datasets``; every one of them must be placed."""
    given = SplitPlan.load(split_file)
    missing = sorted(set(datasets) - set(given.assignments))
    if missing:
        raise SplitError(
            f"split file {split_file} does not place {len(missing)} dataset(s) of the "
            f"catalog: {missing[:10]}{' …' if len(missing) > 10 else ''}"
        )
    return {d: given.assignments[d] for d in datasets}


def _auto_assignments(
    usable: pd.DataFrame,
    counts: pd.DataFrame,
    synthetic: list[str],
    ratios: tuple[float, float, float],
    seed: int,
    templates_to_train: bool,
) -> dict[str, str]:
    """The automatic split of the real datasets, then every synthetic dataset in train."""
    templates = (
        usable.groupby("dataset")["template"].all()
        if "template" in usable
        else pd.Series(dtype=bool)
    )
    fixed = {d: "train" for d, t in templates.items() if t} if templates_to_train else {}
    real = counts.drop(index=synthetic)
    assignments: dict[str, str] = {}
    if len(real.index):
        fixed = {d: s for d, s in fixed.items() if d in real.index}
        assignments, _ = auto_split(real, ratios=ratios, seed=seed, fixed=fixed)
    assignments.update({d: "train" for d in synthetic})
    return {d: assignments[d] for d in counts.index}


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
    acquisitions of a patient) go to train, so that validation and test measure real scans;
    synthetic datasets are left out of the search and go to train.

    Raises:
        SplitError: the split file does not place every dataset of the catalog, puts a synthetic
            dataset outside train, or is invalid.
    """
    caps = dict(DEFAULT_CAPS if caps is None else caps)
    usable = usable_rows(catalog, exclude_localizers)
    counts = class_counts(usable, caps)
    synthetic = [d for d in synthetic_datasets(catalog) if d in counts.index]
    if split_file is not None:
        assignments = _assignments_from_file(split_file, counts.index)
        check_synthetic(assignments, synthetic, f"split file {split_file}")
        method, plan_seed = "file", None
    else:
        assignments = _auto_assignments(usable, counts, synthetic, ratios, seed, templates_to_train)
        method, plan_seed = "auto", seed
    plan = SplitPlan(
        assignments=assignments,
        method=method,
        seed=plan_seed,
        ratios=ratios,
        caps=caps,
        exclude_localizers=exclude_localizers,
        cap_order=cap_order,
        synthetic_datasets=len(synthetic),
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

    Raises:
        SplitError: the plan puts a synthetic dataset of ``catalog`` outside train.
    """
    check_synthetic(plan.assignments, synthetic_datasets(catalog), "the split")
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
    """Write the split to ``out`` once; later calls reuse it. Returns (plan, reused).

    ``kwargs`` go to :func:`make_split` when a new split is made. A saved split is reused when
    it places every dataset it must (:func:`placed_datasets`: by its own localizer rule, so a
    dataset of scout images only, which no split places, does not count as new).

    Raises:
        SplitError: the saved split does not place every dataset of ``catalog`` or puts one of
            its synthetic datasets outside train (rerun with ``force`` to make a new one), or as
            :func:`make_split`.
    """
    out = Path(out)
    if out.exists() and not force and split_file is None:
        plan = SplitPlan.load(out)
        missing = sorted(placed_datasets(catalog, plan.exclude_localizers) - set(plan.assignments))
        if missing:
            raise SplitError(
                f"existing split {out} does not place datasets {missing[:10]}; the catalog has "
                "changed — rerun with --force to make a new split (this changes the test set)"
            )
        check_synthetic(plan.assignments, synthetic_datasets(catalog), f"existing split {out}")
        return plan, True
    plan = make_split(catalog, split_file=split_file, **kwargs)
    plan.save(out)
    return plan, False
