"""fetch honours the plan's caps as build does (and --dry-run says what the plan promises), a
source that cannot be reached fails at once with one line, and the fetch's own folder is
never an input of catalog or predict."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.sources.fetch import (
    FetchOptions,
    RetryPolicy,
    SourceUnreachableError,
    dry_run,
    fetch_plan,
    plan_rows,
)
from tests.servers.dicom_data import free_port, make_corpus, plan_records, write_plan
from tests.servers.nbia_server import nbia_server

COLLECTIONS = (
    "qin_pet_phantom",
    "pdmr_bl0293_f563",
    "cbis_ddsm",
    "rider_phantom_pet_ct",
    "lung_phantom",
    "covid_19_ar",
    "ldct_and_projection_data",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_series=4, per_series=2)


def _opts(**kw) -> FetchOptions:
    base = {"workers": 2, "retry": RetryPolicy(attempts=4, backoff_s=0.5), "progress": False}
    return FetchOptions(**{**base, "timeout_s": 20, **kw})


def _json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{") :])


# ----------------------------------------------------------------------------------- caps
@pytest.fixture(scope="module")
def small_plan(tmp_path_factory) -> tuple[Path, dict]:
    """A real plan (`hypermodal plan`) of a few IDC collections whose caps leave many series
    with no image."""
    import duckdb

    from hypermodal.sources.plan import idc_index, parse_spec, plan_from_index, write_plan

    src = idc_index.default_index_path()
    if not src.exists():
        pytest.skip("idc-index-data is not installed")
    work = tmp_path_factory.mktemp("plan")
    index = work / "slice.parquet"
    ids = ", ".join(f"'{c}'" for c in COLLECTIONS)
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_parquet('{src}') WHERE collection_id IN ({ids})) "
        f"TO '{index}' (FORMAT parquet)"
    )
    datasets = [{"name": c, "collection_id": c, "split": "train"} for c in COLLECTIONS]
    spec = parse_spec({"name": "capped", "caps": {"CT": 3000, "MR": 1000}, "datasets": datasets})
    plan = plan_from_index(spec, index=index)
    paths = write_plan(plan, work / "out", spec)
    return paths["plan"], plan.summary


def test_dry_run_promises_what_the_plan_promises(small_plan, tmp_path):
    plan, summary = small_plan
    assert summary["series_kept"] < summary["series"]  # the caps zero out series
    report = _json(
        CliRunner().invoke(app, ["fetch", str(plan), "--to", str(tmp_path), "--dry-run"])
    )
    assert report["series"] == summary["series_kept"]
    assert report["size_MB"] == pytest.approx(summary["download_MB"], abs=0.1)
    assert report["capped_out"] == summary["series"] - summary["series_kept"]
    table = pd.read_parquet(plan)
    live = table[table["kept_images"] > 0]
    assert report["images"] == int(live["images"].sum())
    assert report["images_kept"] == int(live["kept_images"].sum())
    listed = {line.split("\t")[1].split("/", 1)[1] for line in report_lines(plan, tmp_path)}
    assert listed == set(live["SeriesInstanceUID"])


def report_lines(plan: Path, target: Path) -> list[str]:
    res = CliRunner().invoke(app, ["fetch", str(plan), "--to", str(target), "--dry-run"])
    return [ln for ln in res.stdout.splitlines() if ln.count("\t") == 3]


def test_series_capped_to_zero_are_not_downloaded(corpus, tmp_path):
    records = plan_records(corpus, "tcia", lambda s: "")
    for rec, kept in zip(records, (2, 0, 1, 0), strict=True):
        rec["kept_images"] = kept
    with nbia_server(corpus) as srv:
        for rec in records:
            rec["url"] = srv.url
        rows = plan_rows(records)
        dry = dry_run(rows, tmp_path)
        assert (dry["series"], dry["capped_out"], dry["images"], dry["images_kept"]) == (2, 2, 4, 3)
        summary = fetch_plan(rows, tmp_path, _opts())
        asked = {series for _, series, _ in srv.requests}
    assert summary.verified == 2 and summary.capped_out == 2 and summary.planned == 4
    fetched = {corpus[0].series, corpus[2].series}
    assert {p.name for p in (tmp_path / "demo").iterdir()} == fetched
    assert asked == fetched  # the capped-out series were never asked for


# -------------------------------------------------------------------------- unreachable
@pytest.mark.parametrize("source", ["dicomweb", "tcia", "idc"])
def test_a_source_that_is_not_listening_stops_the_fetch_at_once(corpus, tmp_path, source):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = {"dicomweb": f"{base}/dicom-web", "tcia": f"{base}/nbia", "idc": None}
    records = plan_records(corpus * 2, source, lambda s: url[source] or f"s3://idc/{s.series}/*")
    for i, rec in enumerate(records):
        rec["series"] = f"{rec['series']}.{i}"  # 8 distinct series
    opts = _opts(s3_endpoint=base if source == "idc" else None)
    start = time.monotonic()
    with pytest.raises(SourceUnreachableError) as err:
        fetch_plan(plan_rows(records), tmp_path, opts)
    assert time.monotonic() - start < 5  # not 8 series × 4 attempts of backoff
    assert "cannot reach" in str(err.value) and str(port) in str(err.value)
    assert not (tmp_path / "demo").exists()


def test_cli_unreachable_plan_source_is_one_line(corpus, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    plan = write_plan(tmp_path / "plan.parquet", plan_records(corpus, "dicomweb", lambda s: url))
    start = time.monotonic()
    res = CliRunner().invoke(
        app, ["fetch", str(plan), "--to", str(tmp_path / "t"), "--no-progress"]
    )
    assert time.monotonic() - start < 5
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach http://127.0.0.1" in lines[0], res.output


# ------------------------------------------------------------------- not inputs, not datasets
def test_the_fetch_folder_is_never_an_input(corpus, tmp_path):
    from hypermodal.catalog import build_catalog, errors_path, read_catalog

    target = tmp_path / "data"
    with nbia_server(corpus[:2]) as srv:
        rows = plan_rows(plan_records(corpus[:2], "tcia", lambda s: srv.url))
        assert fetch_plan(rows, target, _opts()).verified == 2
    state = target / ".fetch"
    assert (state / "journal.sqlite").is_file() and (state / "lock").is_file()
    # what killed runs leave beside the data: temporary files and a half-written download
    (target / "demo" / ".catalog.parquet.4242.abc_1.tmp").write_bytes(b"half")
    (target / "demo" / corpus[0].series / ".x.dcm.part").write_bytes(b"half")
    summary = build_catalog([target], tmp_path / "catalog.parquet", workers=1, progress=False)
    table = read_catalog(tmp_path / "catalog.parquet")
    assert set(table["dataset"]) == {"demo"} and len(table) == 4
    assert not any("/.fetch/" in p or p.endswith((".tmp", ".part")) for p in table["path"])
    errors = errors_path(tmp_path / "catalog.parquet")
    text = errors.read_text() if errors.exists() else ""
    assert ".fetch" not in text and ".tmp" not in text and ".part" not in text
    assert summary.files_excluded == 0 and summary.files_skipped == 0


def test_predict_reads_no_file_of_the_fetch_folder(corpus, tmp_path):
    from hypermodal.inference.inputs import expand_inputs

    target = tmp_path / "data"
    with nbia_server(corpus[:1]) as srv:
        rows = plan_rows(plan_records(corpus[:1], "tcia", lambda s: srv.url))
        assert fetch_plan(rows, target, _opts()).verified == 1
    (target / ".build").mkdir()
    (target / ".build" / "journal.sqlite").write_bytes(b"SQLite format 3\0")
    files = expand_inputs([target])
    assert sorted(p.name for p in files) == sorted(f"{sop}.dcm" for sop in corpus[0].sops)
