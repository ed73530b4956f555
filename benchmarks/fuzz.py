"""Fuzz catalog, store and predict at scale: N seeded mutants of the real test files, in batches.

Each batch is a fresh folder of mutants (``tests/fuzz/mutants.py``: mutant ``i`` of a seed is
always the same file), the first batch also holding the issue's files and the special files
(FIFO, socket, device link, link loops, names that are not UTF-8, sparse giants at the sizes
of the issue with ``--scale full``). The three stages run over each batch as the real CLI in a
watched session (time limit, peak RSS of every process, survivors) and their outputs are
checked: every file a row/result or an error with a reason, counts reconciled.

Printed per batch and in total: crashes (a non-zero exit, or killed over the memory cap),
hangs (over the time limit), unaccounted files, other problems (tracebacks, workers left
alive, processes above the ceiling), peak RSS of the drivers and of the largest worker, and
the time taken. With ``--triage``, a batch whose stage failed is bisected down to the files
that make it fail, each printed with how it was made.

    .venv/bin/python benchmarks/fuzz.py --n 100000 --seed 0 --workers 2
    .venv/bin/python benchmarks/fuzz.py --n 2000 --batch 500 --triage --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz.mutants import write_manifest, write_mutants  # noqa: E402
from tests.fuzz.specials import write_issue_mutants, write_specials  # noqa: E402
from tests.fuzz.stages import (  # noqa: E402
    PROCESS_BOUND_MB,
    Limits,
    StageResult,
    run_catalog,
    run_predict,
    run_store,
    train_tiny_model,
)
from tests.fuzz.triage import culprits  # noqa: E402

STAGES = ("catalog", "store", "predict")


def classify(result: StageResult) -> Counter[str]:
    """Counts of crashes, hangs, unaccounted files and other problems of one stage run."""
    c: Counter[str] = Counter()
    for p in result.problems:
        if p.startswith("hung"):
            c["hangs"] += 1
        elif p.startswith(("exit status", "killed")):
            c["crashes"] += 1
        elif p.startswith("not accounted for"):
            c["unaccounted"] += 1
        elif p.startswith("no catalog"):
            c["not_run"] += 1
        else:
            c["other"] += 1
    return c


def run_batch(
    root: Path, work: Path, stages: list[str], model: Path, limits: Limits
) -> dict[str, StageResult]:
    results: dict[str, StageResult] = {}
    if "catalog" in stages or "store" in stages:
        results["catalog"] = run_catalog([root], work / "catalog.parquet", limits)
    if "store" in stages:
        results["store"] = run_store(work / "catalog.parquet", work, limits)
    if "predict" in stages:
        results["predict"] = run_predict([root], model, work / "predict.csv", limits)
    return results


def triage(stage: str, root: Path, work: Path, limits: Limits, model: Path) -> None:
    manifest = {}
    for line in (work / "mutants.jsonl").read_text().splitlines():
        rec = json.loads(line)
        manifest[os.fsencode(root / rec["rel"])] = rec["mutation"]
    catalog = work / "catalog.parquet"
    print(f"  triage of {stage} …", flush=True)
    for entry, problems in culprits(stage, root, work, limits, model=model, catalog=catalog):
        key = os.fsencode(entry) if isinstance(entry, str) else entry
        how = manifest.get(key, "special or issue file")
        print(f"    {ascii(os.fsdecode(key))} ({how}): {problems[0][:300]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="mutants in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="--workers of each stage")
    ap.add_argument("--batch", type=int, default=5000, help="mutants per batch")
    ap.add_argument("--scale", choices=("ci", "full"), default="full", help="special file sizes")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--model", type=Path, help="checkpoint for predict (default: a tiny one)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per stage and batch")
    ap.add_argument("--ceiling-mb", type=float, default=PROCESS_BOUND_MB, help="per process")
    ap.add_argument("--work", type=Path, help="folder for the batches (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep each batch's folder")
    ap.add_argument("--triage", action="store_true", help="bisect failing batches to files")
    ap.add_argument("--triage-timeout", type=float, default=60, help="seconds per triage run")
    args = ap.parse_args()

    stages = [s for s in args.stages.split(",") if s]
    work = args.work or Path(tempfile.mkdtemp(prefix="hypermodal-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    limits = Limits(timeout_s=args.timeout, process_mb=args.ceiling_mb, workers=args.workers)
    model = args.model or train_tiny_model(work / "model")
    totals: Counter[str] = Counter()
    peaks = {"driver_mb": 0.0, "worker_mb": 0.0}
    start = time.perf_counter()
    for b, lo in enumerate(range(0, args.n, args.batch)):
        hi = min(lo + args.batch, args.n)
        folder = work / f"batch-{b:04d}"
        shutil.rmtree(folder, ignore_errors=True)
        root = folder / "corpus"
        t0 = time.perf_counter()
        write_manifest(folder / "mutants.jsonl", write_mutants(root, args.seed, lo, hi))
        if b == 0:
            write_specials(root, folder / "outside", scale=args.scale)
            write_issue_mutants(root, scale=args.scale)
        results = run_batch(root, folder, stages, model, limits)
        line = [f"batch {b} (mutants {lo}-{hi - 1}): {time.perf_counter() - t0:.0f} s"]
        for stage, result in results.items():
            counts = classify(result)
            totals.update({f"{stage}.{k}": v for k, v in counts.items()})
            if result.outcome is not None:
                peaks["driver_mb"] = max(peaks["driver_mb"], result.outcome.peak_main_mb)
                peaks["worker_mb"] = max(peaks["worker_mb"], result.outcome.peak_worker_mb)
            line.append(f"{stage} {dict(counts) or 'clean'}")
        print("; ".join(line), flush=True)
        for stage, result in results.items():
            if result.problems:
                print(f"  {result.report()[:4000]}", flush=True)
                if args.triage and any(
                    p.startswith(("hung", "exit", "killed")) for p in result.problems
                ):
                    quick = Limits(args.triage_timeout, args.ceiling_mb, workers=args.workers)
                    triage(stage, root, folder, quick, model)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    report = {
        "mutants": args.n,
        "seed": args.seed,
        "workers": args.workers,
        "crashes": sum(v for k, v in totals.items() if k.endswith(".crashes")),
        "hangs": sum(v for k, v in totals.items() if k.endswith(".hangs")),
        "unaccounted_files": sum(v for k, v in totals.items() if k.endswith(".unaccounted")),
        "other_problems": sum(v for k, v in totals.items() if k.endswith(".other")),
        "by_stage": dict(sorted(totals.items())),
        "peak_driver_rss_mb": round(peaks["driver_mb"]),
        "peak_worker_rss_mb": round(peaks["worker_mb"]),
        "ceiling_mb": args.ceiling_mb,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(report, indent=2))
    if not args.work and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
