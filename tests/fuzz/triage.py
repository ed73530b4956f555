"""Which files made a stage fail? Bisection over the corpus, for reports a fixer can act on.

A stage that crashes, hangs, goes over the memory bound or leaves workers behind over a folder
of thousands of mutants says nothing about which file did it. :func:`culprits` reruns the
stage over halves of the inputs (hard links in a fresh folder with the same layout and the
same ``dataset.json`` files), keeping the halves that still fail, down to single files. Only
these severe failures are bisected: files that are not accounted for are named by the checks
themselves.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.fuzz.accounting import expected_inputs
from tests.fuzz.stages import Limits, StageResult, run_catalog, run_predict, run_store

SEVERE = ("hung", "killed", "exit status", "processes above", "processes still alive")


def severe(result: StageResult) -> list[str]:
    """The problems of ``result`` that stop or endanger a run (not accounting details)."""
    return [p for p in result.problems if p.startswith(SEVERE)]


def subset(root: Path, entries: list[bytes], dest: Path) -> Path:
    """``dest`` holding hard links to ``entries`` (paths under ``root``) at the same relative
    places, with the ``dataset.json`` of their folders; links are linked, not followed."""
    shutil.rmtree(dest, ignore_errors=True)
    base = os.fsencode(root)
    for entry in entries:
        rel = os.path.relpath(entry, base)
        target = os.path.join(os.fsencode(dest), rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(entry, target, follow_symlinks=False)
        info = os.path.join(os.path.dirname(entry), b"dataset.json")
        copy = os.path.join(os.path.dirname(target), b"dataset.json")
        if os.path.exists(info) and not os.path.exists(copy):
            shutil.copyfile(info, copy)
    return dest


def bisect(fails: Callable[[list], bool], entries: list) -> list:
    """The single entries for which ``fails`` holds, found by halving (each culprit costs about
    two runs per halving)."""
    if not entries or not fails(entries):
        return []
    if len(entries) == 1:
        return entries
    mid = len(entries) // 2
    found = bisect(fails, entries[:mid]) + bisect(fails, entries[mid:])
    return found or entries  # fails only together: report the group


def _store_runner(catalog: Path, work: Path, limits: Limits) -> Callable[[list], StageResult]:
    """Runs ``store`` over the rows of ``catalog`` whose file is in the given list."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(catalog)

    def run(files: list) -> StageResult:
        out = work / "triage"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        part = table.filter(pc.is_in(table.column("path"), value_set=pa.array(files)))
        pq.write_table(part, out / "catalog.parquet")
        shutil.copyfile(catalog.with_name(catalog.name + ".json"), out / "catalog.parquet.json")
        return run_store(out / "catalog.parquet", out, limits)

    return run


def culprits(
    stage: str,
    root: Path,
    work: Path,
    limits: Limits,
    model: Path | None = None,
    catalog: Path | None = None,
) -> list[tuple[object, list[str]]]:
    """Each input that alone makes ``stage`` fail severely, with the problems: files under
    ``root`` for ``catalog`` and ``predict`` (with ``model``), files of ``catalog`` for
    ``store``."""
    found: dict[object, list[str]] = {}
    if stage == "store":
        assert catalog is not None
        entries: list = sorted(set(pq_paths(catalog)))
        run = _store_runner(catalog, work, limits)
    else:
        inputs = expected_inputs([root])
        entries = [p for p in [*inputs.must, *inputs.may] if os.path.lexists(p)]

        def run(files: list) -> StageResult:
            folder = subset(root, files, work / "triage" / "corpus")
            out = work / "triage" / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            if stage == "predict":
                assert model is not None
                return run_predict([folder], model, out / "predict.csv", limits)
            return run_catalog([folder], out / "catalog.parquet", limits)

    def fails(files: list) -> bool:
        problems = severe(run(files))
        if problems and len(files) == 1:
            found[files[0]] = problems
        return bool(problems)

    for entry in bisect(fails, entries):
        found.setdefault(entry, ["fails only together with others of its group"])
    shutil.rmtree(work / "triage", ignore_errors=True)
    return sorted(found.items(), key=lambda item: ascii(item[0]))


def pq_paths(catalog: Path) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(catalog, columns=["path"]).column(0).to_pylist()
