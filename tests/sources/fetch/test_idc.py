"""IDC fetches from an S3-compatible loopback server (moto) laid out like IDC's public bucket."""

from __future__ import annotations

import pytest

from hypermodal.sources.fetch import (
    FetchOptions,
    PermanentFetchError,
    RetryPolicy,
    fetch_plan,
    plan_rows,
)
from hypermodal.sources.fetch.idc import IDCSource, parse_s3_url
from tests.servers.dicom_data import make_corpus, plan_records
from tests.servers.s3 import BUCKET, s3_server

pytest.importorskip("moto")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    corpus = make_corpus(tmp_path_factory.mktemp("idc-corpus"), n_series=3, per_series=3)
    with s3_server() as srv:
        urls = {s.series: srv.upload_series(s) for s in corpus}
        yield srv, corpus, urls


def _opts(endpoint: str) -> FetchOptions:
    return FetchOptions(
        workers=2,
        retry=RetryPolicy(attempts=2, backoff_s=0.01),
        timeout_s=10,
        s3_endpoint=endpoint,
        progress=False,
    )


def test_parse_s3_url():
    assert parse_s3_url("s3://idc-open-data/abc-123/*") == ("idc-open-data", "abc-123/")
    assert parse_s3_url("s3://b/x/") == ("b", "x/")
    with pytest.raises(PermanentFetchError):
        parse_s3_url("gs://b/x/*")
    with pytest.raises(PermanentFetchError):
        parse_s3_url("s3://bucket-only")


def test_fetch_from_idc_layout(s3, tmp_path):
    srv, corpus, urls = s3
    assert all(u.startswith(f"s3://{BUCKET}/") and u.endswith("/*") for u in urls.values())
    rows = plan_rows(plan_records(corpus, "idc", lambda s: urls[s.series]))
    summary = fetch_plan(rows, tmp_path, _opts(srv.endpoint))
    assert summary.verified == 3 and summary.failed == 0, summary.failures
    for s in corpus:
        assert sorted(p.stem for p in (tmp_path / "demo" / s.series).iterdir()) == sorted(s.sops)


def test_etags_are_md5_and_checked(s3, tmp_path):
    srv, corpus, urls = s3
    src = IDCSource(_opts(srv.endpoint))
    objects = src.list_series(urls[corpus[0].series])
    assert len(objects) == 3
    row = plan_rows(plan_records(corpus[:1], "idc", lambda s: urls[s.series]))[0]
    download = src.download_series(row, tmp_path / "staging", lambda n: None)
    assert len(download.md5) == 3 and download.server_count == 3


def test_count_mismatch_and_missing_series_fail(s3, tmp_path):
    srv, corpus, urls = s3
    records = plan_records(corpus[:1], "idc", lambda s: urls[s.series])
    records[0]["images"] = 4  # the plan expects one more instance than the bucket holds
    missing = dict(records[0], series="1.2.3.4", images=None, url=f"s3://{BUCKET}/no-such/*")
    summary = fetch_plan(plan_rows([records[0], missing]), tmp_path, _opts(srv.endpoint))
    assert summary.failed == 2 and summary.verified == 0
    assert "plan expects 4" in summary.failures[f"demo/{corpus[0].series}"]
    assert not (tmp_path / "demo").exists()
