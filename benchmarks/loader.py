"""Loader rate: images/s the training step receives per process, against raw memory-map reads.

Builds a store of random 224×224 uint8 images (synthetic: throughput only), then measures,
interleaved repeat by repeat (medians and ratios printed):

* ``raw memmap, sequential``: ``images[i:i+B]`` copied out, in order — the baseline (the issue's
  ≈ 170,000 images/s on one core of this machine kind).
* ``raw memmap, random``: ``images[sorted(random B rows)]`` — what one shuffled batch costs.
* ``BatchFeeder, shuffled``: :class:`hypermodal.store.loader.BatchFeeder` with ``shuffle=True``
  (the training path: epoch plan, sorted fancy-indexed read, labels, torch tensors), in-process
  (``workers=0``); ``--workers K`` adds a run with K loader processes.

``--cold`` adds page-cache-cold reads: before each cold run the file's pages are dropped with
``posix_fadvise(POSIX_FADV_DONTNEED)``, so every image comes from the disk (what a store larger
than RAM sees). These numbers feed ``docs/store-format.md``.

    .venv/bin/python benchmarks/loader.py                         # ~30 s
    .venv/bin/python benchmarks/loader.py --images 100000 --cold --workers 2
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from hypermodal.labels import ClassVocabulary
from hypermodal.store import SliceStore, write_store_arrays


def make_store(path: Path, n: int, size: int = 224, seed: int = 0) -> SliceStore:
    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(
        path.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8, shape=(n, size, size)
    )
    for lo in range(0, n, 4096):
        hi = min(n, lo + 4096)
        images[lo:hi] = rng.integers(0, 256, (hi - lo, size, size), dtype=np.uint8)
    classes = ClassVocabulary().classes
    table = pd.DataFrame(
        {
            "dataset": "bench",
            "label": [classes[i % len(classes)] for i in range(n)],
            "split": "train",
        }
    )
    store = write_store_arrays(path, images, table, ClassVocabulary())
    del images
    path.with_suffix(".tmp.npy").unlink()
    return store


def drop_cache(path: Path) -> None:
    """Ask the kernel to drop this file's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_fraction(path: Path) -> float:
    """Share of the file's pages in the page cache (mincore through a fresh mapping)."""
    import ctypes
    import mmap

    size = path.stat().st_size
    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        pages = (size + page - 1) // page
        vec = ctypes.create_string_buffer(pages)
        libc.mincore(ctypes.c_void_p(addr), size, vec)
        libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)
    return float(np.frombuffer(vec.raw, dtype=np.uint8).astype(bool).mean())


def raw_sequential(images: np.ndarray, batch: int, limit: int) -> float:
    n = min(limit, len(images))
    start = time.perf_counter()
    total = 0
    for lo in range(0, n, batch):
        x = np.array(images[lo : lo + batch])
        total += len(x)
    return total / (time.perf_counter() - start)


def raw_random(images: np.ndarray, batch: int, limit: int, seed: int) -> float:
    n = min(limit, len(images))
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    start = time.perf_counter()
    total = 0
    for lo in range(0, n, batch):
        x = images[np.sort(order[lo : lo + batch])]
        total += len(x)
    return total / (time.perf_counter() - start)


def threaded_random(
    path: Path, n_images: int, batch: int, limit: int, seed: int, threads: int
) -> float:
    """Shuffled batches read with ``os.preadv`` from a thread pool (queue depth = threads)."""
    from concurrent.futures import ThreadPoolExecutor

    per = 224 * 224
    n = min(limit, n_images)
    order = np.random.default_rng(seed).permutation(n_images)[:n]
    fd = os.open(path, os.O_RDONLY)
    out = np.empty((batch, 224, 224), dtype=np.uint8)
    try:
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            total = 0
            for lo in range(0, n, batch):
                rows = np.sort(order[lo : lo + batch])
                list(
                    pool.map(
                        lambda ir: os.preadv(fd, [out[ir[0]]], int(ir[1]) * per), enumerate(rows)
                    )
                )
                total += len(rows)
            return total / (time.perf_counter() - start)
    finally:
        os.close(fd)


def feeder(store: SliceStore, batch: int, limit: int, workers: int, epoch: int) -> float:
    from hypermodal.store.loader import BatchFeeder

    f = BatchFeeder(
        store.images,
        store.labels(),
        store.rows("train"),
        batch,
        shuffle=True,
        seed=0,
        max_images=limit,
        workers=workers,
    )
    start = time.perf_counter()
    total = 0
    for x, y, _ in f.epoch(epoch):
        total += int(x.shape[0])
        assert y.shape[0] == x.shape[0]
    return total / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000, help="images in the store")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="also run BatchFeeder with K workers")
    ap.add_argument("--cold", action="store_true", help="also measure page-cache-cold reads")
    ap.add_argument("--cold-images", type=int, default=4000, help="images read per cold run")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hm-loader-"))
    try:
        store = make_store(work / "store", args.images)
        images = store.images
        n, b = args.images, args.batch
        variants: dict[str, Callable[[int], float]] = {
            "raw memmap, sequential": lambda r: raw_sequential(images, b, n),
            "raw memmap, random": lambda r: raw_random(images, b, n, r),
            "BatchFeeder, shuffled": lambda r: feeder(store, b, n, 0, r),
        }
        if args.workers:
            variants[f"BatchFeeder, {args.workers} workers"] = lambda r: feeder(
                store, b, n, args.workers, r
            )
        runs: dict[str, list[float]] = {k: [] for k in variants}
        raw_sequential(images, b, n)  # warm the page cache for the warm variants
        for r in range(args.repeats):
            for name, fn in variants.items():
                runs[name].append(fn(r))
        if args.cold:
            # Pages mapped into a process are not dropped by fadvise: close every mapping first,
            # and open a fresh one after each drop.
            path = store.path
            del store, images, variants
            gc.collect()
            c = args.cold_images
            cold_variants: dict[str, Callable[[SliceStore, int], float]] = {
                "cold: raw sequential": lambda s, r: raw_sequential(s.images, b, c),
                "cold: raw random": lambda s, r: raw_random(s.images, b, c, r),
                "cold: BatchFeeder": lambda s, r: feeder(s, b, c, 0, r),
                "cold: pread, 16 threads": lambda s, r: threaded_random(
                    s.path / "images.u8", len(s.images), b, c, r, 16
                ),
            }
            for name in cold_variants:
                runs[name] = []
            resident = []
            for r in range(args.repeats):
                for name, fn in cold_variants.items():
                    drop_cache(path / "images.u8")
                    resident.append(resident_fraction(path / "images.u8"))
                    fresh = SliceStore.open(path)
                    runs[name].append(fn(fresh, r))
                    del fresh
                    gc.collect()
            print(f"(cold runs: at most {max(resident):.1%} of images.u8 cached after each drop)")
        base = statistics.median(runs["raw memmap, sequential"])
        mb = 224 * 224 / 1e6
        print(
            f"loader, {n} images 224x224 uint8 ({n * mb:.0f} MB), batch {b}, "
            f"median of {args.repeats} (interleaved), one process unless stated"
        )
        for name, vals in runs.items():
            med = statistics.median(vals)
            print(
                f"  {name:<26} {med:10.0f} images/s  ({med * mb:7.1f} MB/s)  "
                f"x{med / base:5.2f} vs raw sequential   "
                f"(runs: {', '.join(f'{v:.0f}' for v in vals)})"
            )
        print("  target: BatchFeeder >= 20,000 images/s per process")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
