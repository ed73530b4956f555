"""The fetch machinery: plan rows, safe zip extraction, verification, journal, dry run, and a
fetch process killed with SIGKILL that resumes to exactly the planned instances."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.sources.fetch import (
    TCIA_DEFAULT_URL,
    Download,
    FetchError,
    FetchOptions,
    RetryPolicy,
    UnsafeArchiveError,
    ZipLimits,
    fetch_plan,
    iter_verified,
    lock_target,
    plan_rows,
    read_plan,
    safe_extract_zip,
    verify_series,
)
from tests.helpers import REPO, pydicom_file
from tests.servers.dicom_data import make_corpus, plan_records, write_plan
from tests.servers.nbia_server import nbia_server


# ------------------------------------------------------------------------------------ plan rows
def test_plan_rows_accept_missing_optional_columns(tmp_path):
    path = tmp_path / "plan.parquet"
    pd.DataFrame(
        {
            "series": ["1.2.3", "1.2.3", "1.2.4"],
            "source": ["TCIA", "tcia", "idc"],
            "url": ["http://x/v4", "http://x/v4", "s3://b/u/*"],
        }
    ).to_parquet(path)
    rows = read_plan(path)
    assert [(r.dataset, r.series, r.source) for r in rows] == [
        ("tcia", "1.2.3", "tcia"),
        ("idc", "1.2.4", "idc"),
    ]  # duplicate row fetched once
    assert rows[0].images is None and rows[0].size_MB is None and rows[0].study is None


def test_plan_rows_read_the_columns_hypermodal_plan_writes(tmp_path):
    path = tmp_path / "plan.parquet"
    pd.DataFrame(
        {
            "dataset": ["LIDC", "CBIS", "Paper"],
            "source": ["idc", "tcia", "external"],
            "PatientID": ["p1", "p2", None],
            "StudyInstanceUID": ["1.1", "2.1", None],
            "SeriesInstanceUID": ["1.1.1", "2.1.1", None],
            "images": [10, 3, None],
            "series_size_MB": [5.0, 1.5, None],
            "series_aws_url": ["s3://idc-open-data/abc/*", None, None],
        }
    ).to_parquet(path)
    skipped: list = []
    idc, tcia = read_plan(path, skipped)
    assert (idc.series, idc.study, idc.patient, idc.url, idc.size_MB, idc.images) == (
        "1.1.1",
        "1.1",
        "p1",
        "s3://idc-open-data/abc/*",
        5.0,
        10,
    )
    assert tcia.url == TCIA_DEFAULT_URL and tcia.dataset == "CBIS"
    assert [s["source"] for s in skipped] == ["external"]


def test_plan_rows_handle_nan_and_reject_bad_rows():
    rows = plan_rows(
        [
            {
                "series": "1.2",
                "source": "idc",
                "url": "s3://b/u/*",
                "images": float("nan"),
                "size_MB": None,
                "dataset": "LIDC",
            }
        ]
    )
    assert rows[0].images is None and rows[0].dataset == "LIDC"
    skipped: list = []
    assert plan_rows([{"series": "1.2", "source": "external", "url": "x"}], skipped) == []
    assert skipped == [{"row": 0, "series": "1.2", "source": "external"}]
    with pytest.raises(ValueError, match="url"):
        plan_rows([{"series": "1.2", "source": "idc"}])
    with pytest.raises(ValueError, match="folder name"):
        plan_rows([{"series": "../x", "source": "idc", "url": "s3://b/u/*"}])


# ----------------------------------------------------------------------------- safe extraction
def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "name",
    ["../escape.dcm", "a/../../escape.dcm", "/tmp/escape.dcm", "..\\escape.dcm", "C:/escape.dcm"],
)
def test_zip_path_escape_is_refused(tmp_path, name):
    archive = _zip(tmp_path / "a.zip", {"ok.dcm": b"fine", name: b"evil"})
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(UnsafeArchiveError):
        safe_extract_zip(archive, dest)
    assert not list(tmp_path.rglob("escape.dcm")) and not Path("/tmp/escape.dcm").exists()
    assert not dest.exists() or not any(dest.iterdir())


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract_zip(archive, tmp_path / "dest")


def test_zip_limits(tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", {"zeros.dcm": bytes(8 << 20)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeArchiveError, match="ratio"):
        safe_extract_zip(bomb, tmp_path / "d1")
    big = _zip(tmp_path / "big.zip", {"a": b"x" * 5000, "b": b"y" * 5000})
    with pytest.raises(UnsafeArchiveError, match="size limit"):
        safe_extract_zip(big, tmp_path / "d2", ZipLimits(max_total_bytes=8000))
    with pytest.raises(UnsafeArchiveError, match="members"):
        safe_extract_zip(big, tmp_path / "d3", ZipLimits(max_members=1))


def test_zip_extracts_to_flat_generated_names(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"dir/1-001.dcm": b"one", "1-002.dcm": b"two"})
    out = safe_extract_zip(archive, tmp_path / "dest")
    assert {k: v.read_bytes() for k, v in out.items()} == {
        "dir/1-001.dcm": b"one",
        "1-002.dcm": b"two",
    }
    assert all(v.parent == tmp_path / "dest" for v in out.values())


def test_truncated_zip_is_a_retryable_error(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"a.dcm": b"x" * 1000})
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(FetchError) as err:
        safe_extract_zip(archive, tmp_path / "dest")
    assert not isinstance(err.value, UnsafeArchiveError)


# -------------------------------------------------------------------------------- verification
def _row(series: str, images: int | None = None):
    return plan_rows([{"series": series, "source": "tcia", "url": "http://x", "images": images}])[0]


def test_verify_series_checks(tmp_path):
    import pydicom

    ct = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(ct, stop_before_pixels=True)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(ct.read_bytes())
    b.write_bytes(ct.read_bytes())
    ok = verify_series(_row(ds.SeriesInstanceUID, 1), Download(files=[a]))
    assert ok == [(a, ds.SOPInstanceUID)]
    with pytest.raises(FetchError, match="appears twice"):
        verify_series(_row(ds.SeriesInstanceUID), Download(files=[a, b]))
    with pytest.raises(FetchError, match="plan expects 2"):
        verify_series(_row(ds.SeriesInstanceUID, 2), Download(files=[a]))
    with pytest.raises(FetchError, match="server lists 3"):
        verify_series(_row(ds.SeriesInstanceUID), Download(files=[a], server_count=3))
    with pytest.raises(FetchError, match="belongs to series"):
        verify_series(_row("1.2.3"), Download(files=[a]))
    with pytest.raises(FetchError, match="MD5"):
        verify_series(_row(ds.SeriesInstanceUID), Download(files=[a], md5={a: "0" * 32}))
    junk = tmp_path / "junk"
    junk.write_bytes(b"not dicom at all" * 10)
    with pytest.raises(FetchError, match="does not parse"):
        verify_series(_row(ds.SeriesInstanceUID), Download(files=[junk]))
    truncated = tmp_path / "trunc"
    truncated.write_bytes(ct.read_bytes()[:400])
    with pytest.raises(FetchError):
        verify_series(_row(ds.SeriesInstanceUID), Download(files=[truncated]))


# -------------------------------------------------------------- journal, dry run, CLI, resume
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 6 series of 3 instances: copies of real files given distinct SOPInstanceUIDs
    return make_corpus(tmp_path_factory.mktemp("fetch-corpus"), n_series=6, per_series=3)


def _opts() -> FetchOptions:
    return FetchOptions(
        workers=2, retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout_s=5, progress=False
    )


def _planned(corpus) -> list[str]:
    return sorted(sop for s in corpus for sop in s.sops)


def test_vanished_series_folder_is_fetched_again(corpus, tmp_path):
    import shutil

    with nbia_server(corpus[:2]) as srv:
        rows = plan_rows(plan_records(corpus[:2], "tcia", lambda s: srv.url))
        assert fetch_plan(rows, tmp_path, _opts()).verified == 2
        shutil.rmtree(tmp_path / "demo" / corpus[0].series)
        again = fetch_plan(rows, tmp_path, _opts())
        assert again.verified == 1 and again.skipped == 1
    assert sorted(p.stem for p in iter_verified(tmp_path)) == _planned(corpus[:2])


def test_cli_dry_run_and_fetch(corpus, tmp_path):
    runner = CliRunner()
    with nbia_server(corpus) as srv:
        plan = write_plan(
            tmp_path / "plan.parquet", plan_records(corpus, "tcia", lambda s: srv.url)
        )
        res = runner.invoke(app, ["fetch", str(plan), "--to", str(tmp_path / "out"), "--dry-run"])
        assert res.exit_code == 0, res.output
        assert all(s.series in res.output for s in corpus)
        report = json.loads(res.stdout[res.stdout.index("{") :])
        assert report["series"] == 6 and report["images"] == 18
        assert report["size_MB"] == pytest.approx(sum(s.size_MB for s in corpus), abs=1e-3)
        assert srv.requests == []  # a dry run downloads nothing
        res = runner.invoke(
            app,
            [
                "fetch",
                str(plan),
                "--to",
                str(tmp_path / "out"),
                "--no-progress",
                "--backoff",
                "0.01",
            ],
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout[res.stdout.index("{") :])["verified"] == 6
        dry = runner.invoke(app, ["fetch", str(plan), "--to", str(tmp_path / "out"), "--dry-run"])
        assert json.loads(dry.stdout[dry.stdout.index("{") :])["already_verified"] == 6
        srv.always[corpus[0].series] = "500"
        res = runner.invoke(
            app,
            [
                "fetch",
                str(plan),
                "--to",
                str(tmp_path / "out2"),
                "--no-progress",
                "--backoff",
                "0.01",
                "--retries",
                "2",
            ],
        )
        assert res.exit_code == 1  # a failed series makes the command fail, loudly
    assert sorted(p.stem for p in iter_verified(tmp_path / "out")) == _planned(corpus)


def test_cli_needs_plan_or_dicomweb(tmp_path):
    res = CliRunner().invoke(app, ["fetch", "--to", str(tmp_path)])
    assert res.exit_code == 2


def _journal_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return dict(db.execute("SELECT state, COUNT(*) FROM series GROUP BY state"))
        finally:
            db.close()
    except sqlite3.Error:
        return {}


@pytest.mark.slow
def test_killed_fetch_resumes_to_exactly_the_plan(corpus, tmp_path):
    """SIGKILL a real ``hypermodal fetch`` process mid-download; the rerun finishes the job."""
    target = tmp_path / "out"
    journal = target / ".fetch" / "journal.sqlite"
    with nbia_server(corpus) as srv:
        srv.throttle_bps = 60_000  # each series takes about a second: the kill lands mid-body
        plan = write_plan(
            tmp_path / "plan.parquet", plan_records(corpus, "tcia", lambda s: srv.url)
        )
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypermodal.cli",
                "fetch",
                str(plan),
                "--to",
                str(target),
                "--workers",
                "2",
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                counts = _journal_counts(journal)
                if counts.get("verified", 0) >= 1 and counts.get("downloading", 0) >= 1:
                    break
                if proc.poll() is not None:
                    pytest.fail("the fetch finished before it could be killed")
                time.sleep(0.05)
            else:
                pytest.fail(f"no progress to interrupt: {_journal_counts(journal)}")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        counts = _journal_counts(journal)
        done_before = counts.get("verified", 0)
        assert 1 <= done_before < 6, counts
        # what is visible after the kill is only whole, verified series
        visible = [d for d in (target / "demo").iterdir()] if (target / "demo").exists() else []
        by_uid = {s.series: s for s in corpus}
        for d in visible:
            assert sorted(p.stem for p in d.iterdir()) == sorted(by_uid[d.name].sops)
        requested_before = {uid for _, uid, _ in srv.requests}

        srv.throttle_bps = None
        srv.requests.clear()
        summary = fetch_plan(read_plan(plan), target, _opts())
        assert summary.failed == 0
        assert summary.skipped == done_before and summary.verified == 6 - done_before
        # verified series were not downloaded again
        assert len({uid for _, uid, _ in srv.requests}) == 6 - done_before
        assert requested_before  # the killed run really was downloading
    files = list(iter_verified(target))
    assert sorted(p.stem for p in files) == _planned(corpus)  # exactly the plan, no duplicates
    assert len(files) == len(set(p.stem for p in files)) == 18
    assert not (target / ".fetch" / "partial").exists()
    assert _journal_counts(journal) == {"verified": 6}


def test_second_fetch_into_the_same_folder_is_refused(tmp_path):
    held = lock_target(tmp_path)
    try:
        with pytest.raises(FileExistsError, match="another hypermodal fetch"):
            fetch_plan([], tmp_path, _opts())
    finally:
        held.close()
    assert fetch_plan([], tmp_path, _opts()).planned == 0
