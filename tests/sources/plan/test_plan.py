"""Corpus planning from the IDC index (real slices of ``idc-index-data``), specs, caps, split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hypermodal.labels import ClassVocabulary
from hypermodal.sources.plan import (
    SpecError,
    apply_caps,
    build_plan,
    idc_index,
    load_spec,
    paper_spec,
    parse_spec,
    plan_from_index,
    write_plan,
)
from hypermodal.split import SPLITS

COLLECTIONS = {
    # collection_id: (dataset name, split)
    "qin_pet_phantom": ("QIN PET Phantom", "train"),
    "pdmr_bl0293_f563": ("PDMR-BL0293-F563", "train"),  # MR, plus Raw Data Storage series
    "cbis_ddsm": ("CBIS-DDSM", "train"),  # MG -> XR
    "rider_phantom_pet_ct": ("RIDER Phantom PET-CT", "validate"),
    "lung_phantom": ("Lung Phantom", "validate"),  # CT, plus analysis-result SEG series
    "covid_19_ar": ("COVID-19-AR", "test"),  # CR/DX/CT
    "ldct_and_projection_data": ("LDCT-and-Projection-data", "test"),  # projections: raw data
}
CAPS = {"CT": 3000, "MR": 1000}


@pytest.fixture(scope="module")
def index_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real collections of the IDC index, every column, as a small Parquet file."""
    import duckdb

    src = idc_index.default_index_path()
    if not src.exists():
        pytest.skip("idc-index-data is not installed")
    out = tmp_path_factory.mktemp("idc") / "slice.parquet"
    ids = ", ".join(f"'{c}'" for c in COLLECTIONS)
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_parquet('{src}') WHERE collection_id IN ({ids})) "
        f"TO '{out}' (FORMAT parquet)"
    )
    return out


def slice_spec(**extra: object) -> dict:
    datasets = [
        {"name": name, "collection_id": cid, "split": split}
        for cid, (name, split) in COLLECTIONS.items()
    ]
    datasets += [
        {"name": "Gone-From-IDC", "source": "tcia", "split": "test", "classes": ["MR"]},
        {
            "name": "Some Chest X-rays",
            "source": "external",
            "split": "validate",
            "access": "registration",
            "published": {"XR": 1234},
            "location": "chest",
        },
    ]
    return {"name": "slice", "caps": dict(CAPS), "datasets": datasets, **extra}


def expected_kept(path: Path) -> pd.DataFrame:
    """Images kept per (dataset, label), computed independently with pandas and a plain loop."""
    df = pd.read_parquet(path)
    df = df[df["analysis_result_id"].isna() & (df["sop_class_name"] != "Raw Data Storage")]
    vocab = ClassVocabulary()
    df = df.assign(label=df["Modality"].map(vocab.label_for_modality)).dropna(subset=["label"])
    df = df.sort_values(["collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"])
    used: dict[tuple[str, str], int] = {}
    kept = []
    for cid, label, n in zip(df["collection_id"], df["label"], df["instanceCount"], strict=True):
        cap = CAPS.get(label, 10**12)
        k = max(0, min(int(n), cap - used.get((cid, label), 0)))
        used[(cid, label)] = used.get((cid, label), 0) + int(n)
        kept.append(k)
    df["kept"] = kept
    df["dataset"] = df["collection_id"].map(lambda c: COLLECTIONS[c][0])
    return df


# ------------------------------------------------------------------------------ spec errors
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["datasets"][0].update(split="trian"), "unknown split 'trian'"),
        (lambda s: s["datasets"].append(dict(s["datasets"][0])), "duplicate dataset"),
        (lambda s: s.update(caps={"CT": -5}), "non-negative integer"),
        (lambda s: s.update(caps={"CT": "many"}), "non-negative integer"),
        (lambda s: s.update(caps={"US": 10}), "unknown class 'US'"),
        (lambda s: s["datasets"][0].pop("collection_id"), "needs a collection_id"),
        (lambda s: s["datasets"][1].update(source="ftp"), "unknown source 'ftp'"),
        (
            lambda s: s["datasets"][1].update(collection_id=s["datasets"][0]["collection_id"]),
            "already planned as dataset",
        ),
        (lambda s: s.update(datasets=[]), "non-empty list"),
        (lambda s: s["datasets"][-1].update(published={"XR": -1}), "non-negative integer"),
    ],
)
def test_spec_errors_say_what_is_wrong(mutate, message):
    spec = slice_spec()
    mutate(spec)
    with pytest.raises(SpecError, match=message):
        parse_spec(spec, origin="test.yaml")


def test_split_aliases_and_load_from_yaml(tmp_path):
    spec = slice_spec()
    spec["datasets"][0]["split"] = "Val"
    path = tmp_path / "corpus.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = load_spec(path)
    assert loaded.datasets[0].split == "validate"
    assert loaded.caps == CAPS
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "missing.yaml")


# --------------------------------------------------------------------- plan on a real slice
def test_plan_counts_match_an_independent_count(index_slice, tmp_path):
    spec = parse_spec(slice_spec())
    plan = plan_from_index(spec, index=index_slice)
    expected = expected_kept(index_slice)
    got = plan.series
    assert len(got) == len(expected)  # raw data, analysis results and SEG/SR rows left out
    assert set(got["SeriesInstanceUID"]) == set(expected["SeriesInstanceUID"])
    for split in SPLITS:
        names = {n for n, s in COLLECTIONS.values() if s == split}
        sub = expected[expected["dataset"].isin(names)]
        want = sub.groupby("label")["kept"].sum().to_dict()
        have = {c: n for c, n in plan.summary["images_catalog"][split].items() if n}
        assert have == {c: int(n) for c, n in want.items() if n}, split
    per = expected.groupby(["dataset", "label"])["kept"].sum()
    for d in plan.summary["per_dataset"]:
        if d["source"] != "external" and d["status"] == "planned":
            for c, n in d["kept_images"].items():
                assert n == int(per.get((d["dataset"], c), 0)), (d["dataset"], c)
    # the Raw Data Storage projections of LDCT and PDMR are not images
    assert "Raw Data Storage" not in set(
        pd.read_parquet(index_slice).pipe(
            lambda x: x[x["SeriesInstanceUID"].isin(got["SeriesInstanceUID"])]
        )["sop_class_name"]
    )


def test_caps_are_taken_in_catalog_order(index_slice):
    spec = parse_spec(slice_spec())
    plan = plan_from_index(spec, index=index_slice)
    df = plan.series
    ldct = df[(df["dataset"] == "LDCT-and-Projection-data") & (df["label"] == "CT")]
    assert ldct["images"].sum() > CAPS["CT"]
    assert ldct["kept_images"].sum() == CAPS["CT"]
    kept = ldct["kept_images"].to_numpy()
    full = ldct["images"].to_numpy()
    # in catalog order: whole series, then at most one partial series, then nothing
    first_short = next(i for i in range(len(kept)) if kept[i] < full[i])
    assert (kept[:first_short] == full[:first_short]).all()
    assert (kept[first_short + 1 :] == 0).all()
    assert ldct["capped"].to_numpy()[first_short:].all()
    order = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID"]
    assert ldct[order].equals(ldct.sort_values(order)[order])
    # PET has no cap
    pt = df[df["label"] == "PT"]
    assert (pt["kept_images"] == pt["images"]).all()


def test_apply_caps_keeps_the_first_images_of_each_dataset_and_class():
    df = pd.DataFrame(
        {
            "dataset": ["a", "a", "a", "b", "a"],
            "label": ["CT", "CT", "MR", "CT", "CT"],
            "images": [4, 4, 9, 4, 4],
        }
    )
    kept = apply_caps(df, {"a": {"CT": 6}, "b": {}})
    assert kept.tolist() == [4, 2, 9, 4, 0]


def test_every_dataset_in_one_split_and_external_listed(index_slice, tmp_path):
    spec = parse_spec(slice_spec())
    plan = plan_from_index(spec, index=index_slice)
    per = {d["dataset"]: d for d in plan.summary["per_dataset"]}
    assert len(per) == len(spec.datasets)
    assert all(d["split"] in SPLITS for d in per.values())
    by_dataset = plan.series.groupby("dataset")["split"].nunique()
    assert (by_dataset == 1).all()
    ext = per["Some Chest X-rays"]
    assert ext["status"] == "external" and ext["published"] == {"XR": 1234}
    assert ext["access"] == "registration"
    assert plan.summary["images_external_published"]["validate"]["XR"] == 1234
    assert per["Gone-From-IDC"]["status"] == "not_in_catalog"
    paths = write_plan(plan, tmp_path / "out", spec)
    table = pd.read_parquet(paths["plan"])
    assert {"split", "label", "kept_images", "capped", "series_aws_url"} <= set(table.columns)
    md = paths["summary_md"].read_text()
    assert "Some Chest X-rays" in md and "Gone-From-IDC" in md
    assert json.loads(paths["summary_json"].read_text())["series"] == len(table)


def test_paper_comparison_is_written_when_the_spec_has_counts(index_slice):
    counts = {
        "classes": ["MR", "CT", "PT", "XR"],
        "train": [1, 2, 3, 4],
        "validate": [1, 2, 3, 4],
        "test": [1, 2, 3, 4],
        "text_totals": {"train": 10, "validate": 10, "test": 10},
    }
    spec = parse_spec(slice_spec(paper_counts=counts))
    plan = plan_from_index(spec, index=index_slice)
    comp = plan.summary["paper_comparison"]
    assert len(comp["rows"]) == 12
    row = next(r for r in comp["rows"] if r["split"] == "validate" and r["class"] == "XR")
    assert row["external_published"] == 1234 and row["paper"] == 4


def test_local_catalog_fills_a_dataset_by_name(index_slice, tmp_path):
    """A TCIA listing (CSV, IDC column names) whose collection is the dataset's name."""
    df = pd.read_parquet(index_slice)
    df = df[df["collection_id"] == "pdmr_bl0293_f563"].assign(collection_id="Gone-From-IDC")
    csv = tmp_path / "tcia.csv"
    df[["collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
        "instanceCount"]].to_csv(csv, index=False)  # fmt: skip
    plan = plan_from_index(parse_spec(slice_spec()), catalog=csv)
    per = {d["dataset"]: d for d in plan.summary["per_dataset"]}
    assert per["Gone-From-IDC"]["status"] == "planned"
    assert per["Gone-From-IDC"]["kept_images"]["MR"] == CAPS["MR"]
    with pytest.raises(ValueError, match="missing"):
        bad = tmp_path / "bad.csv"
        df[["collection_id", "Modality"]].to_csv(bad, index=False)
        plan_from_index(parse_spec(slice_spec()), catalog=bad)


def test_local_catalog_added_to_the_index(index_slice, tmp_path):
    df = pd.read_parquet(index_slice)
    listing = pd.concat(
        [
            df[df["collection_id"] == "pdmr_bl0293_f563"].assign(collection_id="Gone-From-IDC"),
            df[df["collection_id"] == "qin_pet_phantom"].assign(instanceCount=1),  # index wins
        ]
    )
    pq = tmp_path / "tcia.parquet"
    listing.to_parquet(pq)
    plan = plan_from_index(parse_spec(slice_spec()), index=index_slice, catalog=pq, combine=True)
    per = {d["dataset"]: d for d in plan.summary["per_dataset"]}
    assert per["Gone-From-IDC"]["kept_images"]["MR"] == CAPS["MR"]
    alone = plan_from_index(parse_spec(slice_spec()), index=index_slice)
    assert per["QIN PET Phantom"] == {
        **{d["dataset"]: d for d in alone.summary["per_dataset"]}["QIN PET Phantom"]
    }
    assert plan.summary["source"]["kind"] == "IDC index + local catalog"


def test_auto_split_on_the_slice_is_deterministic(index_slice):
    spec = parse_spec(slice_spec())
    series = idc_index.query_series(index_slice)
    a = build_plan(spec, series, auto=True, seed=3)
    b = build_plan(spec, series, auto=True, seed=3)
    pd.testing.assert_frame_equal(a.series, b.series)
    assert a.summary["split"]["method"] == "auto"
    assert "locations_per_class" in a.summary["split"]
    assert set(a.series["split"]) <= set(SPLITS)


# ---------------------------------------------------------------------------- paper spec
def test_paper_spec_lists_every_appendix_dataset():
    spec = paper_spec()
    assert len(spec.datasets) == 103  # Appendix A has 103 rows; the text says 102
    external = {d.name for d in spec.datasets if d.source == "external"}
    assert external == {
        "Chexpert",
        "RSNA Bone Age",
        "NIH 100000 Chest X-ray",
        "MRNet: Knee MRIs",
        "MURA",
        "NDA Osteoarthritis Initiative",
        "BraTS20",
    }
    assert all(d.access for d in spec.datasets if d.source == "external")
    assert all(d.reason for d in spec.datasets if d.source == "tcia")
    assert spec.caps == {"CT": 50_000, "MR": 100_000}
    splits = [d.split for d in spec.datasets]
    assert (splits.count("train"), splits.count("validate"), splits.count("test")) == (74, 13, 16)
    known = set(idc_index.list_collections())
    assert {d.collection_id for d in spec.datasets if d.source == "idc"} <= known


@pytest.mark.slow
def test_plan_paper_end_to_end(tmp_path):
    from hypermodal.cli import app

    started = time.perf_counter()
    result = CliRunner().invoke(app, ["plan", "--paper", "--out", str(tmp_path / "paper")])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 60, elapsed
    summary = json.loads((tmp_path / "paper" / "summary.json").read_text())
    assert summary["datasets"] == 103
    assert summary["datasets_by_status"]["external"] == 7
    comp = summary["paper_comparison"]
    assert {(r["split"], r["class"]) for r in comp["rows"]} == {
        (s, c) for s in SPLITS for c in ("MR", "CT", "PT", "XR")
    }
    assert any("swaps" in n for n in comp["notes"])
    md = (tmp_path / "paper" / "summary.md").read_text()
    assert "Compared with the paper" in md and "1,659,625" in md
    print(f"plan --paper: {elapsed:.1f} s end to end, {summary['plan_seconds_total']:.1f} s plan")


def test_cli_needs_exactly_one_spec(tmp_path):
    from hypermodal.cli import app

    result = CliRunner().invoke(app, ["plan", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "exactly one of --paper and --spec" in result.output
