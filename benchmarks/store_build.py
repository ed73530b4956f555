"""Store build rate (images/s per core) against a paper-style baseline, measured side by side.

Inputs: synthetic 512×512 16-bit CT DICOM from :mod:`hypermodal.sources.synthetic` (throughput only,
never accuracy), uncompressed, plus a separate JPEG 2000 (lossless) set.

Measured in the same run, interleaved repeat by repeat so that load from other processes hits
every variant alike; medians and ratios are printed:

* ``baseline``: the paper's pipeline, one process — SimpleITK ``ReadImage`` (rescale applied),
  OpenCV ``INTER_AREA`` straight to 224, per-image min-max, one float32 ``.npy`` per slice.
* ``decode bound``: pydicom read + decode only (``pydicom.pixels.pixel_array``), nothing stored —
  the ceiling any pipeline that decodes with pydicom can reach.
* ``hypermodal (1 worker)`` / ``(N workers)``: :func:`hypermodal.store.build.build_store`
  writing the memory-mapped store (journal, manifest and all), with 1 worker and with every core.

Files are read from the page cache (they were just written) by every variant alike.

    .venv/bin/python benchmarks/store_build.py          # ~1 min idle, ~3 min on a busy 2-core box
    .venv/bin/python benchmarks/store_build.py --files 5000 --j2k-files 300 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.sources.synthetic import write_synthetic
from hypermodal.store import build_store

cv2.setNumThreads(1)


def paper_baseline(paths: list[Path], out: Path) -> float:
    """SimpleITK read, INTER_AREA to 224, min-max, one .npy per slice (one process)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, p in enumerate(paths):
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[0].astype(np.float32)
        img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        np.save(out / f"{i:06d}.npy", img)
    return len(paths) / (time.perf_counter() - start)


def decode_bound(paths: list[Path], out: Path) -> float:
    """pydicom read + decode, nothing else (an upper bound for a pydicom-based build)."""
    from pydicom.pixels import pixel_array

    start = time.perf_counter()
    for p in paths:
        pixel_array(p)
    return len(paths) / (time.perf_counter() - start)


def hypermodal_store(paths: list[Path], out: Path, workers: int) -> float:
    table = pd.DataFrame(
        {
            "dataset": "bench",
            "path": [str(p) for p in paths],
            "index": 0,
            "label": "CT",
            "split": "train",
        }
    )
    start = time.perf_counter()
    build_store(table, out, ClassVocabulary(), PreprocessConfig(), workers=workers, progress=False)
    return len(paths) / (time.perf_counter() - start)


def measure(
    title: str,
    variants: dict[str, Callable[[Path], float]],
    repeats: int,
    work: Path,
    baseline: str,
) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):  # interleaved: drift and neighbours' load hit every variant alike
        for name, fn in variants.items():
            out = work / f"out-{r}-{len(runs[name])}-{abs(hash(name))}"
            runs[name].append(fn(out))
            shutil.rmtree(out, ignore_errors=True)
    base = statistics.median(runs[baseline])
    print(title)
    medians = {}
    for name, vals in runs.items():
        med = statistics.median(vals)
        medians[name] = med
        print(
            f"  {name:<26} {med:8.1f} images/s   x{med / base:5.2f} vs baseline   "
            f"(runs: {', '.join(f'{v:.0f}' for v in vals)})"
        )
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=600, help="uncompressed CT files")
    ap.add_argument("--j2k-files", type=int, default=40, help="JPEG 2000 CT files (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="'all cores' run")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hm-bench-"))
    try:
        paths = write_synthetic(work / "plain", args.files, ["CT"], seed=0)
        cores = args.workers
        med = measure(
            f"store build, {args.files} uncompressed 512x512 CT DICOM -> 224x224 uint8, "
            f"median of {args.repeats} (interleaved)",
            {
                "baseline (SimpleITK, 1 core)": lambda o: paper_baseline(paths, o),
                "decode bound (pydicom)": lambda o: decode_bound(paths, o),
                "hypermodal (1 worker)": lambda o: hypermodal_store(paths, o, 1),
                f"hypermodal ({cores} workers)": lambda o: hypermodal_store(paths, o, cores),
            },
            args.repeats,
            work,
            "baseline (SimpleITK, 1 core)",
        )
        ours1 = med["hypermodal (1 worker)"]
        print(
            f"  hypermodal 1 worker = {ours1 / med['decode bound (pydicom)']:.0%} of the decode "
            f"bound; {cores} workers = {med[f'hypermodal ({cores} workers)'] / ours1:.2f}x "
            f"1 worker (target: >= 1,000 images/s per core)"
        )
        shutil.rmtree(work / "plain")
        if args.j2k_files:
            j2k = write_synthetic(work / "j2k", args.j2k_files, ["CT"], seed=0, compress="jpeg2000")
            measure(
                f"store build, {args.j2k_files} JPEG 2000 lossless 512x512 CT DICOM, "
                f"median of {args.repeats} (reported separately)",
                {
                    "baseline (SimpleITK, 1 core)": lambda o: paper_baseline(j2k, o),
                    "decode bound (pydicom)": lambda o: decode_bound(j2k, o),
                    "hypermodal (1 worker)": lambda o: hypermodal_store(j2k, o, 1),
                    f"hypermodal ({cores} workers)": lambda o: hypermodal_store(j2k, o, cores),
                },
                args.repeats,
                work,
                "baseline (SimpleITK, 1 core)",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
