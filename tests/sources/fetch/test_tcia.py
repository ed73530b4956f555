"""TCIA (NBIA v4) fetches against a fault-injecting loopback server with real zips of real DICOM."""

from __future__ import annotations

import pytest

from hypermodal.sources.fetch import (
    FAILED,
    VERIFIED,
    FetchOptions,
    Journal,
    RetryPolicy,
    fetch_plan,
    iter_verified,
    plan_rows,
)
from hypermodal.sources.fetch.tcia import NBIAClient, parse_md5_csv
from tests.servers.dicom_data import make_corpus, plan_records
from tests.servers.nbia_server import nbia_server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 4 series of 3 instances: copies of real files with distinct SOPInstanceUIDs
    return make_corpus(tmp_path_factory.mktemp("tcia-corpus"), n_series=4, per_series=3)


@pytest.fixture
def server(corpus):
    with nbia_server(corpus) as srv:
        yield srv


def _opts(**kw) -> FetchOptions:
    base = dict(
        workers=2, retry=RetryPolicy(attempts=3, backoff_s=0.01), timeout_s=1.0, progress=False
    )
    base.update(kw)
    return FetchOptions(**base)


def _rows(corpus, server):
    return plan_rows(plan_records(corpus, "tcia", lambda s: server.url))


def _journal_state(target, key):
    j = Journal(target / ".fetch" / "journal.sqlite")
    try:
        return j.row(key)
    finally:
        j.close()


def test_client_lists_collections_and_series(corpus, server):
    client = NBIAClient(server.url)
    assert client.collections() == ["DEMO"]
    series = client.series(collection="DEMO")
    assert {s["SeriesInstanceUID"] for s in series} == {s.series for s in corpus}
    assert client.series(collection="OTHER") == []


def test_parse_md5_csv_header_optional():
    digest = "d41d8cd98f00b204e9800998ecf8427e"
    assert parse_md5_csv(f"filename,md5hash\n1-001.dcm,{digest}\n") == {"1-001.dcm": digest}
    assert parse_md5_csv(f"1-001.dcm,{digest.upper()}\n") == {"1-001.dcm": digest}


def test_fetch_all_series_verified(corpus, server, tmp_path):
    summary = fetch_plan(_rows(corpus, server), tmp_path, _opts())
    assert summary.verified == 4 and summary.failed == 0
    files = list(iter_verified(tmp_path))
    assert sorted(p.stem for p in files) == sorted(sop for s in corpus for sop in s.sops)
    for s in corpus:
        assert sorted(p.stem for p in (tmp_path / "demo" / s.series).iterdir()) == sorted(s.sops)
    assert not any((tmp_path / ".fetch" / "partial").rglob("*.dcm"))
    # a rerun skips everything and downloads nothing
    before = len(server.requests)
    again = fetch_plan(_rows(corpus, server), tmp_path, _opts())
    assert again.skipped == 4 and again.verified == 0 and len(server.requests) == before


@pytest.mark.parametrize("fault", ["500", "reset", "truncate", "badmd5", "missing", "slow"])
def test_transient_fault_is_retried(corpus, server, tmp_path, fault):
    target = corpus[0]
    server.faults[target.series] = [fault]
    server.slow_s = 2.0  # > timeout_s=1.0
    summary = fetch_plan(_rows(corpus, server)[:1], tmp_path, _opts())
    assert summary.verified == 1, summary.failures
    seen = [f for _, uid, f in server.requests if uid == target.series]
    assert seen == [fault, None]  # faulty answer, then one clean retry
    row = _journal_state(tmp_path, f"demo/{target.series}")
    assert row["state"] == VERIFIED and row["attempts"] == 2
    assert sorted(p.stem for p in (tmp_path / "demo" / target.series).iterdir()) == sorted(
        target.sops
    )


@pytest.mark.parametrize("fault", ["500", "reset", "truncate", "badmd5", "missing"])
def test_persistent_fault_is_reported_never_done(corpus, server, tmp_path, fault):
    target = corpus[1]
    server.always[target.series] = fault
    summary = fetch_plan(_rows(corpus, server), tmp_path, _opts())
    assert summary.failed == 1 and summary.verified == 3
    key = f"demo/{target.series}"
    assert key in summary.failures
    assert not (tmp_path / "demo" / target.series).exists()
    row = _journal_state(tmp_path, key)
    assert row["state"] == FAILED and row["attempts"] == 3 and row["error"]
    # the next run retries it, and succeeds once the server is healthy
    del server.always[target.series]
    again = fetch_plan(_rows(corpus, server), tmp_path, _opts())
    assert again.verified == 1 and again.skipped == 3
    assert _journal_state(tmp_path, key)["state"] == VERIFIED


@pytest.mark.parametrize("fault", ["evil", "symlink"])
def test_malicious_zip_cannot_escape(corpus, server, tmp_path, fault):
    target = corpus[2]
    server.always[target.series] = fault
    out = tmp_path / "out"
    summary = fetch_plan(_rows(corpus, server)[2:3], out, _opts())
    assert summary.failed == 1
    assert "UnsafeArchiveError" in summary.failures[f"demo/{target.series}"]
    # not retried: a malicious archive stays malicious
    assert [f for _, uid, f in server.requests if uid == target.series] == [fault]
    assert not (tmp_path / "evil.dcm").exists() and not (out.parent / "evil.dcm").exists()
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("link.dcm"))
    assert not (out / "demo").exists()


def test_getimage_without_md5(corpus, server, tmp_path):
    summary = fetch_plan(_rows(corpus, server)[:2], tmp_path, _opts(tcia_md5=False))
    assert summary.verified == 2
    assert {e for e, _, _ in server.requests} == {"getImage"}
