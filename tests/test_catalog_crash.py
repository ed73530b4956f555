"""A catalog loses only the file that crashed its worker; its workers die with it.

The crashes are real: GDCM aborting on a JPEG-LS file whose Rows/Columns exceed its image,
pylibjpeg-rle panicking on a 16-bit RLE file whose Rows/Columns are under its size, and a
decoder that never returns — inside the catalog's own worker (see
:mod:`tests.common.crash_files` for why an engine puts them there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hypermodal.catalog import build_catalog, errors_path, read_catalog
from hypermodal.common.engines import engine_scope
from hypermodal.common.isolation import DecodeLimits
from hypermodal.common.rejects import read_errors
from tests.common import crash_files as cf
from tests.helpers import REPO, copy_as, make_real_corpus, pydicom_file


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A real corpus and its catalog, built before the crashing files are added to it."""
    root = tmp_path / "corpus"
    make_real_corpus(root)
    clean = tmp_path / "clean.parquet"
    build_catalog([root], clean, workers=2, progress=False)
    return root, clean


def _crash_records(out: Path) -> dict[str, str]:
    return {Path(e["path"]).name: e["reason"] for e in read_errors(errors_path(out))}


def test_a_crashing_file_costs_that_file_and_every_good_file_of_its_chunk_is_read(corpus, tmp_path):
    root, clean = corpus
    # between the good files of one dataset, in the catalog's only chunk
    cf.jls_abort_file(root / "ct-small" / "b-jls-128.dcm")
    cf.rle_panic_file(root / "ct-small" / "c-rle-32.dcm")
    out = tmp_path / "crashed.parquet"
    with cf.NativeDecodingEngine(2) as engine:
        summary = build_catalog([root], out, progress=False, engine=engine)

    reasons = _crash_records(out)
    assert reasons["b-jls-128.dcm"].startswith("decoder crashed: SIGABRT")
    assert reasons["c-rle-32.dcm"].startswith("decoder panicked: index out of bounds")
    before = json.loads(clean.with_name(clean.name + ".json").read_text())["summary"]
    assert summary.files_seen == before["files_seen"] + 2
    assert summary.files_skipped == before["files_skipped"] + 2
    assert summary.files_cataloged == before["files_cataloged"] and summary.reconciles()
    # every good file: the same rows, in the same order, as without the crashing files
    pd.testing.assert_frame_equal(read_catalog(out), read_catalog(clean), check_exact=True)
    others = [e for e in read_errors(errors_path(out)) if "-32" not in e["path"]]
    assert [e for e in others if "-128" not in e["path"]] == read_errors(errors_path(clean))


@pytest.mark.slow
def test_a_file_that_never_finishes_costs_that_file_after_the_time_limit(corpus, tmp_path):
    root, clean = corpus
    copy_as(pydicom_file("CT_small.dcm"), root / "ct-small" / "b-hang.dcm")
    out = tmp_path / "hung.parquet"
    with cf.NativeDecodingEngine(2, limits=DecodeLimits(timeout_s=5)) as engine:
        summary = build_catalog([root], out, chunk_files=4, progress=False, engine=engine)
    assert _crash_records(out)["b-hang.dcm"] == "timed out after 5 s"
    assert summary.reconciles()
    pd.testing.assert_frame_equal(read_catalog(out), read_catalog(clean), check_exact=True)


def test_limits_reach_the_engine_a_stage_opens():
    limits = DecodeLimits(timeout_s=7, memory_mb=1500)
    with engine_scope("local", workers=1, limits=limits) as engine:
        assert engine.limits == limits  # type: ignore[attr-defined]


def test_cli_decoding_limits(corpus, tmp_path):
    from typer.testing import CliRunner

    from hypermodal.cli import app

    root, _ = corpus
    cf.jls_abort_file(root / "ct-small" / "b-jls-128.dcm")
    cf.rle_panic_file(root / "ct-small" / "c-rle-32.dcm")
    out = tmp_path / "cli.parquet"
    args = ["catalog", str(root), "--out", str(out), "--workers", "2", "--no-progress"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--timeout", "30", "--memory-limit", "2048"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["files_seen"]
        == summary["files_cataloged"] + summary["files_excluded"] + (summary["files_skipped"])
    )
    for bad in (["--timeout", "0"], ["--memory-limit", "100"], ["--memory-limit", "-1"]):
        result = runner.invoke(app, [*args, *bad])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "error:" in result.output


@pytest.mark.slow
def test_kill_9_of_a_catalog_leaves_no_worker(corpus):
    """The workers are stuck in C code holding the GIL: only dying with the parent stops them."""
    root, _ = corpus
    script = (
        "import sys\n"
        "from hypermodal.catalog import build_catalog\n"
        "from tests.common.crash_files import StuckEngine\n"
        "with StuckEngine(2) as engine:\n"
        "    build_catalog([sys.argv[1]], sys.argv[2], chunk_files=2, engine=engine,"
        " progress=False)\n"
    )
    out = root.parent / "killed.parquet"
    proc = subprocess.Popen([sys.executable, "-c", script, str(root), str(out)], cwd=REPO)
    try:
        # the forkserver and the two stuck workers under it (plus the resource tracker)
        assert cf.wait_until(lambda: len(cf.descendants(proc.pid)) >= 4, 60)
        children = cf.descendants(proc.pid)
        proc.kill()
        proc.wait()
        assert cf.wait_until(lambda: not any(cf.alive(p) for p in children), 5), children
    finally:
        proc.kill()
    assert not out.exists()
