"""``predict --dicomweb URL --engine ray``: a real Orthanc on loopback classified by Ray tasks
(a private local Ray instance of 2 CPUs), each batch of series retrieved and classified on a
worker; the table must be the local path's, row for row.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.inference.pacs import classify_dicomweb
from hypermodal.inference.pacs_ray import batches
from tests.servers.pacs_data import loaded_pacs

HAS_RAY = importlib.util.find_spec("ray") is not None


def test_batches_cover_every_series_once_and_feed_every_cpu():
    assert batches(0, 200, 4) == []
    assert batches(10, 200, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]  # one per CPU at least
    assert batches(1000, 200, 2) == [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    for n in range(1, 60):
        for size in (1, 7, 200):
            for cpus in (1, 3, 8):
                cut = batches(n, size, cpus)
                covered = [i for first, stop in cut for i in range(first, stop)]
                assert covered == list(range(n))
                assert all(stop - first <= size for first, stop in cut)
                assert len(cut) >= min(n, cpus)


NO_RAY = "ray is not installed (pip install 'hypermodal[cluster]')"


def on_ray(test):
    """A slow test on a private local Ray instance (skipped where Ray is not installed)."""
    for mark in (
        pytest.mark.slow,
        pytest.mark.timeout(600),
        pytest.mark.skipif(not HAS_RAY, reason=NO_RAY),
    ):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with loaded_pacs(tmp_path_factory.mktemp("pacs")) as loaded:
        yield loaded


@on_ray
def test_ray_tasks_give_the_table_of_the_local_path(pacs, tmp_path):
    srv, corpus = pacs
    local = tmp_path / "local.csv"
    classify_dicomweb(srv.dicomweb, None, None, local, per_series=2, progress=False)
    out = tmp_path / "ray.csv"
    args = ["predict", "--dicomweb", srv.dicomweb, "--out", str(out), "--engine", "ray"]
    result = CliRunner().invoke(
        app, [*args, "--workers", "2", "--per-series", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    a = pd.read_csv(local).set_index("SeriesInstanceUID").sort_index()
    b = pd.read_csv(out).set_index("SeriesInstanceUID").sort_index()
    assert len(a) == len(b) == len(corpus)
    for s in corpus.values():
        assert b.loc[s.series, "prediction"] == s.expected, s.name
    pcols = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(a[pcols].to_numpy(), b[pcols].to_numpy(), atol=1e-5)
    rest = [c for c in a.columns if c not in (*pcols, "confidence")]
    pd.testing.assert_frame_equal(a[rest], b[rest])
    stdout = result.stdout
    summary = json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])
    assert summary["series_classified"] == len(corpus) and summary["series_failed"] == 0


@on_ray
def test_a_batch_that_fails_on_its_worker_gives_its_series_the_reason(pacs, tmp_path):
    """A model the workers cannot load: every task raises; each series gets a row with the
    reason, nothing is written to the server, and the run ends."""
    srv, corpus = pacs
    out = tmp_path / "ray.csv"
    summary = classify_dicomweb(
        srv.dicomweb, None, tmp_path / "missing.onnx.zip", out, per_series=1,
        progress=False, engine="ray", ray_workers=2, batch_series=2,
    )  # fmt: skip
    table = pd.read_csv(out)
    assert len(table) == len(corpus) and table["prediction"].isna().all()
    assert table["error"].str.startswith("batch failed on its worker: ").all()
    assert table["error"].str.contains("missing.onnx.zip").all()
    assert summary.series_failed == len(corpus) and summary.series_classified == 0
