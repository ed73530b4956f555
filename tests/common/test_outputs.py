"""Outputs: checked for writability before work, a full disk named as such, no temporary files
left behind by a killed run (issue 10, item 4)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hypermodal.catalog import build_catalog, read_catalog
from hypermodal.cli import app, friendly_errors
from hypermodal.common.errors import DiskFullError, LockedError, OutputError
from hypermodal.common.files import (
    atomic_path,
    check_writable,
    exclusive_lock,
    is_disk_full,
    remove_stale_temps,
    reserve_space,
    write_text_atomic,
)
from tests.common.mounts import fill, read_only_folder, tmpfs
from tests.helpers import REPO, copy_into, pydicom_file

runner = CliRunner()


def one_error_line(result) -> str:
    """The single ``error: …`` line of a command that failed cleanly (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def temps_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    copy_into(pydicom_file("CT_small.dcm"), root / "ct")
    copy_into(pydicom_file("MR_small.dcm"), root / "mr")
    return root


# ------------------------------------------------------------------------- checked up front
def test_a_folder_where_a_file_is_wanted_and_the_reverse(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(tmp_path / "dir")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable(tmp_path / "file", folder=True)
    with pytest.raises(OutputError, match="file is a file, not a folder"):
        check_writable(tmp_path / "file" / "below" / "c.parquet")
    with pytest.raises(OutputError, match=r"the catalog is written as \.parquet"):
        check_writable(tmp_path / "x.csv", suffixes=(".parquet",), what="the catalog")


def test_a_location_that_does_not_exist_yet_is_checked_without_creating_it(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.parquet"
    assert check_writable(target, suffixes=(".parquet",)) == target
    assert check_writable(tmp_path / "new-store", folder=True) == tmp_path / "new-store"
    assert sorted(tmp_path.iterdir()) == []  # the probe is gone, nothing was made


def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        with pytest.raises(OutputError, match="cannot write"):
            check_writable(ro / "c.parquet")
        with pytest.raises(OutputError, match="cannot write"):
            check_writable(ro / "store", folder=True)


def test_catalog_into_a_read_only_folder_fails_before_any_work(
    tmp_path: Path, small_corpus: Path
) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        r = runner.invoke(app, ["catalog", str(small_corpus), "--out", str(ro / "c.parquet")])
        assert "cannot write" in one_error_line(r)


def test_out_naming_a_folder_fails_before_any_work(tmp_path: Path, small_corpus: Path) -> None:
    (tmp_path / "d").mkdir()
    r = runner.invoke(app, ["catalog", str(small_corpus), "--out", str(tmp_path / "d")])
    assert "is a folder" in one_error_line(r)
    assert not (tmp_path / "d.parts").exists()  # the build never started
    # predict checks its outputs before it even reads the checkpoint
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    r = runner.invoke(
        app, ["predict", str(small_corpus), "--model", str(bogus), "--out", str(tmp_path / "d")]
    )
    assert "is a folder" in one_error_line(r)
    r = runner.invoke(
        app,
        ["predict", str(small_corpus), "--model", str(bogus), "--out", str(tmp_path / "p.csv")]
        + ["--series-out", str(tmp_path / "d")],
    )
    assert "is a folder" in one_error_line(r)
    assert not list((tmp_path / "d").iterdir())


def test_store_train_evaluate_into_a_read_only_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with read_only_folder(tmp_path / "ro") as ro:
        # the output is checked first: the missing inputs are not even looked at
        r = runner.invoke(
            app, ["store", str(missing), "--split", str(missing), "--out", str(ro / "store")]
        )
        assert "cannot write" in one_error_line(r)
        r = runner.invoke(app, ["train", str(missing), "--out", str(ro / "run")])
        assert "cannot write" in one_error_line(r)
        r = runner.invoke(app, ["evaluate", str(missing), str(missing), "--out", str(ro / "ev")])
        assert "cannot write" in one_error_line(r)


# ------------------------------------------------------------------------------ a full disk
def _cli_raising(exc: BaseException) -> typer.Typer:
    one = typer.Typer()

    @one.command()
    @friendly_errors
    def boom() -> None:
        raise exc

    return one


def test_a_full_disk_error_is_recognised_whoever_raises_it() -> None:
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb", buffering=0) as fh:
            fh.write(b"x")
    real = info.value
    assert real.errno == errno.ENOSPC and is_disk_full(real)
    assert is_disk_full(OSError("Error writing bytes to file. Detail: No space left on device"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("No space left on device"))
    r = runner.invoke(_cli_raising(real), [])
    assert r.exit_code == 2 and r.stderr.strip() == "error: disk full at the output location"
    named = OSError(errno.ENOSPC, "No space left on device", "/data/out.csv")
    r = runner.invoke(_cli_raising(named), [])
    assert r.exit_code == 2 and r.stderr.strip() == "error: disk full at /data/out.csv"
    r = runner.invoke(_cli_raising(DiskFullError("/data/images.u8")), [])
    assert r.exit_code == 2 and r.stderr.strip() == "error: disk full at /data/images.u8"


def test_an_atomic_write_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk)
        with pytest.raises(DiskFullError) as info:
            write_text_atomic(disk / "catalog.parquet.json", "x" * 100_000)
        assert str(info.value) == f"disk full at {disk / 'catalog.parquet.json'}"
        assert isinstance(info.value, OSError)
        assert temps_under(disk) == []
        (disk / "filler").unlink()
        big = disk / "images.u8"
        big.write_bytes(b"")
        os.truncate(big, 10_000_000)  # sparse: costs nothing until written
        with pytest.raises(DiskFullError, match="images.u8"):
            reserve_space(big, 10_000_000)
        with pytest.raises(DiskFullError):
            fill(disk)
            check_writable(disk / "out.csv")


def test_catalog_onto_a_disk_that_fills_up_says_disk_full(
    tmp_path: Path, small_corpus: Path
) -> None:
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=8192)  # room for the probe and the listing, not for a part file
        r = runner.invoke(
            app,
            ["catalog", str(small_corpus), "--out", str(disk / "c.parquet"), "--no-progress"],
        )
        line = one_error_line(r)
        assert line.startswith(f"error: disk full at {disk}"), line
        assert temps_under(disk) == []


def test_store_onto_a_full_disk_says_so_before_decoding(tmp_path: Path, real_corpus) -> None:
    from hypermodal.labels import ClassVocabulary
    from hypermodal.split import SplitPlan, apply_split
    from hypermodal.store import build_store
    from tests.helpers import SPLIT

    root, _ = real_corpus
    build_catalog([root], tmp_path / "c.parquet", workers=1, progress=False)
    selected = apply_split(
        read_catalog(tmp_path / "c.parquet"), SplitPlan(assignments=SPLIT, method="file")
    )
    with tmpfs(tmp_path / "disk", "1m") as disk:  # 39 images of 224² need 1.9 MB
        with pytest.raises(DiskFullError, match="images.u8"):
            build_store(selected, disk / "store", ClassVocabulary(), workers=1, progress=False)
        assert not (disk / "store" / "journal").exists() or not any(
            (disk / "store" / "journal").iterdir()
        )  # no chunk was decoded
        assert temps_under(disk) == []


@pytest.mark.slow
def test_predict_onto_a_disk_that_fills_up_says_disk_full(
    tmp_path: Path, real_corpus, tiny_checkpoint: Path
) -> None:
    root, _ = real_corpus
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=4096)  # one page: room for the probe, not for a table of 39 images
        r = runner.invoke(
            app,
            ["predict", str(root), "--model", str(tiny_checkpoint)]
            + ["--out", str(disk / "p.csv"), "--no-progress", "--workers", "1"],
        )
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output
        assert r.stderr.strip().splitlines()[-1].startswith(f"error: disk full at {disk}")
        assert temps_under(disk) == []


# ------------------------------------------------------------------- temporary files of a kill
def _killed_inside_atomic_write(target: Path) -> None:
    """A real process killed (SIGKILL) while it writes ``target`` through :func:`atomic_path`."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from hypermodal.common.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert done.returncode == -signal.SIGKILL


def test_stale_temporary_files_are_told_from_live_ones(tmp_path: Path) -> None:
    _killed_inside_atomic_write(tmp_path / "a.json")
    (stale,) = temps_under(tmp_path)
    assert stale.name.startswith(".a.json.")
    legacy = tmp_path / ".b.json.k3j5x_9q.tmp"  # the name older versions gave, no process id
    legacy.write_text("old")
    keep = [tmp_path / "a.json.tmp", tmp_path / ".notes.tmp", tmp_path / "data.csv"]
    for path in keep:
        path.write_text("not ours")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".a.json.{sleeper.pid}.abcd1234.tmp"  # a run still writing
        live.write_text("in progress")
        with atomic_path(tmp_path / "mine.json") as mine:
            mine.write_text("this process")
            assert remove_stale_temps(tmp_path, ["b.json"]) == [legacy]
            assert sorted(remove_stale_temps(tmp_path)) == [stale]
            assert live.exists() and mine.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temps(tmp_path) == [live]
    assert all(p.exists() for p in keep) and (tmp_path / "mine.json").exists()


_KILL_WHILE_MERGING = """
import os, signal, sys
import pyarrow.parquet as pq
from hypermodal.catalog import build_catalog

init, write = pq.ParquetWriter.__init__, pq.ParquetWriter.write_table

def remember(self, where, *args, **kwargs):
    self.where_for_test = str(where)
    init(self, where, *args, **kwargs)

def die_in_the_final_file(self, table, *args, **kwargs):
    write(self, table, *args, **kwargs)
    if ".parts" not in self.where_for_test:  # the catalog itself, not a part
        os.kill(os.getpid(), signal.SIGKILL)

pq.ParquetWriter.__init__ = remember
pq.ParquetWriter.write_table = die_in_the_final_file
build_catalog([sys.argv[1]], sys.argv[2], workers=1, progress=False)
"""


def test_a_catalog_killed_while_writing_its_final_file_is_cleaned_by_the_rerun(
    tmp_path: Path, small_corpus: Path
) -> None:
    out = tmp_path / "out" / "c.parquet"
    done = subprocess.run(
        [sys.executable, "-c", _KILL_WHILE_MERGING, str(small_corpus), str(out)], cwd=REPO
    )
    assert done.returncode == -signal.SIGKILL
    (left,) = temps_under(out.parent)
    assert left.parent == out.parent and left.name.startswith(".c.parquet.")
    assert not out.exists()
    summary = build_catalog([small_corpus], out, workers=1, progress=False)
    assert summary.files_cataloged == 2 and len(read_catalog(out)) == 2
    assert temps_under(tmp_path) == []
    names = sorted(p.name for p in out.parent.iterdir())
    assert "c.parquet.json" in names and "c.parquet.parts" not in names
    assert not [n for n in names if n.startswith(".")], names


# --------------------------------------------------------------------------------- the lock
def test_a_held_lock_is_refused_with_the_holder(tmp_path: Path) -> None:
    held = exclusive_lock(tmp_path / "store" / ".lock", "store")
    try:
        holder = rf"locked by another store run \(pid {os.getpid()}\)"
        with pytest.raises(LockedError, match=holder):
            exclusive_lock(tmp_path / "store" / ".lock", "store")
        with pytest.raises(FileExistsError):  # what callers of the lock always caught
            exclusive_lock(tmp_path / "store" / ".lock", "store")
    finally:
        held.close()
    exclusive_lock(tmp_path / "store" / ".lock", "store").close()
