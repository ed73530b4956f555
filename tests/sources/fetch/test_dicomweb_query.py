"""``fetch --dicomweb`` with QIDO-RS filters against a real Orthanc holding real DICOM; instances
without a file meta header; servers that are not there or not DICOMweb roots."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.sources.fetch import SeriesQuery
from hypermodal.sources.fetch.dicomweb import list_series, query_server
from hypermodal.sources.fetch.instance import looks_like_dataset, read_instance
from hypermodal.sources.fetch.wado import boundary_of, iter_parts
from tests.servers.dicom_data import free_port
from tests.servers.pacs_data import loaded_pacs


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with loaded_pacs(tmp_path_factory.mktemp("pacs")) as loaded:
        yield loaded


def _names(found, corpus) -> set[str]:
    by_uid = {s.series: name for name, s in corpus.items()}
    return {by_uid[s.series] for s in found}


def test_filters_select_on_the_server(pacs):
    srv, corpus = pacs
    q = SeriesQuery.from_options
    assert _names(query_server(srv.dicomweb), corpus) == set(corpus)
    assert _names(query_server(srv.dicomweb, q(modality="ct")), corpus) == {"ct", "multi"}
    assert _names(query_server(srv.dicomweb, q(modality="CT,MR")), corpus) == {
        "ct",
        "multi",
        "mr",
        "bare",
    }
    dated = q(study_date="20200101-20211231")
    assert _names(query_server(srv.dicomweb, dated), corpus) == {"ct", "mr"}
    assert _names(query_server(srv.dicomweb, q(study_date="20220101-")), corpus) == {"bare"}
    assert _names(query_server(srv.dicomweb, q(study_date="20200105")), corpus) == {"ct"}
    assert _names(query_server(srv.dicomweb, q(patient="HM-MR,HM-BARE")), corpus) == {
        "mr",
        "bare",
    }
    study = q(study=corpus["multi"].study)
    assert _names(query_server(srv.dicomweb, study), corpus) == {"multi"}
    both = q(modality="MR", patient="HM-CT")
    assert query_server(srv.dicomweb, both) == []


def test_limit_takes_the_first_or_a_seeded_sample(pacs):
    srv, corpus = pacs
    everything = query_server(srv.dicomweb)
    first = query_server(srv.dicomweb, SeriesQuery(limit=2, page=1))  # paging stops early
    assert [s.series for s in first] == [s.series for s in everything[:2]]
    a = query_server(srv.dicomweb, SeriesQuery.from_options(limit=3, sample="random", seed=4))
    b = query_server(srv.dicomweb, SeriesQuery.from_options(limit=3, sample="random", seed=4))
    assert len(a) == 3 and [s.series for s in a] == [s.series for s in b]
    seeds = {
        tuple(
            s.series
            for s in query_server(srv.dicomweb, SeriesQuery(limit=2, sample="random", seed=k))
        )
        for k in range(6)
    }
    assert len(seeds) > 1  # the seed chooses


def test_series_info_carries_what_qido_says(pacs):
    srv, corpus = pacs
    found = {s.series: s for s in query_server(srv.dicomweb)}
    ct = found[corpus["ct"].series]
    assert (ct.study, ct.patient, ct.modality) == (corpus["ct"].study, "HM-CT", "CT")
    assert ct.study_date == "20200105" and ct.instances == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"study_date": "2020-01-01"}, "YYYYMMDD"),
        ({"study_date": "20201301-20201231"}, "not a calendar date"),
        ({"study_date": "20211231-20200101"}, "is after"),
        ({"modality": "C T"}, "not a DICOM modality"),
        ({"study": "1.2.abc"}, "not a StudyInstanceUID"),
        ({"patient": "P*"}, "no wildcards"),
        ({"limit": 0}, "at least 1"),
        ({"sample": "every"}, "first, random"),
    ],
)
def test_bad_filters_are_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        SeriesQuery.from_options(**options)


def test_multipart_parts_survive_any_chunking():
    parts = [b"\x08\x00" + bytes(range(256)) * 7, b"", b"--not-the-boundary\r\n\r\nx" * 3]
    boundary = b"b0undary-123"
    body = (
        b"preamble\r\n"
        + b"".join(
            b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
            for p in parts
        )
        + b"--"
        + boundary
        + b"--\r\n"
    )
    for size in (1, 3, 7, 64, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(iter_parts(chunks, boundary)) == parts
    assert boundary_of('multipart/related; type="application/dicom"; boundary="abc"') == b"abc"
    assert boundary_of("application/dicom") is None


def test_only_real_datasets_are_read_without_a_meta_header():
    from hypermodal.common.errors import FetchError

    assert not looks_like_dataset(b"not dicom at all, not even close")
    assert not looks_like_dataset(b"\x09\x00\x08\x00CS\x00\x00")  # odd group
    with pytest.raises(FetchError, match="does not parse"):
        read_instance(b"<html>404</html>" * 10, "junk")


def test_cli_fetches_filtered_series_with_bare_instances(pacs, tmp_path):
    import pydicom

    srv, corpus = pacs
    res = CliRunner().invoke(
        app,
        ["fetch", "--dicomweb", srv.dicomweb, "--to", str(tmp_path), "--dataset", "pacs",
         "--modality", "MR", "--no-progress", "--retries", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["verified"] == 2 and summary["failed"] == 0  # one retry at most: no failures
    assert summary["instances"] == len(corpus["mr"].files) + len(corpus["bare"].files)
    bare = tmp_path / "pacs" / corpus["bare"].series
    files = sorted(bare.iterdir())
    assert len(files) == 2 and corpus["bare"].bare
    for path in files:
        assert path.read_bytes()[128:132] == b"DICM"  # written with the meta header it lacked
        ds = pydicom.dcmread(path)
        assert ds.pixel_array.shape == (64, 64) and f"{ds.SOPInstanceUID}.dcm" == path.name
    assert sorted(p.name for p in (tmp_path / "pacs").iterdir()) == sorted(
        [corpus["mr"].series, corpus["bare"].series]
    )


def test_cli_dry_run_lists_only_the_query(pacs, tmp_path):
    srv, corpus = pacs
    res = CliRunner().invoke(
        app,
        ["fetch", "--dicomweb", srv.dicomweb, "--to", str(tmp_path), "--dry-run",
         "--study-date", "20200101-20211231"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["series"] == 2 and report["images"] == 9
    assert corpus["ct"].series in res.stdout and corpus["bare"].series not in res.stdout
    rows = list_series(srv.dicomweb, query=SeriesQuery.from_options(patient="HM-CT"))
    assert [r.series for r in rows] == [corpus["ct"].series] and rows[0].images == 5


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


def test_cli_a_server_that_is_not_listening_is_one_line_at_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    start = time.monotonic()
    res = CliRunner().invoke(app, ["fetch", "--dicomweb", url, "--to", str(tmp_path / "t")])
    line = _one_error_line(res)
    assert time.monotonic() - start < 5
    assert "cannot reach http://127.0.0.1" in line and "connection refused" in line


def test_cli_a_url_without_dicom_web_says_so(pacs, tmp_path):
    srv, _ = pacs
    res = CliRunner().invoke(app, ["fetch", "--dicomweb", srv.base, "--to", str(tmp_path)])
    line = _one_error_line(res)
    assert "DICOMweb root" in line and srv.base in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dicomweb", "http://127.0.0.1:1/dicom-web", "--study-date", "2020"], "YYYYMMDD"),
        (["--dicomweb", "http://127.0.0.1:1/dicom-web", "--limit", "0"], "at least 1"),
        (["plan.parquet", "--modality", "CT"], "select series of --dicomweb"),
    ],
)
def test_cli_bad_filter_options_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(app, ["fetch", *args, "--to", str(tmp_path)])
    assert message in _one_error_line(res)
