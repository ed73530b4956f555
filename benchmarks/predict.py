"""``predict`` speed: series/s and images/s against every slice through PyTorch eager, side by side.

One run, one folder of real-size synthetic series (:mod:`hypermodal.sources.synthetic`:
throughput only, never accuracy), the same default model in every form, the same engine; the
variants are interleaved repeat by repeat (this machine is shared and noisy) and the medians of
whole ``predict`` runs (model load, header pass, decode, model, fusion, tables) are printed with
their ratios to the baseline:

* ``pytorch all``   — the baseline, what ``predict`` did before: every slice through PyTorch
  eager (the ``.pt`` form of the bundled model, same weights and evidence), ``--all-slices``;
* ``onnx-fp32 all`` — every slice, the bundled ONNX model (``--all-slices``);
* ``onnx-int8 all`` — every slice, the int8 export of it (calibrated on the sample corpus);
* ``onnx-fp32 8``   — the default: 8 images per series, the bundled ONNX model;
* ``at issue all``  — the issue's own baseline, "today's" when it was filed: ``predict`` as the
  code was at :data:`ISSUE_COMMIT` (every slice, PyTorch eager, its own bundled ``.pt`` model),
  taken from this checkout's history (``git archive``) and run from a temporary folder in a
  child process (left out, with the reason, when the history lacks that commit).

Ratios are printed against both baselines: ``x base`` (every slice through PyTorch in today's
pipeline: same decoder, same model) and ``x issue`` (the code at the issue).

The folder (cached under the temporary folder, ≈ 0.8 GB by default): CT 512² one file per
slice in series of 200, MR 256² series of 150, PET 128² series of 250, X-ray 2500 × 2000 single
images. Then the accuracy side: ``predict`` on the bundled sample corpus with the default
sampling and with every slice, and the share of series whose class is the same.

``--memory 10000,100000`` measures instead the peak RSS of the main process of ``predict`` on
that many tiny synthetic files (:mod:`hypermodal.sources.synthetic_tiny`, series of 100), each
size in a fresh child process, with the floor (interpreter, libraries, model loaded) beside it::

    .venv/bin/python benchmarks/predict.py                      # speed + accuracy, ~8 min
    .venv/bin/python benchmarks/predict.py --ct-series 8 --repeats 5 --baseline-repeats 1
    .venv/bin/python benchmarks/predict.py --memory 10000,100000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: (class, series, slices per series) of the speed folder; --ct-series etc. change the counts
LAYOUT = {"CT": 200, "MR": 150, "PT": 250, "XR": 1}


def corpus(root: Path, counts: dict[str, int]) -> Path:
    """The speed folder for ``counts`` (class -> series), written once and cached."""
    from hypermodal.sources.synthetic import write_synthetic

    name = "-".join(f"{k}{counts[k]}x{LAYOUT[k]}" for k in LAYOUT if counts.get(k))
    folder = root / f"v1-{name}"
    marker = root / f"v1-{name}.json"  # beside the folder: never an input of predict
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    for klass, series in counts.items():
        if series:
            size = LAYOUT[klass]
            write_synthetic(folder, series * size, [klass], series_size=size, seed=len(klass))
    files = sum(1 for p in folder.rglob("*.dcm"))
    nbytes = sum(p.stat().st_size for p in folder.rglob("*.dcm"))
    note = {"files": files, "bytes": nbytes, "seconds": round(time.perf_counter() - start, 1)}
    marker.write_text(json.dumps(note))
    return folder


#: main when the archive issue was taken up: predict classified every slice on PyTorch
ISSUE_COMMIT = "3261c58"

_ISSUE_RUN = """
import json, sys, time
from pathlib import Path
from hypermodal.inference import predict
folder, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
s = predict([folder], None, out, progress=False, workers=workers)
print(json.dumps({"seconds": s.seconds, "images": s.images, "series": s.series}))
"""


class Ran:
    """What one run of the code at the issue reports (the fields the table reads)."""

    def __init__(self, seconds: float, images: int, series: int) -> None:
        self.seconds, self.images, self.series = seconds, images, series


def issue_code(tmp: Path) -> Path | None:
    """The package as it was at :data:`ISSUE_COMMIT`, unpacked under ``tmp`` (its ``src``)."""
    repo = Path(__file__).resolve().parents[1]
    dst = tmp / "at-issue"
    dst.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ISSUE_COMMIT, "src"], capture_output=True
    )
    if archive.returncode != 0:
        reason = archive.stderr.decode(errors="replace").strip().splitlines()[-1:]
        print(f"  (no 'at issue' baseline: commit {ISSUE_COMMIT} not in this history: {reason})")
        return None
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    return dst / "src"


def run_issue_code(src: Path, folder: Path, tmp: Path, workers: int | None) -> Ran:
    import os

    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", _ISSUE_RUN, str(folder), str(tmp / "at-issue.parquet")]
    done = subprocess.run(
        [*cmd, str(workers or 0)], capture_output=True, text=True, env=env, check=True
    )
    return Ran(**json.loads(done.stdout.strip().splitlines()[-1]))


def models(tmp: Path) -> dict[str, Path]:
    """The default model as a PyTorch checkpoint, as shipped (ONNX fp32) and as int8."""
    from hypermodal.default_model import MODEL_PATH
    from hypermodal.inference.onnx_export import export_onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import checkpoint_from_bundle

    pt = checkpoint_from_bundle(MODEL_PATH, tmp / "default.pt")
    int8 = tmp / "default-int8.onnx.zip"
    export_onnx(MODEL_PATH, int8, int8=True)
    return {"pytorch": pt, "onnx-fp32": MODEL_PATH, "onnx-int8": int8}


def run_once(folder: Path, model: Path, slices: int | None, tmp: Path, workers: int | None):
    from hypermodal.inference import predict

    s = predict(
        [folder], model, tmp / "series.parquet", slices=slices, progress=False, workers=workers
    )
    return s


def speed(args: argparse.Namespace) -> dict[str, Any]:
    counts = {"CT": args.ct_series, "MR": args.mr_series, "PT": args.pt_series, "XR": args.xr}
    root = Path(tempfile.gettempdir()) / "hypermodal-bench-predict"
    folder = corpus(root, counts)
    info = json.loads(folder.with_name(folder.name + ".json").read_text())
    print(
        f"folder {folder}: {info['files']} files, {info['bytes'] / 1e9:.2f} GB "
        f"({', '.join(f'{k} {v} x {LAYOUT[k]}' for k, v in counts.items() if v)})"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = models(tmp)
        variants = {
            "pytorch all": (paths["pytorch"], None),
            "onnx-fp32 all": (paths["onnx-fp32"], None),
            "onnx-int8 all": (paths["onnx-int8"], None),
            f"onnx-fp32 {args.slices}": (paths["onnx-fp32"], args.slices),
        }
        old = issue_code(tmp)
        if old is not None:
            variants["at issue all"] = (old, None)
        runs: dict[str, list[Any]] = {name: [] for name in variants}
        for r in range(args.repeats):
            for name, (model, slices) in variants.items():
                if name in ("pytorch all", "at issue all") and r >= args.baseline_repeats:
                    continue
                if name == "at issue all":
                    s = run_issue_code(model, folder, tmp, args.workers)
                else:
                    s = run_once(folder, model, slices, tmp, args.workers)
                runs[name].append(s)
                print(
                    f"  repeat {r + 1} {name:15s} {s.seconds:7.1f} s  {s.images} images "
                    f"{s.series} series",
                    flush=True,
                )
    table: dict[str, Any] = {}
    for name, done in runs.items():
        images = statistics.median(s.images / s.seconds for s in done)
        series = statistics.median(s.series / s.seconds for s in done)
        table[name] = {
            "repeats": len(done),
            "seconds": statistics.median(s.seconds for s in done),
            "images": done[0].images,
            "series": done[0].series,
            "images_per_second": round(images, 1),
            "series_per_second": round(series, 3),
        }
    b = table["pytorch all"]
    i = table.get("at issue all")
    print(
        f"\n{info['files']} files, {b['series']} series; medians; workers {args.workers or 'auto'}"
    )
    print(
        f"  {'':15s} {'s/run':>7s} {'images':>7s} {'img/s':>8s} {'x base':>7s} {'x issue':>7s} "
        f"{'series/s':>9s} {'x base':>7s} {'x issue':>7s}"
    )
    for name, t in table.items():
        t["images_ratio"] = round(t["images_per_second"] / b["images_per_second"], 2)
        t["series_ratio"] = round(t["series_per_second"] / b["series_per_second"], 2)
        if i is not None:
            t["images_ratio_issue"] = round(t["images_per_second"] / i["images_per_second"], 2)
            t["series_ratio_issue"] = round(t["series_per_second"] / i["series_per_second"], 2)
        print(
            f"  {name:15s} {t['seconds']:7.1f} {t['images']:7d} {t['images_per_second']:8.1f} "
            f"{t['images_ratio']:7.2f} {t.get('images_ratio_issue', float('nan')):7.2f} "
            f"{t['series_per_second']:9.3f} {t['series_ratio']:7.2f} "
            f"{t.get('series_ratio_issue', float('nan')):7.2f}"
            f"   ({t['repeats']} run{'s' if t['repeats'] > 1 else ''})"
        )
    return {"folder": info, "counts": counts, "variants": table}


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Sampling against every slice on the sample corpus: the share of series whose class is
    the same."""
    import pandas as pd

    from hypermodal.default_model import MODEL_PATH
    from hypermodal.inference import predict
    from hypermodal.inference.onnx_quantize import default_calibration_corpus

    samples = default_calibration_corpus()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tables = {}
        for slices in (args.slices, None):
            out = tmp / f"series-{slices}.parquet"
            predict([samples], MODEL_PATH, out, slices=slices, progress=False, workers=args.workers)
            tables[slices] = pd.read_parquet(out).set_index("series")
    sampled, every = tables[args.slices], tables[None]
    common = every.index.intersection(sampled.index)
    same = sampled.loc[common, "prediction"] == every.loc[common, "prediction"]
    several = every.loc[common, "num_images"] > args.slices
    out = {
        "corpus": str(samples),
        "series": int(len(common)),
        "series_sampled": int(several.sum()),
        "same_class": round(float(same.mean()), 4),
        "same_class_sampled": round(float(same[several].mean()), 4) if several.any() else None,
        "differ": [
            {
                "series": k,
                "sampled": sampled.loc[k, "prediction"],
                "all": every.loc[k, "prediction"],
            }
            for k in same.index[~same]
        ],
    }
    print(
        f"\naccuracy side, {samples}: {out['series']} series, {out['series_sampled']} of them "
        f"with more than {args.slices} images; same class with {args.slices} per series as "
        f"with every slice: {out['same_class']:.4f} (series that were sampled: "
        f"{out['same_class_sampled']})"
    )
    for d in out["differ"]:
        print(f"  differs: {d['series']}: {d['sampled']} sampled, {d['all']} every slice")
    return out


# ----------------------------------------------------------------------------- memory


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def memory_child(folder: Path, slices: int | None, workers: int | None) -> None:
    """In a fresh process: the floor (libraries + model), then predict; one JSON line."""
    from hypermodal.default_model import MODEL_PATH
    from hypermodal.inference import load_model, predict

    load_model(MODEL_PATH)
    floor = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        s = predict(
            [folder],
            None,
            Path(tmp) / "series.parquet",
            slices=slices,
            progress=False,
            workers=workers,
        )
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "files": s.files_seen,
                "images": s.images,
                "series": s.series,
                "floor_mb": floor,
                "peak_mb": _rss_mb(),
                "seconds": round(seconds, 1),
            }
        )
    )


def measure_memory(files: int, slices: int | None, workers: int | None, root: Path) -> dict:
    """Peak RSS of the main process of ``predict`` on ``files`` tiny files (fresh child)."""
    from hypermodal.sources.synthetic_tiny import write_tiny_dicom

    folder = root / f"tiny-{files}"
    shutil.rmtree(folder, ignore_errors=True)
    write_tiny_dicom(folder, files)
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        str(folder),
        "--slices",
        "all" if slices is None else str(slices),
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(n) for n in args.memory.split(",")]
    root = Path(tempfile.mkdtemp(prefix="hypermodal-bench-memory-"))
    try:
        rows = [measure_memory(n, args.slices, args.workers, root) for n in sizes]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first = rows[0]
    print(f"peak RSS of predict's main process, {args.slices or 'all'} images per series:")
    for r in rows:
        growth = (r["peak_mb"] - first["peak_mb"]) / first["peak_mb"]
        per_file = (r["peak_mb"] - first["peak_mb"]) * 1024 / max(1, r["files"] - first["files"])
        r["growth_vs_first"] = round(growth, 4)
        print(
            f"  {r['files']:7d} files {r['series']:5d} series {r['images']:6d} images: peak "
            f"{r['peak_mb']:7.1f} MB (floor, libraries + model: {r['floor_mb']:.1f} MB), "
            f"{growth:+.1%} vs {first['files']} files ({per_file:.2f} KB per extra file), "
            f"{r['seconds']:.1f} s"
        )
    return {"memory": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct-series", type=int, default=4)
    parser.add_argument("--mr-series", type=int, default=4)
    parser.add_argument("--pt-series", type=int, default=4)
    parser.add_argument("--xr", type=int, default=8, help="X-ray single images")
    parser.add_argument("--slices", default="8", help="images per series sampled ('all')")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--baseline-repeats",
        type=int,
        default=None,
        help="repeats of the (long) PyTorch every-slice baseline (default: --repeats)",
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--memory", default=None, help="file counts, e.g. 10000,100000")
    parser.add_argument("--memory-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.slices = None if args.slices == "all" else int(args.slices)
    if args.baseline_repeats is None:
        args.baseline_repeats = args.repeats
    if args.memory_child is not None:
        memory_child(args.memory_child, args.slices, args.workers)
        return
    if args.memory:
        report = memory(args)
    else:
        report = speed(args)
        if not args.no_accuracy:
            report["accuracy"] = accuracy(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
