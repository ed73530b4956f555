"""DICOMweb fetches from a real Orthanc (DICOMweb plugin) on loopback, holding real DICOM."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.sources.fetch import FetchOptions, RetryPolicy, fetch_plan, plan_rows
from hypermodal.sources.fetch.dicomweb import list_series
from tests.servers.dicom_data import make_corpus, plan_records
from tests.servers.orthanc import orthanc_server


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    corpus = make_corpus(tmp_path_factory.mktemp("dw-corpus"), n_series=3, per_series=2)
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as srv:
        for s in corpus:
            for path in s.files:
                srv.upload(path)
        yield srv, corpus


def _opts() -> FetchOptions:
    return FetchOptions(
        workers=2, retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout_s=20, progress=False
    )


def test_qido_lists_every_series(orthanc):
    srv, corpus = orthanc
    rows = list_series(srv.dicomweb, dataset="pacs", page=2)  # page 2: exercises paging
    assert {r.series for r in rows} == {s.series for s in corpus}
    assert all(r.images == 2 and r.study and r.dataset == "pacs" for r in rows)


def test_fetch_plan_from_dicomweb(orthanc, tmp_path):
    srv, corpus = orthanc
    records = plan_records(corpus, "dicomweb", lambda s: srv.dicomweb)
    records[0].pop("study")  # the study is looked up when the plan lacks it
    summary = fetch_plan(plan_rows(records), tmp_path, _opts())
    assert summary.verified == 3 and summary.failed == 0, summary.failures
    for s in corpus:
        assert sorted(p.stem for p in (tmp_path / "demo" / s.series).iterdir()) == sorted(s.sops)


def test_unknown_series_fails(orthanc, tmp_path):
    srv, corpus = orthanc
    records = plan_records(corpus[:1], "dicomweb", lambda s: srv.dicomweb)
    records[0].update(series="1.2.3.999", study=None)
    summary = fetch_plan(plan_rows(records), tmp_path, _opts())
    assert summary.failed == 1 and not (tmp_path / "demo").exists()


def test_cli_takes_a_whole_server(orthanc, tmp_path):
    srv, corpus = orthanc
    runner = CliRunner()
    dry = runner.invoke(
        app, ["fetch", "--dicomweb", srv.dicomweb, "--to", str(tmp_path), "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert all(s.series in dry.output for s in corpus)
    res = runner.invoke(
        app,
        [
            "fetch",
            "--dicomweb",
            srv.dicomweb,
            "--to",
            str(tmp_path),
            "--dataset",
            "pacs",
            "--no-progress",
            "--workers",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["verified"] == 3 and summary["instances"] == 6
    assert sorted(p.name for p in (tmp_path / "pacs").iterdir()) == sorted(s.series for s in corpus)
