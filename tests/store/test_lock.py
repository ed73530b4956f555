"""One store build per folder: a second one fails at once and changes nothing; a killed build's
temporary files are removed by the next (issue 10, item 4)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hypermodal.catalog import build_catalog, read_catalog
from hypermodal.cli import app
from hypermodal.common.errors import LockedError
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.split import SplitPlan, apply_split
from hypermodal.store import META_FILE, SliceStore, build_store
from hypermodal.store.lock import LOCK_FILE
from tests.helpers import REPO, SPLIT

PRE = PreprocessConfig(size=32)
runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(real_corpus, tmp_path_factory) -> dict:
    """The real corpus catalogued, with its split file: what ``hypermodal store`` reads."""
    root, _ = real_corpus
    work = tmp_path_factory.mktemp("lock-inputs")
    catalog = work / "catalog.parquet"
    build_catalog([root], catalog, workers=1, progress=False)
    plan = SplitPlan(assignments=SPLIT, method="file")
    plan.save(work / "split.json")
    return {
        "catalog": catalog,
        "split": work / "split.json",
        "selected": apply_split(read_catalog(catalog), plan),
    }


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def build(selected, out: Path, **kwargs):
    kwargs.setdefault("workers", 1)
    return build_store(
        selected, out, ClassVocabulary(), PRE, chunk_images=8, progress=False, **kwargs
    )


class Paused:
    """A build in a thread, held after its first chunk until :meth:`release`."""

    def __init__(self, selected, out: Path) -> None:
        self.started, self.go = threading.Event(), threading.Event()
        self.error: BaseException | None = None

        def on_chunk(_: int) -> None:
            self.started.set()
            assert self.go.wait(60)

        def run() -> None:
            try:
                build(selected, out, on_chunk=on_chunk)
            except BaseException as exc:  # reported by release()
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.started.wait(60)

    def release(self) -> None:
        self.go.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def test_a_second_build_into_the_same_folder_fails_at_once_and_changes_nothing(
    inputs: dict, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    first = Paused(inputs["selected"], out)
    try:
        before = listing(out)
        assert LOCK_FILE in before
        with pytest.raises(LockedError, match="locked by another store run"):
            build(inputs["selected"], out)
        with pytest.raises(LockedError):  # --force must not empty a build in progress
            build(inputs["selected"], out, replace=True)
        r = runner.invoke(
            app,
            ["store", str(inputs["catalog"]), "--split", str(inputs["split"])]
            + ["--out", str(out), "--no-progress", "--force"],
        )
        assert r.exit_code == 2, r.output
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("error: ") and "locked by another store run" in line
        assert listing(out) == before
    finally:
        first.release()
    store = SliceStore.open(out)
    assert len(store) == len(inputs["selected"])
    assert LOCK_FILE not in listing(out)  # a finished store holds no lock file


def test_force_rebuilds_a_finished_store_under_the_lock(inputs: dict, tmp_path: Path) -> None:
    out = tmp_path / "store"
    build(inputs["selected"], out)
    images = np.fromfile(out / "images.u8", dtype=np.uint8)
    (out / "stray.txt").write_text("from an earlier build")
    r = runner.invoke(
        app,
        ["store", str(inputs["catalog"]), "--split", str(inputs["split"])]
        + ["--out", str(out), "--size", "32", "--workers", "1", "--no-progress", "--force"],
    )
    assert r.exit_code == 0, r.output
    assert not (out / "stray.txt").exists() and not (out / LOCK_FILE).exists()
    assert np.array_equal(np.fromfile(out / "images.u8", dtype=np.uint8), images)


_KILLED_AT_A_RENAME = """
import os, signal, sys
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.catalog import read_catalog
from hypermodal.split import SplitPlan, apply_split
from hypermodal.store import build_store

replace = os.replace

def killed_at_the_second_journal_marker(src, dst, *args, **kwargs):
    if str(dst).endswith("chunk-000001.json"):  # written and flushed, not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst, *args, **kwargs)

os.replace = killed_at_the_second_journal_marker
catalog, split, out = sys.argv[1:]
selected = apply_split(read_catalog(catalog), SplitPlan.load(split))
build_store(selected, out, ClassVocabulary(), PreprocessConfig(size=32), workers=1,
            chunk_images=8, progress=False)
"""


@pytest.mark.slow
def test_a_killed_builds_temporary_files_are_removed_by_the_next(
    inputs: dict, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_A_RENAME]
        + [str(inputs["catalog"]), str(inputs["split"]), str(out)],
        cwd=REPO,
    )
    assert done.returncode == -signal.SIGKILL
    (left,) = out.rglob("*.tmp")
    assert left.parent.name == "journal" and left.name.startswith(".chunk-000001.json.")
    assert (out / LOCK_FILE).exists()  # the kernel released the lock; the file stays
    summary = build(inputs["selected"], out)
    assert summary.resumed_chunks == 1
    assert not list(out.rglob("*.tmp")) and not (out / LOCK_FILE).exists()
    whole = build(inputs["selected"], tmp_path / "whole")
    assert whole.images_stored == summary.images_stored
    a = np.fromfile(out / "images.u8", dtype=np.uint8)
    assert np.array_equal(a, np.fromfile(tmp_path / "whole" / "images.u8", dtype=np.uint8))


_HOLD_UNTIL = """
import sys, time
from pathlib import Path
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.catalog import read_catalog
from hypermodal.split import SplitPlan, apply_split
from hypermodal.store import build_store

catalog, split, out, started, go = sys.argv[1:]

def hold(_):
    Path(started).touch()
    while not Path(go).exists():
        time.sleep(0.05)

selected = apply_split(read_catalog(catalog), SplitPlan.load(split))
build_store(selected, out, ClassVocabulary(), PreprocessConfig(size=32), workers=1,
            chunk_images=8, progress=False, on_chunk=hold)
"""


@pytest.mark.slow
def test_two_store_processes_into_one_folder(inputs: dict, tmp_path: Path) -> None:
    out, started, go = tmp_path / "store", tmp_path / "started", tmp_path / "go"
    args = [str(inputs["catalog"]), str(inputs["split"])]
    first = subprocess.Popen(
        [sys.executable, "-c", _HOLD_UNTIL, *args, str(out), str(started), str(go)], cwd=REPO
    )
    try:
        for _ in range(600):
            if started.exists() or first.poll() is not None:
                break
            threading.Event().wait(0.05)
        assert started.exists(), "the first build never reached its first chunk"
        before = listing(out)
        second = subprocess.run(
            [sys.executable, "-m", "hypermodal", "store", args[0], "--split", args[1]]
            + ["--out", str(out), "--size", "32", "--no-progress"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert "locked by another store run" in line and f"pid {first.pid}" in line
        assert listing(out) == before
    finally:
        go.touch()
        assert first.wait(120) == 0
    assert (out / META_FILE).exists() and len(SliceStore.open(out)) == len(inputs["selected"])
