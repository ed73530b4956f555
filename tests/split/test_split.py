import json

import numpy as np
import pandas as pd
import pytest

from hypermodal.split import (
    SPLITS,
    SplitError,
    SplitPlan,
    apply_split,
    auto_split,
    class_counts,
    make_split,
    split_or_reuse,
)


def synthetic_catalog(spec: dict[str, dict[str, int]], localizers: int = 0) -> pd.DataFrame:
    """Catalog rows: spec = {dataset: {label: n_images}} (mechanics only, no pixels)."""
    rows = []
    for ds, per_class in spec.items():
        for label, n in per_class.items():
            for i in range(n):
                rows.append(
                    {
                        "dataset": ds,
                        "label": label,
                        "path": f"{ds}/{label}/{i}.dcm",
                        "index": 0,
                        "localizer": i < localizers,
                    }
                )
    return pd.DataFrame(rows)


def many_datasets(seed: int = 1) -> dict[str, dict[str, int]]:
    rng = np.random.default_rng(seed)
    spec = {}
    for k in range(24):
        classes = rng.choice(["CT", "MR", "PT", "XR"], size=rng.integers(1, 3), replace=False)
        spec[f"ds{k:02d}"] = {c: int(rng.integers(20, 400)) for c in classes}
    return spec


def test_every_dataset_lands_in_exactly_one_split():
    cat = synthetic_catalog(many_datasets())
    plan = make_split(cat, seed=3)
    assert set(plan.assignments) == set(cat["dataset"])
    assert set(plan.assignments.values()) <= set(SPLITS)
    selected = apply_split(cat, plan)
    per_ds = selected.groupby("dataset")["split"].nunique()
    assert (per_ds == 1).all()


def test_auto_split_keeps_every_class_in_every_split_and_near_ratios():
    cat = synthetic_catalog(many_datasets())
    plan = make_split(cat, seed=0, caps={})
    q = plan.quality
    assert q["missing"] == []
    for s in SPLITS:
        for c in ("CT", "MR", "PT", "XR"):
            assert q["images"][s][c] > 0
    assert q["max_share_deviation"] < 0.15


def test_auto_split_is_deterministic_for_a_seed():
    counts = class_counts(synthetic_catalog(many_datasets()), caps={})
    a, _ = auto_split(counts, seed=7)
    b, _ = auto_split(counts, seed=7)
    assert a == b


def test_class_with_too_few_datasets_is_reported_missing_not_crashing():
    spec = many_datasets()
    spec = {k: {c: n for c, n in v.items() if c != "PT"} or {"CT": 10} for k, v in spec.items()}
    spec["only_pet"] = {"PT": 50}
    plan = make_split(synthetic_catalog(spec), seed=0)
    missing = {(m["split"], m["class"]) for m in plan.quality["missing"]}
    assert len([m for m in missing if m[1] == "PT"]) == 2  # one PT dataset fills one split


def test_caps_keep_the_first_images_in_catalog_order():
    cat = synthetic_catalog({"a": {"CT": 30, "MR": 12, "XR": 5}, "b": {"CT": 3}})
    plan = SplitPlan(
        assignments={"a": "train", "b": "test"}, method="file", caps={"CT": 10, "MR": 4}
    )
    sel = apply_split(cat, plan)
    a_ct = sel[(sel.dataset == "a") & (sel.label == "CT")]
    assert list(a_ct["path"]) == [f"a/CT/{i}.dcm" for i in range(10)]
    assert (sel[(sel.dataset == "a") & (sel.label == "MR")].shape[0]) == 4
    assert (sel[(sel.dataset == "a") & (sel.label == "XR")].shape[0]) == 5  # uncapped class
    assert (sel[sel.dataset == "b"].shape[0]) == 3


def test_default_caps_are_the_papers():
    plan = make_split(synthetic_catalog({"a": {"CT": 2}, "b": {"CT": 2}, "c": {"CT": 2}}))
    assert plan.caps == {"CT": 50_000, "MR": 100_000}


def test_localizers_are_dropped_by_default_and_kept_on_request():
    cat = synthetic_catalog({"a": {"CT": 10}, "b": {"CT": 10}, "c": {"CT": 10}}, localizers=2)
    plan = make_split(cat, seed=0)
    assert len(apply_split(cat, plan)) == 24
    plan2 = make_split(cat, seed=0, exclude_localizers=False)
    assert len(apply_split(cat, plan2)) == 30


@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "lists"])
def test_explicit_split_file_overrides(tmp_path, fmt):
    cat = synthetic_catalog({"a": {"CT": 5}, "b": {"MR": 5}, "c": {"XR": 5}})
    want = {"a": "test", "b": "train", "c": "validate"}
    p = tmp_path / f"split.{'json' if fmt == 'lists' else fmt}"
    if fmt == "json":
        p.write_text(json.dumps(want))
    elif fmt == "yaml":
        p.write_text("a: test\nb: train\nc: val\n")
    elif fmt == "csv":
        p.write_text("dataset,split\na,test\nb,train\nc,validate\n")
    else:
        p.write_text(json.dumps({"train": ["b"], "validate": ["c"], "test": ["a"]}))
    plan = make_split(cat, split_file=p)
    assert plan.assignments == want
    assert plan.method == "file"


def test_explicit_split_file_must_place_every_dataset(tmp_path):
    cat = synthetic_catalog({"a": {"CT": 5}, "b": {"MR": 5}})
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"a": "train"}))
    with pytest.raises(SplitError, match="does not place 1 dataset"):
        make_split(cat, split_file=p)
    p.write_text(json.dumps({"a": "train", "b": "holdout"}))
    with pytest.raises(SplitError, match="unknown split"):
        make_split(cat, split_file=p)


def test_split_is_written_once_and_reused(tmp_path):
    cat = synthetic_catalog(many_datasets())
    out = tmp_path / "split.json"
    plan, reused = split_or_reuse(cat, out, seed=1)
    assert not reused
    again, reused = split_or_reuse(cat, out, seed=99)  # a different seed does not resplit
    assert reused and again.assignments == plan.assignments and again.hash == plan.hash
    # a catalog with a new dataset refuses silent reuse
    bigger = pd.concat([cat, synthetic_catalog({"new": {"CT": 3}})])
    with pytest.raises(SplitError, match="--force"):
        split_or_reuse(bigger, out)
    fresh, reused = split_or_reuse(bigger, out, force=True)
    assert not reused and "new" in fresh.assignments


def test_tampered_split_file_is_detected(tmp_path):
    cat = synthetic_catalog({"a": {"CT": 5}, "b": {"MR": 5}, "c": {"XR": 5}})
    out = tmp_path / "split.json"
    split_or_reuse(cat, out)
    data = json.loads(out.read_text())
    first = next(iter(data["assignments"]))
    data["assignments"][first] = "train" if data["assignments"][first] != "train" else "test"
    out.write_text(json.dumps(data))
    with pytest.raises(SplitError, match="hash"):
        SplitPlan.load(out)


def test_two_dataset_class_lands_in_train_and_test():
    spec = many_datasets()
    spec = {k: {c: n for c, n in v.items() if c != "XR"} or {"CT": 10} for k, v in spec.items()}
    spec["xr_chest"] = {"XR": 1}
    spec["xr_leg"] = {"XR": 1}
    plan = make_split(synthetic_catalog(spec), seed=0)
    assert {plan.assignments["xr_chest"], plan.assignments["xr_leg"]} == {"train", "test"}


def test_templates_and_phantoms_go_to_train_in_auto_split():
    cat = synthetic_catalog(many_datasets())
    cat["template"] = cat["dataset"].isin(["ds00", "ds01", "ds02"])
    plan = make_split(cat, seed=0)
    assert all(plan.assignments[d] == "train" for d in ("ds00", "ds01", "ds02"))


# ------------------------------------------------------------- body-location constraint
def _location_table() -> tuple[pd.DataFrame, dict[str, dict[str, list[str]]]]:
    """Six equal CT datasets (three chest, three head) and three equal MR datasets of three
    locations: every 2-2-2 split matches the ratios, only some show two CT locations per split."""
    names = [f"ct{i}" for i in range(6)] + ["mr0", "mr1", "mr2"]
    counts = pd.DataFrame({"CT": [100] * 6 + [0] * 3, "MR": [0] * 6 + [50] * 3}, index=names)
    locations = {f"ct{i}": {"CT": ["CHEST" if i < 3 else "HEAD"]} for i in range(6)}
    locations.update({f"mr{i}": {"MR": [loc]} for i, loc in enumerate(["BRAIN", "KNEE", "PELVIS"])})
    return counts, locations


def test_auto_split_reaches_two_locations_per_class_and_split():
    counts, locations = _location_table()
    for seed in range(3):
        assignments, quality = auto_split(
            counts, ratios=(1 / 3, 1 / 3, 1 / 3), seed=seed, locations=locations, iterations=600
        )
        per = quality["locations_per_class"]
        for split in SPLITS:
            assert per[split]["CT"] == ["CHEST", "HEAD"], (seed, split, assignments)
            assert len(per[split]["MR"]) == 1  # one MR dataset per split: the data cannot do two
        assert quality["location_shortfalls"] == []
        assert {(m["split"], m["class"]) for m in quality["location_limits"]} == {
            (s, "MR") for s in SPLITS
        }
        assert quality["missing"] == []


def test_without_locations_the_split_can_put_one_location_in_a_split():
    counts, _ = _location_table()
    # Mechanics check for the test above: shares alone do not force two CT locations.
    _, locations = _location_table()
    one_location = 0
    for seed in range(6):
        assignments, _ = auto_split(counts, ratios=(1 / 3, 1 / 3, 1 / 3), seed=seed, iterations=600)
        for split in SPLITS:
            locs = {
                locations[d]["CT"][0]
                for d, s in assignments.items()
                if s == split and "CT" in locations[d]
            }
            one_location += len(locs) < 2
    assert one_location > 0


def test_location_split_is_deterministic_per_seed():
    counts, locations = _location_table()
    a = auto_split(
        counts, ratios=(1 / 3, 1 / 3, 1 / 3), seed=7, locations=locations, iterations=600
    )
    b = auto_split(
        counts, ratios=(1 / 3, 1 / 3, 1 / 3), seed=7, locations=locations, iterations=600
    )
    assert a == b


def test_location_constraint_reports_shortfall_it_cannot_avoid_under_fixed():
    counts, locations = _location_table()
    fixed = {f"ct{i}": "train" for i in range(3)}  # all chest datasets forced into train
    _, quality = auto_split(
        counts,
        ratios=(1 / 3, 1 / 3, 1 / 3),
        seed=0,
        locations=locations,
        fixed=fixed,
        iterations=600,
    )
    assert quality["locations_per_class"]["train"]["CT"][0] == "CHEST"
    short = {(m["split"], m["class"]) for m in quality["location_shortfalls"]}
    assert ("validate", "CT") in short or ("test", "CT") in short


def test_spread_caps_keep_evenly_spaced_images_across_the_volume():
    cat = synthetic_catalog({"vol": {"MR": 100, "CT": 7}})
    plan = SplitPlan(
        assignments={"vol": "train"}, method="file", caps={"MR": 10, "CT": 50}, cap_order="spread"
    )
    sel = apply_split(cat, plan)
    kept = [int(p.rsplit("/", 1)[1].split(".")[0]) for p in sel[sel.label == "MR"]["path"]]
    assert len(kept) == 10 and kept == sorted(kept)
    assert kept[0] < 10 and kept[-1] >= 90  # from the whole extent, not the first ten
    assert len(sel[sel.label == "CT"]) == 7  # under the cap: all kept
    # hash and round trip
    assert (
        plan.hash
        != SplitPlan(assignments={"vol": "train"}, method="file", caps={"MR": 10, "CT": 50}).hash
    )
    with pytest.raises(SplitError, match="cap_order"):
        SplitPlan(assignments={}, method="file", cap_order="random")


def test_spread_cap_order_survives_save_and_load(tmp_path):
    plan = SplitPlan(assignments={"a": "train"}, method="auto", caps={"MR": 3}, cap_order="spread")
    plan.save(tmp_path / "s.json")
    again = SplitPlan.load(tmp_path / "s.json")
    assert again.cap_order == "spread" and again.hash == plan.hash
