"""``predict`` on its other sources and outputs, as a user runs it: ``--dicomweb`` against a real
Orthanc on loopback (filters, answers written back), ``--report`` on real files, and the
one-line refusals of options that do not go together."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from tests.helpers import pydicom_file
from tests.servers.pacs_data import loaded_pacs, series_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with loaded_pacs(tmp_path_factory.mktemp("pacs")) as loaded:
        yield loaded


def _json(output: str) -> dict:
    start = output.index("{")
    return json.loads(output[start : output.rindex("}") + 1])


def test_dicomweb_filters_and_writes_the_answers_back(pacs, tmp_path):
    srv, corpus = pacs
    out = tmp_path / "ct.csv"
    args = ["predict", "--dicomweb", srv.dicomweb, "--out", str(out), "--modality", "CT"]
    result = runner.invoke(app, [*args, "--write-labels", "--per-series", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    ct = [s for s in corpus.values() if s.modality == "CT"]
    assert sorted(table["SeriesInstanceUID"]) == sorted(s.series for s in ct)
    assert set(table["prediction"]) == {"CT"} and (table["retrieved"] <= 2).all()
    summary = _json(result.stdout)
    assert summary["series"] == len(ct) and summary["written"] == len(ct)
    if summary["write_mode"] == "metadata":  # Orthanc before 1.12: no labels
        for s in ct:
            assert series_metadata(srv, s.series, "1024")["prediction"] == "CT"
    others = [s for s in corpus.values() if s.modality != "CT"]
    assert all(series_metadata(srv, s.series, "1024") is None for s in others)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dicomweb", "http://127.0.0.1:9/dicom-web", "x.dcm"], "not both"),
        (["--dicomweb", "http://127.0.0.1:9/dicom-web", "--report", "r"], "--report"),
        (["--write-labels", "x.dcm"], "need --dicomweb"),
        (["--modality", "CT", "x.dcm"], "need --dicomweb"),
        ([], "give the files or folders"),
        (["--dicomweb", "http://127.0.0.1:9/dicom-web", "--study-date", "2024"], "study"),
    ],
)
def test_options_that_do_not_go_together_are_one_line(tmp_path, extra, message):
    result = runner.invoke(app, ["predict", "--out", str(tmp_path / "p.csv"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_report_is_written_beside_the_tables(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom_file(name), src / name)
    out, report = tmp_path / "series.csv", tmp_path / "report"
    result = runner.invoke(
        app, ["predict", str(src), "--out", str(out), "--report", str(report), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    page = (report / "index.html").read_text()
    assert _json(result.stdout)["report"] == str(report / "index.html")
    assert "CT_small.dcm" in page and "MR_small.dcm" in page
    assert sorted(pd.read_csv(report / "series.csv")["prediction"]) == ["CT", "MR"]
    assert "<script>" not in page.lower() and "<script " not in page.lower()
    assert 'src="http' not in page and "url(http" not in page  # nothing loaded from anywhere


def test_report_folder_that_cannot_be_written_stops_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(
        app,
        ["predict", str(pydicom_file("CT_small.dcm")), "--out", str(tmp_path / "p.csv"),
         "--report", str(blocker / "sub")],
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "p.csv").exists()
