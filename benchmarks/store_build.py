"""Store build rate on uncompressed 512×512 CT DICOM, against a paper-style baseline.

Baseline (what the paper's scripts did, one process): read each file with pydicom, apply the
rescale, resize straight to 224 with OpenCV INTER_AREA, min-max scale, save one ``.npy`` per
slice. Ours: ``hypermodal.store.build_store`` (exact 2× area reductions before the final
INTER_AREA, one shared memory-mapped array, chunks in a process pool), on 1 worker and on all
cores. Both run side by side in this process, repeated; the medians and their ratio are printed.

The input files are synthetic (a real CT_small header, smooth random pixels at 512×512): this
measures throughput only, never accuracy.

    .venv/bin/python benchmarks/store_build.py --files 1500 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.store import build_store

cv2.setNumThreads(1)


def make_ct_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.normal(0, 300, (64, 64)).astype(np.float32), (512, 512))
    paths = []
    for i in range(n):
        ds = template.copy()
        ds.Rows = ds.Columns = 512
        noise = rng.normal(0, 20, (512, 512)).astype(np.float32)
        ds.PixelData = np.clip(base + noise + 1024, 0, 4095).astype(np.int16).tobytes()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        p = folder / f"ct_{i:06d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def baseline(paths: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        img = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept
        )
        img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        np.save(out / f"{i:06d}.npy", img.astype(np.float32))
    return len(paths) / (time.perf_counter() - start)


def ours(paths: list[Path], out: Path, workers: int) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hm-bench-"))
    src = work / "dicom"
    src.mkdir(parents=True, exist_ok=True)
    paths = make_ct_files(src, args.files)
    cores = os.cpu_count() or 1
    results: dict[str, list[float]] = {
        "baseline (1 core)": [],
        "hypermodal (1 core)": [],
        f"hypermodal ({cores} cores)": [],
    }
    for r in range(args.repeats):  # interleaved, so drift hits all three alike
        for name, fn in (
            ("baseline (1 core)", lambda o: baseline(paths, o)),
            ("hypermodal (1 core)", lambda o: ours(paths, o, 1)),
            (f"hypermodal ({cores} cores)", lambda o: ours(paths, o, cores)),
        ):
            out = work / f"out-{r}-{name.split()[0]}-{len(results[name])}"
            results[name].append(fn(out))
            shutil.rmtree(out)
    base = statistics.median(results["baseline (1 core)"])
    print(
        f"store build, {args.files} uncompressed 512x512 CT DICOM -> 224x224 uint8, "
        f"median of {args.repeats}"
    )
    for name, vals in results.items():
        med = statistics.median(vals)
        print(
            f"  {name:<24} {med:8.1f} images/s   x{med / base:4.2f} vs baseline   "
            f"(runs: {', '.join(f'{v:.0f}' for v in vals)})"
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
