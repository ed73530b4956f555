"""Peak memory (RSS) of catalog + store build, at 10,000 and 100,000 slices.

Each size runs in a fresh child process that builds the catalog of a synthetic DICOM folder
(:mod:`hypermodal.sources.synthetic`, throughput/memory tests only), marks every row ``train``
and builds the store from it. The child reports ``ru_maxrss`` of itself (the driver: catalog
table, plan, journal, manifest) and of its largest worker process (decode + preprocess of one
chunk). The target is a flat peak, under 1.5 GB, whatever the number of slices.

To make 10⁵ slices cheap on a small machine, the default input is multi-frame PET-like files
(128×128, 50 frames per file): the catalog and manifest still hold one row per slice, and the
store still holds one 224×224 image per slice (100,000 slices = 5.0 GB ``images.u8``). Use
``--frames 1`` for one file per slice (what single-frame CT archives look like; files are
generated at ≈ 100–200/s, so keep it to ≈ 20,000 slices), ``--class CT`` for 512×512 frames.

The baseline printed next to each figure is the Python interpreter with numpy, pandas, pyarrow,
pydicom and OpenCV imported — the floor any process of this pipeline pays.

    .venv/bin/python benchmarks/memory.py                       # 10k + 100k slices, ~3 min
    .venv/bin/python benchmarks/memory.py --frames 1 --slices 5000,20000    # ~10 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _maxrss_mb(who: int) -> float:
    kb = resource.getrusage(who).ru_maxrss  # kilobytes on Linux
    return kb / 1024


def child(src: Path, out: Path, workers: int) -> None:
    """Catalog + store build; prints one JSON line with the peaks."""
    import cv2  # noqa: F401 - part of the floor
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import pydicom  # noqa: F401

    floor = _maxrss_mb(resource.RUSAGE_SELF)
    from hypermodal.catalog import build_catalog, read_catalog
    from hypermodal.labels import ClassVocabulary
    from hypermodal.store import build_store

    t0 = time.perf_counter()
    catalog = out / "catalog.parquet"
    build_catalog([src], catalog, workers=workers, progress=False)
    after_catalog = _maxrss_mb(resource.RUSAGE_SELF)
    t1 = time.perf_counter()
    table = read_catalog(catalog)
    table["split"] = "train"
    summary = build_store(table, out / "store", ClassVocabulary(), workers=workers, progress=False)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "slices": len(table),
                "stored": summary.images_stored,
                "floor_mb": floor,
                "driver_after_catalog_mb": after_catalog,
                "driver_peak_mb": _maxrss_mb(resource.RUSAGE_SELF),
                "worker_peak_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
                "catalog_s": t1 - t0,
                "store_s": t2 - t1,
            }
        )
    )


def run(slices: int, klass: str, frames: int, workers: int, work: Path) -> dict:
    from hypermodal.sources.synthetic import write_synthetic

    src = work / f"src-{slices}"
    files = -(-slices // frames)
    t = time.perf_counter()
    write_synthetic(src, files, [klass], frames=frames, seed=0)
    gen_s = time.perf_counter() - t
    out = work / f"out-{slices}"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(src), str(out), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["generate_s"] = gen_s
    shutil.rmtree(src)
    shutil.rmtree(out)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", default="10000,100000", help="comma-separated slice counts")
    ap.add_argument("--class", dest="klass", default="PT", help="synthetic class (CT, MR, PT, XR)")
    ap.add_argument("--frames", type=int, default=50, help="slices per file")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hm-memory-"))
    try:
        sizes = [int(s) for s in args.slices.split(",") if s.strip()]
        print(
            f"peak RSS of catalog + store build ({args.klass}, {args.frames} frames/file, "
            f"{args.workers} workers), each size in a fresh process"
        )
        for n in sizes:
            r = run(n, args.klass, args.frames, args.workers, work)
            print(
                f"  {r['slices']:>8} slices: driver peak {r['driver_peak_mb']:7.0f} MB "
                f"(after catalog {r['driver_after_catalog_mb']:.0f}), largest worker "
                f"{r['worker_peak_mb']:6.0f} MB; baseline (interpreter + libraries) "
                f"{r['floor_mb']:.0f} MB -> driver x{r['driver_peak_mb'] / r['floor_mb']:.2f}; "
                f"catalog {r['catalog_s']:.0f} s, store {r['store_s']:.0f} s "
                f"({r['stored'] / r['store_s']:.0f} slices/s)"
            )
        print("  target: flat in the number of slices, under 1,500 MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
