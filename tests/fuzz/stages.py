"""The three stages over a corpus, each as the real CLI in a watched subprocess.

:func:`run_catalog`, :func:`run_store` and :func:`run_predict` start ``python -m hypermodal.cli``
with a time limit and a memory cap on its whole session (:mod:`tests.fuzz.watch`), then check
its outputs (:mod:`tests.fuzz.accounting`). Each returns a :class:`StageResult` whose
``problems`` say, one line each, what went wrong: a non-zero exit, a hang, a process over the
memory bound, workers that outlived the stage, a traceback printed for a handled file, or a file
not accounted for.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.fuzz.accounting import TRACEBACK, check_catalog, check_predict, check_store
from tests.fuzz.watch import Outcome, run_watched
from tests.helpers import REPO

#: no process of a stage (driver or worker) may go above this resident size
PROCESS_BOUND_MB = 2048
#: the watchdog kills a stage whose processes together go above this (protects the machine)
TREE_CAP_MB = 6144


@dataclass
class Limits:
    timeout_s: float = 300.0
    process_mb: float = PROCESS_BOUND_MB
    tree_cap_mb: float = TREE_CAP_MB
    workers: int = 2


@dataclass
class StageResult:
    stage: str
    outcome: Outcome | None
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def report(self) -> str:
        head = self.outcome.describe() if self.outcome else f"{self.stage}: not run"
        lines = [head, *self.problems[:40]]
        if len(self.problems) > 40:
            lines.append(f"… and {len(self.problems) - 40} more")
        return "\n  ".join(lines)


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "hypermodal.cli", *map(str, args)]


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def parse_summary(stdout: str) -> dict[str, Any]:
    """The JSON summary a stage prints on stdout ({} if there is none)."""
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def _run(stage: str, cmd: list[str], limits: Limits) -> StageResult:
    outcome = run_watched(cmd, limits.timeout_s, limits.tree_cap_mb, env=cli_env())
    result = StageResult(stage, outcome, parse_summary(outcome.stdout))
    p = result.problems
    if outcome.timed_out:
        p.append(f"hung: still running after {limits.timeout_s:.0f} s")
    elif outcome.over_memory:
        p.append(f"killed: its processes held more than {limits.tree_cap_mb:.0f} MB together")
    elif outcome.rc != 0:
        tail = [line[:300] for line in outcome.stderr.strip().splitlines()[-15:]]
        p.append(f"exit status {outcome.rc}: " + "\n    ".join(tail))
    big = {pid: mb for pid, mb in outcome.peak_mb_by_pid.items() if mb > limits.process_mb}
    if big:
        p.append(f"processes above {limits.process_mb:.0f} MB: {big} (-1 = the driver)")
    if outcome.survivors:
        p.append(f"processes still alive after the stage exited: {outcome.survivors}")
    if outcome.rc == 0 and TRACEBACK in outcome.stderr:
        n = outcome.stderr.count(TRACEBACK)
        p.append(f"{n} tracebacks printed by a successful run (handled files must not print any)")
    return result


def run_catalog(roots: list[Path], out: Path, limits: Limits) -> StageResult:
    cmd = cli("catalog", *roots, "--out", out, "--workers", limits.workers, "--no-progress")
    result = _run("catalog", cmd, limits)
    if result.outcome.rc == 0:
        result.problems += check_catalog(out, roots, result.summary)
    return result


def write_train_split(catalog: Path, work: Path, limits: Limits) -> tuple[Path, list[str]]:
    """Every dataset of the catalog in train (the split CLI, keeping every image)."""
    datasets = sorted(set(pq.read_table(catalog, columns=["dataset"]).column(0).to_pylist()))
    mapping = work / "datasets.json"
    mapping.write_text(json.dumps({d: "train" for d in datasets}))
    split = work / "split.json"
    cmd = cli("split", catalog, "--out", split, "--split-file", mapping, "--no-caps")
    cmd += ["--keep-localizers", "--force"]
    outcome = run_watched(cmd, 120, limits.tree_cap_mb, env=cli_env())
    problems = [] if outcome.rc == 0 else [f"split failed: {outcome.stderr[-2000:]}"]
    return split, problems


def run_store(catalog: Path, work: Path, limits: Limits, size: int = 32) -> StageResult:
    if not catalog.exists():
        return StageResult("store", None, problems=[f"no catalog to store from ({catalog})"])
    split, problems = write_train_split(catalog, work, limits)
    store = work / "store"
    cmd = cli("store", catalog, "--split", split, "--out", store, "--size", size)
    result = _run("store", [*cmd, "--workers", str(limits.workers), "--no-progress"], limits)
    result.problems[:0] = problems
    if result.outcome.rc == 0:
        result.problems += check_store(store, catalog)
    return result


def run_predict(roots: list[Path], model: Path, out: Path, limits: Limits) -> StageResult:
    """``predict`` of every image (``--all-slices``): the series table at ``out``, the image
    table beside it (``<stem>-images<suffix>``), both checked."""
    images = out.with_name(f"{out.stem}-images{out.suffix}")
    cmd = cli("predict", *roots, "--model", model, "--out", out, "--device", "cpu")
    cmd += ["--images-out", images, "--all-slices"]
    cmd += ["--workers", str(limits.workers), "--no-progress"]
    result = _run("predict", cmd, limits)
    if result.outcome.rc == 0:
        result.problems += check_predict(out, roots, result.summary, images=images)
    return result


def train_tiny_model(work: Path) -> Path:
    """A ResNet-18 trained for one short epoch on a 32×32 store of synthetic patterns: enough
    to run ``predict`` (mechanics, never accuracy)."""
    from hypermodal.train import TrainConfig, train
    from tests.helpers import make_store

    make_store(work / "store", n_per_class=(8, 2, 2), size=32)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu")
    train(work / "store", work / "run", config, progress=False)
    return work / "run" / "checkpoints" / "best.pt"
