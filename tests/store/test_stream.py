"""Stream-through build (``hypermodal build``): plan → fetch → decode → store → delete, per batch.

Against the loopback NBIA server (and moto S3 for IDC rows): the stream build stores the same
bytes as fetch-everything + catalog + ``build_store``; scratch is empty afterwards; a build
interrupted inside or between batches (or SIGKILLed) resumes to an identical store; a series that
cannot be fetched is reported and the rest is stored.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.catalog import build_catalog, read_catalog
from hypermodal.cli import app
from hypermodal.labels import ClassVocabulary
from hypermodal.sources.fetch import FetchOptions, RetryPolicy, fetch_plan, plan_rows
from hypermodal.store import SliceStore, build_store, store_errors
from hypermodal.store import stream as sb
from tests.helpers import REPO
from tests.servers.dicom_data import make_corpus, plan_records, write_plan
from tests.servers.nbia_server import nbia_server

SPLITS = ("train", "validate", "test", "train", "validate", "test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 6 series of 2 instances each: CT_small, MR_small, emri_small (multi-frame), repeated
    return make_corpus(tmp_path_factory.mktemp("stream-corpus"), n_series=6, per_series=2)


@pytest.fixture
def server(corpus):
    with nbia_server(corpus) as srv:
        yield srv


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> Path:
    """An uninterrupted stream build of the standard plan (its bytes do not depend on the URL)."""
    tmp = tmp_path_factory.mktemp("clean")
    with nbia_server(corpus) as srv:
        _stream(pd.DataFrame(_records(corpus, lambda s: srv.url)), tmp / "store", tmp / "s")
    return tmp / "store"


def _opts(**kw) -> FetchOptions:
    base = dict(
        workers=2, retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout_s=5.0, progress=False
    )
    base.update(kw)
    return FetchOptions(**base)


def _records(corpus, url_of, source="tcia", caps=True) -> list[dict]:
    recs = plan_records(corpus, source, url_of)
    for i, r in enumerate(recs):
        r["split"] = SPLITS[i % len(SPLITS)]
        if caps:
            # series 1 keeps one of its images (a capped series), series 4 none (not fetched)
            r["kept_images"] = {1: 1, 4: 0}.get(i, r["images"])
    return recs


def _staged_build(records: list[dict], tmp: Path, opts: FetchOptions) -> SliceStore:
    """The reference: fetch everything, catalog it, set split + caps from the plan, store."""
    target = tmp / "fetched"
    summary = fetch_plan(plan_rows(records), target, opts)
    assert summary.failed == 0
    root = tmp / "root"
    root.mkdir()
    for ds in {r["dataset"] for r in records}:
        os.replace(target / ds, root / ds)
    cat = tmp / "catalog.parquet"
    build_catalog([root], cat, workers=1, progress=False)
    table = read_catalog(cat)
    table["path"] = [Path(p).relative_to(root).as_posix() for p in table["path"]]
    by_series = {r["series"]: r for r in records}
    table["split"] = [by_series[s]["split"] for s in table["series"]]
    rank = table.groupby("series", sort=False).cumcount()
    kept = table["series"].map(lambda s: by_series[s].get("kept_images", 10**9))
    table = table[rank < kept].reset_index(drop=True)
    table["path"] = [str(root / p) for p in table["path"]]
    build_store(table, tmp / "staged", ClassVocabulary(), workers=1, progress=False)
    store = SliceStore.open(tmp / "staged")
    store.table["path"] = [Path(p).relative_to(root).as_posix() for p in store.table["path"]]
    return store


def _comparable(value):
    """A manifest value that compares by content (stats arrays by bytes, NaN equal to NaN)."""
    if isinstance(value, np.ndarray):
        return np.asarray(value, dtype=np.float32).tobytes()
    if isinstance(value, float) and np.isnan(value):
        return "NaN"
    return value


def _by_key(store: SliceStore) -> dict[tuple[str, int], tuple[dict, bytes]]:
    out = {}
    for i, rec in enumerate(store.table.to_dict("records")):
        rec = {k: _comparable(v) for k, v in rec.items()}
        out[(rec["path"], int(rec["index"]))] = (rec, np.asarray(store.images[i]).tobytes())
    return out


def _assert_same_store(a: SliceStore, b: SliceStore) -> None:
    assert list(a.table.columns) == list(b.table.columns)
    ka, kb = _by_key(a), _by_key(b)
    assert ka.keys() == kb.keys()
    for key in ka:
        assert ka[key][0] == kb[key][0], key
        assert ka[key][1] == kb[key][1], key  # byte-identical pixels
    assert a.meta["vocabulary"] == b.meta["vocabulary"]
    assert a.meta["preprocess"] == b.meta["preprocess"]


def _stream(plan, out: Path, scratch: Path, **kw) -> sb.StreamBuildSummary:
    kw.setdefault("fetch_options", _opts())
    return sb.stream_build(plan, out, scratch=scratch, workers=1, progress=False, **kw)


def _assert_scratch_empty(scratch: Path) -> None:
    assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.rglob("*"))


# --------------------------------------------------------------------------------------- tests
def test_read_stream_plan_split_caps_and_skips():
    df = pd.DataFrame(
        {
            "SeriesInstanceUID": ["1.1", "1.1", "1.2", "1.3"],
            "source": ["tcia", "tcia", "external", "idc"],
            "series_aws_url": [None, None, None, "s3://b/u/*"],
            "dataset": ["A", "A", "B", "C"],
            "split": ["val", "val", "test", None],
            "kept_images": [3, 3, 10, np.nan],
        }
    )
    skipped: list[dict] = []
    rows = sb.read_stream_plan(df, skipped)
    assert [(r.key, r.split, r.kept_images) for r in rows] == [
        ("A/1.1", "validate", 3),
        ("C/1.3", None, None),
    ]
    assert [s["series"] for s in skipped] == ["1.2"]
    with pytest.raises(ValueError, match="unknown split"):
        sb.read_stream_plan(df.assign(split="bogus"))


@pytest.mark.parametrize("prefetch", [False, True], ids=["one-batch", "prefetch"])
def test_stream_build_equals_staged_build(corpus, server, tmp_path, prefetch):
    records = _records(corpus, lambda s: server.url)
    plan = write_plan(tmp_path / "plan.parquet", records)
    scratch = tmp_path / "scratch"
    summary = _stream(plan, tmp_path / "store", scratch, batch_series=2, prefetch=prefetch)
    assert summary.reconciles() and summary.series_failed == 0
    assert summary.series_capped_out == 1 and summary.series_stored == 5
    assert summary.images_capped >= 1
    assert summary.images_stored == summary.images_planned > 0
    assert summary.batches == 3  # 5 fetchable series in batches of 2
    _assert_scratch_empty(scratch)
    assert not (tmp_path / "store" / ".build").exists()
    store = SliceStore.open(tmp_path / "store")
    assert list(store.table.columns) == [
        "dataset", "patient", "study", "series", "path", "index", "label", "modality",
        "body_part", "rows", "columns", "localizer", "template", "format", "split",
        "frames", "pixel_spacing", "slice_thickness", "bits_stored", "samples", "sop_class",
        "synthetic", "simulated_from", "label_index", "ok", "stats",
    ]  # fmt: skip
    assert store.meta["summary"]["images_stored"] == len(store)
    stored = set(store.table["series"])
    assert list(dict.fromkeys(store.table["series"])) == [
        r["series"] for r in records if r["series"] in stored
    ]  # plan order
    # the capped-out series was never requested; the capped one keeps its first image
    assert corpus[4].series not in {uid for _, uid, _ in server.requests}
    staged = _staged_build(records, tmp_path / "ref", _opts())
    _assert_same_store(store, staged)
    assert (store.table["series"] == corpus[1].series).sum() == 1
    # peak scratch is about one batch of DICOM (+ its 224² batch store), not the corpus
    one_batch = max(corpus[i].size_MB + corpus[i + 1].size_MB for i in range(5)) * 1e6
    batches = 2 if prefetch else 1
    assert 0 < summary.peak_scratch_bytes < batches * one_batch + 3 * 224 * 224 * 40


def test_failed_series_is_reported_and_the_rest_stored(corpus, server, tmp_path):
    records = _records(corpus, lambda s: server.url, caps=False)
    server.always[corpus[2].series] = "missing"  # one instance short, on every attempt
    summary = _stream(records_plan := pd.DataFrame(records), tmp_path / "store", tmp_path / "s")
    assert summary.series_failed == 1 and summary.series_stored == 5
    assert list(summary.failures) == [f"demo/{corpus[2].series}"]
    store = SliceStore.open(tmp_path / "store")
    assert corpus[2].series not in set(store.table["series"])
    assert set(store.table["series"]) == {s.series for s in corpus} - {corpus[2].series}
    errors = store_errors(tmp_path / "store")
    assert [e["stage"] for e in errors] == ["fetch"] and "instances" in errors[0]["reason"]
    assert store.meta["summary"]["failures"] == summary.failures
    _assert_scratch_empty(tmp_path / "s")
    assert len(records_plan) == 6


class Boom(RuntimeError):
    pass


def _stop_at(step: str, on_call: int):
    """An ``on_step`` hook that raises :class:`Boom` the ``on_call``-th time a batch passes
    ``step``: the build stops there as if it were interrupted."""
    assert step in sb.STEPS
    calls = [0]

    def on_step(name: str, batch: int) -> None:
        if name == step:
            calls[0] += 1
            if calls[0] == on_call:
                raise Boom(f"{step} of batch {batch}")

    return on_step


@pytest.mark.parametrize(
    "where",
    [
        ("fetched", 2),  # batch 1 fetched, nothing stored yet
        ("appended", 2),  # batch 1's pixels written past the commit, not committed
        ("written", 2),  # batch 1 complete except its commit
        ("committed", 1),  # batch 0 committed, its DICOM not yet deleted
    ],
    ids=["after-fetch", "after-pixels", "before-commit", "between-batches"],
)
@pytest.mark.parametrize("prefetch", [False, True], ids=["", "prefetch"])
def test_interrupted_build_resumes_to_an_identical_store(
    corpus, server, tmp_path, clean, where, prefetch
):
    records = _records(corpus, lambda s: server.url)
    plan = write_plan(tmp_path / "plan.parquet", records)

    name, call = where
    out, scratch = tmp_path / "store", tmp_path / "s1"
    with pytest.raises(Boom):
        _stream(plan, out, scratch, batch_series=2, prefetch=prefetch, on_step=_stop_at(name, call))
    assert not (out / "store.json").exists()
    db = sqlite3.connect(out / ".build" / "journal.sqlite")
    committed_rows = db.execute("SELECT COALESCE(MAX(hi), 0) FROM batches").fetchone()[0]
    db.close()
    on_disk = (out / "images.u8").stat().st_size
    if name == "appended":  # pixels of an uncommitted batch lie past the commit
        assert on_disk > committed_rows * 224 * 224
    server.requests.clear()
    summary = _stream(plan, out, scratch, batch_series=2)
    assert summary.reconciles() and summary.resumed_batches >= 1
    a, b = SliceStore.open(out), SliceStore.open(clean)
    assert (out / "images.u8").read_bytes() == (clean / "images.u8").read_bytes()
    pd.testing.assert_frame_equal(a.table, b.table)  # no duplicates, no gaps, same order
    assert summary.images_stored == b.meta["summary"]["images_stored"]
    _assert_scratch_empty(scratch)
    # committed series are not downloaded again; a fetched, uncommitted batch is reused
    refetched = {uid for _, uid, _ in server.requests}
    assert corpus[0].series not in refetched and corpus[1].series not in refetched
    if name in ("appended", "written", "fetched"):
        assert corpus[2].series not in refetched


def test_keep_dicom_leaves_a_fetch_target(corpus, server, tmp_path):
    records = _records(corpus[:2], lambda s: server.url, caps=False)
    scratch = tmp_path / "scratch"
    _stream(pd.DataFrame(records), tmp_path / "store", scratch, keep_dicom=True)
    kept = sorted(p.stem for p in (scratch / "fetch").rglob("*.dcm") if ".fetch" not in str(p))
    assert kept == sorted(sop for s in corpus[:2] for sop in s.sops)
    store = SliceStore.open(tmp_path / "store")
    assert all((Path(store.meta["dicom_root"]) / p).exists() for p in store.table["path"])


def test_cli_build(corpus, server, tmp_path):
    plan = write_plan(tmp_path / "plan.parquet", _records(corpus[:3], lambda s: server.url))
    result = CliRunner().invoke(
        app,
        [
            "build", str(plan), "--out", str(tmp_path / "store"), "--batch-series", "2",
            "--workers", "1", "--size", "64", "--retries", "1", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = SliceStore.open(tmp_path / "store")
    assert store.images.shape[1:] == (64, 64) and len(store) > 0
    assert not (tmp_path / "store.scratch").exists()  # the default scratch, removed when done
    assert store.meta["config"]["batch_series"] == 2 and store.meta["built_by"] == "stream"
    again = CliRunner().invoke(app, ["build", str(plan), "--out", str(tmp_path / "store")])
    assert again.exit_code == 0 and "already a finished store" in again.output


def test_idc_rows_from_s3(tmp_path):
    pytest.importorskip("moto")
    from tests.servers.s3 import s3_server

    corpus = make_corpus(tmp_path / "corpus", n_series=3, per_series=2, dataset="idc")
    with s3_server() as srv:
        urls = {s.series: srv.upload_series(s) for s in corpus}
        records = _records(corpus, lambda s: urls[s.series], source="idc", caps=False)
        opts = _opts(s3_endpoint=srv.endpoint)
        _stream(pd.DataFrame(records), tmp_path / "store", tmp_path / "s", fetch_options=opts)
        staged = _staged_build(records, tmp_path / "ref", opts)
    _assert_same_store(SliceStore.open(tmp_path / "store"), staged)
    _assert_scratch_empty(tmp_path / "s")


def _committed(journal: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=0.2)
        try:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkilled_build_resumes_to_an_identical_store(corpus, server, tmp_path, clean):
    """SIGKILL a real ``hypermodal build`` after its first batch; the rerun completes it."""
    records = _records(corpus, lambda s: server.url)
    plan = write_plan(tmp_path / "plan.parquet", records)
    out, scratch = tmp_path / "store", tmp_path / "s1"
    server.throttle_bps = 100_000  # each series takes a while: the kill lands mid-build
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    cmd = [
        sys.executable, "-m", "hypermodal.cli", "build", str(plan), "--out", str(out),
        "--scratch", str(scratch), "--batch-series", "1", "--workers", "1", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / ".build" / "journal.sqlite"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if _committed(journal) >= 1:
                time.sleep(0.3)  # into the next batch's download
                break
            if proc.poll() is not None:
                pytest.fail("the build finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no batch was committed in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 1 <= _committed(journal) < 5 and not (out / "store.json").exists()
    server.throttle_bps = None
    summary = _stream(plan, out, scratch, batch_series=1)
    assert summary.resumed_batches >= 1
    assert (out / "images.u8").read_bytes() == (clean / "images.u8").read_bytes()
    pd.testing.assert_frame_equal(SliceStore.open(out).table, SliceStore.open(clean).table)
    _assert_scratch_empty(scratch)


def test_plan_without_split_needs_a_default(corpus, server, tmp_path):
    records = plan_records(corpus[:1], "tcia", lambda s: server.url)  # no split, no caps
    with pytest.raises(ValueError, match="no split"):
        _stream(pd.DataFrame(records), tmp_path / "a", tmp_path / "s")
    assert not server.requests  # refused before downloading anything
    summary = _stream(pd.DataFrame(records), tmp_path / "b", tmp_path / "s2", default_split="test")
    store = SliceStore.open(tmp_path / "b")
    assert set(store.table["split"]) == {"test"} and summary.images_expected is None
    assert len(store.rows("test")) == summary.images_stored > 0


def test_store_file_changed_outside_the_build_is_refused(corpus, server, tmp_path):
    plan = pd.DataFrame(_records(corpus[:3], lambda s: server.url, caps=False))
    out = tmp_path / "store"
    with pytest.raises(Boom):  # batches 0 and 1 committed
        _stream(plan, out, tmp_path / "s", batch_series=1, on_step=_stop_at("committed", 2))
    with open(out / "images.u8", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(sb.StoreError, match="committed rows"):
        _stream(plan, out, tmp_path / "s", batch_series=1)
