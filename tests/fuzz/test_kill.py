"""Repeated ``kill -9`` at random moments of real runs; each rerun must end where an
uninterrupted run ends.

For ``catalog``, ``store``, ``predict``, the stream ``build`` and ``fetch`` (the last two against
the loopback NBIA server): an uninterrupted run first, then :data:`KILLS` runs each killed
(SIGKILL to the main process only, as the OOM killer or a lost node would do) at a seeded
random moment, then one run to the end. After every kill the pool workers must be gone within
seconds and no half-written output may sit under a final name; after the last run the outputs
are identical to the uninterrupted run's and no temporary file is left, not even the one planted
before it as a run killed while writing its final file leaves one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fuzz.accounting import leftovers
from tests.fuzz.stages import TREE_CAP_MB, cli, cli_env
from tests.fuzz.watch import Watched, run_watched
from tests.helpers import copy_into, nibabel_file, pydicom_file

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

KILLS = int(os.environ.get("HYPERMODAL_KILLS", "4"))
SEED = int(os.environ.get("HYPERMODAL_FUZZ_SEED", "10"))
#: keys of ``store.json`` that describe the run (time taken, chunks resumed), not the store
RUN_KEYS = {"summary", "created", "seconds", "versions", "catalog", "split_file", "config"}


@pytest.fixture(scope="module")
def kill_corpus(tmp_path_factory) -> Path:
    """Real files, enough of them that each stage runs several chunks: MR and CT slices, a
    10-frame MR, a NIfTI volume, a PNG, and bad files whose errors must survive the kills."""
    from PIL import Image

    root = tmp_path_factory.mktemp("kill-corpus")
    sources = {"MR_small.dcm": 1400, "CT_small.dcm": 300, "emri_small.dcm": 120}
    for name, copies in sources.items():
        data = pydicom_file(name).read_bytes()
        folder = root / name.split(".")[0].lower()
        folder.mkdir()
        for i in range(copies):
            (folder / f"{i:05d}.dcm").write_bytes(data)
    copy_into(nibabel_file("anatomical.nii"), root / "nifti")
    (root / "nifti" / "dataset.json").write_text(json.dumps({"name": "nifti", "label": "MR"}))
    (root / "png").mkdir()
    Image.linear_gradient("L").save(root / "png" / "ramp.png")
    (root / "png" / "dataset.json").write_text(json.dumps({"name": "png", "label": "XR"}))
    copy_into(pydicom_file("MR_truncated.dcm"), root / "mr_small")
    (root / "ct_small" / "empty.dcm").write_bytes(b"")
    return root


def _run(cmd: list[str], timeout_s: float = 600) -> float:
    """Run ``cmd`` to the end; its wall time."""
    out = run_watched(cmd, timeout_s, TREE_CAP_MB, env=cli_env())
    assert out.rc == 0, out.stderr[-3000:]
    return out.seconds


def _kill_repeatedly(
    cmd: list[str],
    window: tuple[float, float],
    rng: random.Random,
    after_kill: Callable[[int], list[str]] = lambda k: [],
) -> list[str]:
    """Start ``cmd`` :data:`KILLS` times and SIGKILL its main process at a random moment of
    ``window`` (seconds after start); the problems seen after each kill."""
    problems: list[str] = []
    landed = 0
    for k in range(KILLS):
        watched = Watched(cmd, timeout_s=600, cap_mb=TREE_CAP_MB, env=cli_env())
        delay = rng.uniform(*window)
        while time.monotonic() - watched.start < delay and watched.proc.poll() is None:
            time.sleep(0.02)
        finished = watched.proc.poll() is not None
        landed += not finished
        watched.kill_main()
        out = watched.wait(grace_s=5.0)
        if out.survivors:
            problems.append(
                f"kill {k} at {delay:.2f} s: processes {out.survivors} outlived the main "
                "process by more than 5 s"
            )
        if finished and out.rc != 0:
            problems.append(f"run {k} ended with {out.rc} before its kill: {out.stderr[-500:]}")
        problems += after_kill(k)
    if not landed:
        problems.append(f"every run finished before its kill (window {window}): nothing tested")
    return problems


def _rows(table: pa.Table) -> list:
    """The rows of ``table`` with NaN made comparable (Arrow's ``equals`` says NaN != NaN)."""

    def fix(v: object) -> object:
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return [fix(row) for row in table.to_pylist()]


def _same_table(a: Path, b: Path) -> bool:
    ta, tb = pq.read_table(a), pq.read_table(b)
    return ta.schema.equals(tb.schema) and _rows(ta) == _rows(tb)


def _same_lines(a: Path, b: Path) -> bool:
    def read(p: Path) -> list[str]:
        return sorted(p.read_text().splitlines()) if p.exists() else []

    return read(a) == read(b)


def _plant_stale_temp(final: Path) -> Path:
    """The temporary file a run killed while writing ``final`` leaves behind, named as
    ``common/files.py`` names them (``.<name>.<pid>.<random>.tmp``, the pid of a dead process)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = final.parent / f".{final.name}.{dead.pid}.k1ll3d.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    return stale


def _window(clean_s: float) -> tuple[float, float]:
    return 0.15 * clean_s, 0.95 * clean_s


def test_killed_catalog_resumes_to_the_same_catalog(kill_corpus, tmp_path):
    rng = random.Random(SEED)
    clean, killed = tmp_path / "clean" / "catalog.parquet", tmp_path / "killed" / "catalog.parquet"
    args = ["--workers", "2", "--no-progress"]
    clean_s = _run(cli("catalog", kill_corpus, "--out", clean, *args))

    def complete_or_absent(k: int) -> list[str]:
        if killed.exists() and not _same_table(killed, clean):
            return [f"after kill {k}: {killed.name} exists but is not the whole catalog"]
        return []

    cmd = cli("catalog", kill_corpus, "--out", killed, *args)
    problems = _kill_repeatedly(cmd, _window(clean_s), rng, complete_or_absent)
    _plant_stale_temp(killed)
    _run(cmd)
    if not _same_table(killed, clean):
        problems.append("the resumed catalog differs from the uninterrupted one")
    if not _same_lines(
        killed.with_name(killed.name + ".errors.jsonl"),
        clean.with_name(clean.name + ".errors.jsonl"),
    ):
        problems.append("the resumed errors file differs from the uninterrupted one")
    summaries = [json.loads(p.with_name(p.name + ".json").read_text()) for p in (clean, killed)]
    for s in summaries:
        s["summary"].pop("seconds", None)
    if summaries[0] != summaries[1]:
        problems.append(f"summaries differ: {summaries}")
    problems += [f"left behind: {n}" for n in leftovers(killed.parent)]
    assert not problems, "\n".join(problems)


def _store_cmd(catalog: Path, split: Path, out: Path) -> list[str]:
    args = ["--size", "32", "--workers", "2", "--no-progress"]
    return cli("store", catalog, "--split", split, "--out", out, *args)


def _same_store(a: Path, b: Path) -> list[str]:
    problems = []
    if (a / "images.u8").read_bytes() != (b / "images.u8").read_bytes():
        problems.append("images.u8 differs")
    if not _same_table(a / "manifest.parquet", b / "manifest.parquet"):
        problems.append("manifest.parquet differs")
    if not _same_lines(a / "errors.jsonl", b / "errors.jsonl"):
        problems.append("errors.jsonl differs")
    metas = [json.loads((p / "store.json").read_text()) for p in (a, b)]
    metas = [{k: v for k, v in m.items() if k not in RUN_KEYS} for m in metas]
    if metas[0] != metas[1]:
        problems.append(f"store.json differs: {metas}")
    return problems


def test_killed_store_resumes_to_the_same_store(kill_corpus, tmp_path):
    rng = random.Random(SEED + 1)
    catalog = tmp_path / "catalog.parquet"
    _run(cli("catalog", kill_corpus, "--out", catalog, "--workers", "2", "--no-progress"))
    datasets = sorted(set(pq.read_table(catalog, columns=["dataset"]).column(0).to_pylist()))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({d: "train" for d in datasets}))
    clean_s = _run(_store_cmd(catalog, split, tmp_path / "clean"))

    def no_false_finish(k: int) -> list[str]:
        store = tmp_path / "killed"
        if (store / "store.json").exists() and _same_store(store, tmp_path / "clean"):
            return [f"after kill {k}: store.json says finished but the store is not whole"]
        return []

    cmd = _store_cmd(catalog, split, tmp_path / "killed")
    problems = _kill_repeatedly(cmd, _window(clean_s), rng, no_false_finish)
    if not (tmp_path / "killed" / "store.json").exists():
        _plant_stale_temp(tmp_path / "killed" / "manifest.parquet")
    _run(cmd)
    problems += _same_store(tmp_path / "killed", tmp_path / "clean")
    problems += [f"left behind: {n}" for n in leftovers(tmp_path / "killed")]
    if (tmp_path / "killed" / "journal").exists():
        problems.append("the journal of the finished store is still there")
    assert not problems, "\n".join(problems)


def test_killed_predict_reruns_to_the_same_table(kill_corpus, tiny_checkpoint, tmp_path):
    rng = random.Random(SEED + 2)
    # files and folders, 226 images: predict is the slowest stage per image
    inputs = [*sorted((kill_corpus / "emri_small").iterdir())[:20], kill_corpus / "nifti"]
    inputs.append(kill_corpus / "png")
    args = ["--model", str(tiny_checkpoint), "--device", "cpu", "--workers", "2", "--no-progress"]
    clean, killed = tmp_path / "clean" / "predict.csv", tmp_path / "killed" / "predict.csv"
    clean.parent.mkdir()
    killed.parent.mkdir()
    clean_s = _run(cli("predict", *inputs, "--out", clean, *args))
    expected = clean.read_bytes()

    def complete_or_absent(k: int) -> list[str]:
        if killed.exists() and killed.read_bytes() != expected:
            return [f"after kill {k}: {killed.name} exists but is not the whole table"]
        return []

    cmd = cli("predict", *inputs, "--out", killed, *args)
    problems = _kill_repeatedly(cmd, _window(clean_s), rng, complete_or_absent)
    _plant_stale_temp(killed)
    _run(cmd)
    if killed.read_bytes() != expected:
        problems.append("the rerun's table differs from the uninterrupted one")
    errors = [p.with_name(p.name + ".errors.jsonl") for p in (killed, clean)]
    if not _same_lines(*errors):
        problems.append("the rerun's errors file differs from the uninterrupted one")
    problems += [f"left behind: {n}" for n in leftovers(killed.parent)]
    assert not problems, "\n".join(problems)


def _placed(folder: Path) -> dict[str, bytes]:
    """The files ``sort`` placed under ``folder`` (not its manifest and series table, not a
    temporary file), by relative path, with their bytes."""
    own = {"sort-manifest.csv", "sort-series.csv"}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in own and ".tmp" not in p.name
    }


def test_killed_sort_resumes_to_the_same_tree(kill_corpus, tiny_checkpoint, tmp_path):
    """``sort --mode copy``: after the kills and one more run, the tree is the uninterrupted
    run's, file for file, with no copy half-written under a final name at any point."""
    rng = random.Random(SEED + 4)
    table = tmp_path / "series.csv"
    model = ["--model", str(tiny_checkpoint), "--device", "cpu"]
    _run(cli("predict", kill_corpus, "--out", table, *model, "--workers", "2", "--no-progress"))
    args = ["--mode", "copy", "--predictions", table, "--workers", "2", "--no-progress"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean_s = _run(cli("sort", kill_corpus, "--to", clean, *args))
    expected = _placed(clean)
    assert len(expected) > 1000  # the corpus's readable files, each placed once

    def only_whole_files(k: int) -> list[str]:
        bad = [rel for rel, data in _placed(killed).items() if expected.get(rel) != data]
        return (
            [f"after kill {k}: {len(bad)} file(s) not as the clean run placed them: {bad[:3]}"]
            if bad
            else []
        )

    cmd = cli("sort", kill_corpus, "--to", killed, *args)
    problems = _kill_repeatedly(cmd, _window(clean_s), rng, only_whole_files)
    _run(cmd)
    got = _placed(killed)
    if got != expected:
        missing, extra = expected.keys() - got.keys(), got.keys() - expected.keys()
        problems.append(f"resumed tree differs: {len(missing)} missing, {len(extra)} extra")
    problems += [f"left behind: {n}" for n in leftovers(killed)]
    temps = [p for p in killed.rglob("*") if ".tmp" in p.name]
    problems += [f"temporary file left: {p}" for p in temps]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------- against the NBIA server
@pytest.fixture(scope="module")
def series(tmp_path_factory):
    from tests.servers.dicom_data import make_corpus

    return make_corpus(tmp_path_factory.mktemp("nbia-corpus"), n_series=6, per_series=2)


def _plan(series, url: str, path: Path) -> Path:
    from tests.servers.dicom_data import plan_records, write_plan

    records = plan_records(series, "tcia", lambda s: url)
    for r in records:
        r["split"] = "train"
    return write_plan(path, records)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the fetch's own bookkeeping, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".fetch" not in p.parts
    }


def test_killed_fetch_resumes_to_the_same_files(series, tmp_path):
    from tests.servers.nbia_server import nbia_server

    rng = random.Random(SEED + 3)
    with nbia_server(series) as srv:
        plan = _plan(series, srv.url, tmp_path / "plan.parquet")
        args = ["--workers", "2", "--no-progress"]
        _run(cli("fetch", plan, "--to", tmp_path / "clean", *args))
        srv.throttle_bps = 60_000  # about a second per series: the kills land mid-download
        cmd = cli("fetch", plan, "--to", tmp_path / "killed", *args)
        problems = _kill_repeatedly(cmd, (1.5, 5.0), rng)
        srv.throttle_bps = None
        _run(cmd)
    if _tree(tmp_path / "killed") != _tree(tmp_path / "clean"):
        problems.append("the resumed fetch holds other files than the uninterrupted one")
    partial = tmp_path / "killed" / ".fetch" / "partial"
    if partial.exists() and any(partial.iterdir()):
        problems.append(f"partial downloads left behind: {list(partial.iterdir())}")
    assert not problems, "\n".join(problems)


def test_killed_stream_build_resumes_to_the_same_store(series, tmp_path):
    from tests.servers.nbia_server import nbia_server

    rng = random.Random(SEED + 4)

    def build(out: Path) -> list[str]:
        args = ["--scratch", out.with_name(out.name + ".scratch"), "--batch-series", "1"]
        return cli("build", plan, "--out", out, *args, "--workers", "1", "--size", "32")

    with nbia_server(series) as srv:
        plan = _plan(series, srv.url, tmp_path / "plan.parquet")
        _run([*build(tmp_path / "clean"), "--no-progress"])
        srv.throttle_bps = 100_000
        cmd = [*build(tmp_path / "killed"), "--no-progress"]
        problems = _kill_repeatedly(cmd, (1.5, 6.0), rng)
        srv.throttle_bps = None
        _run(cmd)
    problems += _same_store(tmp_path / "killed", tmp_path / "clean")
    scratch = tmp_path / "killed.scratch"
    if scratch.exists() and any(scratch.rglob("*.dcm")):
        problems.append("fetched DICOM left in the scratch folder")
    shutil.rmtree(scratch, ignore_errors=True)
    assert not problems, "\n".join(problems)
