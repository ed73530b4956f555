"""Synthetic (simulated) datasets only ever train: the automatic split, split files, reuse, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.catalog.schema import REQUIRED_COLUMNS
from hypermodal.cli import app
from hypermodal.split import (
    SplitError,
    SplitPlan,
    apply_split,
    make_split,
    split_or_reuse,
    synthetic_datasets,
)


def catalog(spec: dict[str, dict[str, int]], synthetic: set[str]) -> pd.DataFrame:
    """Catalog rows (``spec`` = {dataset: {label: n_images}}) with a ``synthetic`` column."""
    rows = [
        {
            "dataset": ds,
            "label": label,
            "path": f"{ds}/{label}/{i}.dcm",
            "index": 0,
            "localizer": False,
            "synthetic": ds in synthetic,
        }
        for ds, per_class in spec.items()
        for label, n in per_class.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def corpus(seed: int = 4) -> tuple[dict[str, dict[str, int]], set[str]]:
    """Per class five real and five simulated datasets of like sizes: a search that did not know
    which are simulated would spread them over every split."""
    rng = np.random.default_rng(seed)
    spec: dict[str, dict[str, int]] = {}
    sim: set[str] = set()
    for label in ("CT", "MR", "XR"):
        for k in range(5):
            spec[f"real-{label}{k}"] = {label: int(rng.integers(30, 90))}
            spec[f"sim-{label}{k}"] = {label: int(rng.integers(30, 90))}
            sim.add(f"sim-{label}{k}")
    return spec, sim


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_automatic_split_keeps_every_synthetic_dataset_in_train(seed: int, tmp_path: Path) -> None:
    spec, sim = corpus()
    cat = catalog(spec, sim)
    plan = make_split(cat, seed=seed, caps={})
    assert {plan.assignments[d] for d in sim} == {"train"}
    real = [d for d in spec if d not in sim]
    assert {plan.assignments[d] for d in real} == {"train", "validate", "test"}
    selected = apply_split(cat, plan)
    assert not selected.loc[selected["split"] != "train", "synthetic"].any()
    assert plan.synthetic_datasets == 15
    plan.save(tmp_path / "split.json")
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["synthetic_datasets"] == 15
    assert SplitPlan.load(tmp_path / "split.json").synthetic_datasets == 15


def test_synthetic_datasets_do_not_change_where_the_real_ones_go() -> None:
    """The search runs over the real datasets only: adding simulations moves none of them."""
    spec, sim = corpus()
    with_sim = make_split(catalog(spec, sim), seed=5, caps={})
    real_spec = {d: v for d, v in spec.items() if d not in sim}
    without = make_split(catalog(real_spec, set()), seed=5, caps={})
    assert {d: with_sim.assignments[d] for d in real_spec} == without.assignments
    assert without.synthetic_datasets == 0


def test_synthetic_flag_per_dataset_and_missing_column() -> None:
    cat = catalog({"a": {"CT": 3}, "b": {"MR": 2}}, {"b"})
    cat["synthetic"] = cat["synthetic"].astype(object)
    cat.loc[0, "synthetic"] = None  # unknown counts as real
    assert synthetic_datasets(cat) == ["b"]
    assert synthetic_datasets(cat.drop(columns="synthetic")) == []


def test_split_file_putting_a_synthetic_dataset_in_test_is_refused(tmp_path: Path) -> None:
    spec, sim = corpus()
    cat = catalog(spec, sim)
    split_file = tmp_path / "mine.json"
    assignments = {d: "train" for d in spec}
    assignments["real-CT0"], assignments["sim-CT1"] = "validate", "test"
    split_file.write_text(json.dumps(assignments))
    with pytest.raises(
        SplitError, match=r"synthetic dataset\(s\) outside train \(sim-CT1 → test\)"
    ):
        make_split(cat, split_file=split_file)
    # the same plan applied straight to the catalog (the store command's path) is refused too
    with pytest.raises(SplitError, match="sim-CT1"):
        apply_split(cat, SplitPlan.load(split_file))
    assignments["sim-CT1"] = "train"
    split_file.write_text(json.dumps(assignments))
    assert make_split(cat, split_file=split_file).synthetic_datasets == 15


def test_reused_split_that_tests_on_a_dataset_now_synthetic_is_refused(tmp_path: Path) -> None:
    spec = {"a": {"CT": 5}, "b": {"CT": 5}, "c": {"MR": 5}}
    out = tmp_path / "split.json"
    SplitPlan(assignments={"a": "train", "b": "test", "c": "validate"}, method="file").save(out)
    with pytest.raises(SplitError, match="existing split"):
        split_or_reuse(catalog(spec, {"b"}), out)
    plan, reused = split_or_reuse(catalog(spec, set()), out)
    assert reused and plan.assignments["b"] == "test"


def test_cli_split_refuses_in_one_line(tmp_path: Path) -> None:
    spec, sim = corpus()
    cat_path = tmp_path / "catalog.parquet"
    frame = catalog(spec, sim)
    for column in REQUIRED_COLUMNS:  # a catalog file as `hypermodal catalog` writes it
        if column not in frame:
            frame[column] = False if column == "template" else None
    frame.to_parquet(cat_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "dataset,split\n" + "".join(f"{d},{'test' if d == 'sim-MR2' else 'train'}\n" for d in spec)
    )
    runner = CliRunner()
    r = runner.invoke(
        app, ["split", str(cat_path), "--out", str(tmp_path / "s.json"), "--split-file", str(bad)]
    )
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "sim-MR2 → test" in lines[0]
    assert not (tmp_path / "s.json").exists()
    r = runner.invoke(app, ["split", str(cat_path), "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "15 synthetic dataset(s) kept in train" in r.output
    assert json.loads((tmp_path / "s.json").read_text())["synthetic_datasets"] == 15
