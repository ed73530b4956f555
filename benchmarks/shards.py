"""Shard reading rate: shuffled batches from the memmap store vs shards (local disk, S3 loopback).

Builds a store of random 224×224 uint8 images (synthetic: throughput only), exports it with
:func:`hypermodal.store.shards.export_shards` to a local folder and to a moto S3 server on loopback,
writes the same images as webdataset tar shards (and, with ``--litdata``, litdata chunks), then
reads one shuffled epoch of every reader, interleaved repeat by repeat, and prints median
images/s side by side with the memmap baseline measured in the same run:

* ``memmap store, BatchFeeder`` — the baseline: global shuffle, sorted fancy-indexed batches.
* ``shards, local`` (CRC-32 checked; also ``no check`` and ``sha256``) — ``ShardFeeder``.
* ``shards, S3 (moto, loopback)`` — the same reader over boto3 GETs from ``moto_server`` run as
  a separate process on 127.0.0.1 (``--s3-inprocess`` uses the tests' threaded fixture instead,
  which competes with the reader for the GIL).
* ``webdataset tars, local`` / ``webdataset tars, S3`` — ``wds.WebDataset`` with shard shuffle,
  a sample shuffle buffer of the same size, ``np.frombuffer`` decode and ``batched``.
* ``litdata chunks, local`` (``--litdata``) — ``litdata.StreamingDataset`` and its loader.

Every reader runs in one process with no loader workers (2 shared cores here), so the figures are
per-process costs. Numbers feed ``docs/store-format.md`` §7.

    .venv/bin/python benchmarks/shards.py                 # ~1-2 min
    .venv/bin/python benchmarks/shards.py --images 20000 --shard-mb 64 --litdata
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from hypermodal.labels import ClassVocabulary
from hypermodal.store import SliceStore, write_store_arrays
from hypermodal.store.loader import BatchFeeder
from hypermodal.store.shards import ShardFeeder, ShardSet, export_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.servers


def make_store(path: Path, n: int, size: int = 224, seed: int = 0) -> SliceStore:
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), dtype=np.uint8)
    for lo in range(0, n, 2048):
        hi = min(n, lo + 2048)
        images[lo:hi] = rng.integers(0, 256, (hi - lo, size, size), dtype=np.uint8)
    classes = ClassVocabulary().classes
    table = pd.DataFrame(
        {
            "dataset": "bench",
            "label": [
                classes[i * len(classes) // n] for i in range(n)
            ],  # label-sorted, like a store
            "split": "train",
        }
    )
    return write_store_arrays(path, images, table, ClassVocabulary())


def write_wds(store: SliceStore, out: Path, shard_bytes: int) -> list[str]:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    rows = store.rows("train")
    rows = rows[np.random.default_rng(0).permutation(len(rows))]
    labels = store.labels()
    with wds.ShardWriter(str(out / "train-%05d.tar"), maxsize=shard_bytes, verbose=0) as sink:
        for r in rows:
            sink.write(
                {
                    "__key__": f"{r:09d}",
                    "u8": np.ascontiguousarray(store.images[r]).tobytes(),
                    "cls": str(int(labels[r])).encode(),
                }
            )
    return sorted(str(p) for p in out.glob("train-*.tar"))


def wds_epoch(urls: list[str], batch: int, buffer: int, size: int, epoch: int) -> Iterable:
    import torch
    import webdataset as wds

    def decode(sample: dict) -> tuple:
        img = np.frombuffer(sample["u8"], dtype=np.uint8).reshape(size, size)
        return img, int(sample["cls"]), int(sample["__key__"])

    def collate(samples: list) -> tuple:
        imgs, labels, rows = zip(*samples, strict=True)
        return (
            torch.from_numpy(np.stack(imgs)),
            torch.tensor(labels, dtype=torch.int64),
            torch.tensor(rows, dtype=torch.int64),
        )

    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), seed=epoch, empty_check=False)
        .shuffle(buffer, initial=buffer, rng=__import__("random").Random(epoch))
        .map(decode)
        .batched(batch, collation_fn=collate, partial=True)
    )
    return ds


def register_wds_s3(client: object) -> None:
    """Let webdataset open ``s3://bucket/key`` through a boto3 client (streaming GET)."""
    import importlib

    gopen = importlib.import_module("webdataset.gopen")  # the package re-exports a function

    def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw: object) -> object:
        bucket, _, key = url[len("s3://") :].partition("/")
        return client.get_object(Bucket=bucket, Key=key)["Body"]._raw_stream  # type: ignore[attr-defined]

    gopen.gopen_schemes["s3"] = gopen_s3


class LitSample:
    """litdata's ``optimize`` pickles its function into a spawned worker: reopen the store there."""

    def __init__(self, path: Path):
        self.path = path
        self.store: SliceStore | None = None

    def __call__(self, r: int) -> dict:
        if self.store is None:
            self.store = SliceStore.open(self.path)
        img = np.ascontiguousarray(self.store.images[r])
        return {"img": img, "label": int(self.store.labels()[r]), "row": int(r)}

    def __getstate__(self) -> dict:
        return {"path": self.path, "store": None}


def write_litdata(store: SliceStore, out: Path, chunk_bytes: int) -> Path:
    from litdata import optimize

    optimize(
        fn=LitSample(store.path),
        inputs=store.rows("train").tolist(),
        output_dir=str(out),
        chunk_bytes=chunk_bytes,
        num_workers=1,
        mode="overwrite",
    )
    return out


def litdata_epoch(path: Path, batch: int, epoch: int) -> Iterable:
    from litdata import StreamingDataLoader, StreamingDataset

    ds = StreamingDataset(str(path), shuffle=True, seed=epoch)
    return StreamingDataLoader(ds, batch_size=batch, num_workers=0)


@contextmanager
def moto_process() -> Iterator[Any]:
    """``moto_server`` in its own process on loopback; yields an object with ``.client`` and
    ``.endpoint``."""
    import boto3
    from tests.servers.dicom_data import free_port

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for _ in range(200):
            try:
                client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        yield SimpleNamespace(client=client, endpoint=f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_epoch(batches: Iterable) -> int:
    n = 0
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b["img"]
        n += len(x)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6000, help="images in the store")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shard-mb", type=float, default=32, help="shard size (MiB)")
    ap.add_argument("--buffer-shards", type=int, default=4, help="shards in the shuffle buffer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--litdata", action="store_true", help="also measure litdata")
    ap.add_argument("--no-s3", action="store_true", help="skip the moto S3 readers")
    ap.add_argument("--s3-inprocess", action="store_true", help="threaded moto in this process")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from tests.servers.s3 import s3_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    work = Path(tempfile.mkdtemp(prefix="bench-shards-", dir=args.workdir))
    try:
        size = 224
        t = time.perf_counter()
        store = make_store(work / "store", args.images, size)
        store = SliceStore.open(store.path)
        print(f"store: {args.images} images ({args.images * size * size / 1e6:.0f} MB)")
        summary = export_shards(store.path, work / "shards", shard_mb=args.shard_mb)
        per_shard = summary.images_per_shard
        print(
            f"shards: {summary.shards} of {per_shard} images ({args.shard_mb:g} MiB), "
            f"export {summary.images / summary.seconds:,.0f} images/s"
        )
        urls = write_wds(store, work / "wds", int(args.shard_mb * 2**20))
        print(f"webdataset: {len(urls)} tar shards; setup {time.perf_counter() - t:.0f} s")
        buffer_images = per_shard * args.buffer_shards
        readers: dict[str, Callable[[int], Iterable]] = {
            "memmap store, BatchFeeder": lambda e: BatchFeeder(
                store.images, store.labels(), store.rows("train"), args.batch, shuffle=True
            ).epoch(e),
        }
        local = ShardSet.open(work / "shards")
        readers["shards, local"] = lambda e: ShardFeeder(
            local, "train", args.batch, seed=0, buffer_shards=args.buffer_shards
        ).epoch(e)
        readers["shards, local, no check"] = lambda e: ShardFeeder(
            local, "train", args.batch, seed=0, buffer_shards=args.buffer_shards, verify="none"
        ).epoch(e)
        readers["shards, local, sha256"] = lambda e: ShardFeeder(
            local, "train", args.batch, seed=0, buffer_shards=args.buffer_shards, verify="sha256"
        ).epoch(e)
        readers["webdataset tars, local"] = lambda e: wds_epoch(
            urls, args.batch, buffer_images, size, e
        )
        if args.litdata:
            lit = write_litdata(store, work / "litdata", int(args.shard_mb * 2**20))
            readers["litdata chunks, local"] = lambda e: litdata_epoch(lit, args.batch, e)

        with s3_server() if args.s3_inprocess else moto_process() as server:
            if not args.no_s3:
                server.client.create_bucket(Bucket="bench")
                s3 = pafs.S3FileSystem(
                    endpoint_override=server.endpoint,
                    scheme="http",
                    access_key="testing",
                    secret_key="testing",
                    region="us-east-1",
                )
                export_shards(
                    store.path, "s3://bench/shards", shard_mb=args.shard_mb, filesystem=s3
                )
                for p in urls:
                    server.client.upload_file(p, "bench", f"wds/{Path(p).name}")
                register_wds_s3(server.client)
                s3_urls = [f"s3://bench/wds/{Path(p).name}" for p in urls]
                remote = ShardSet.open("s3://bench/shards", filesystem=s3)
                readers["shards, S3 (moto, loopback)"] = lambda e: ShardFeeder(
                    remote, "train", args.batch, seed=0, buffer_shards=args.buffer_shards
                ).epoch(e)
                readers["webdataset tars, S3 (moto)"] = lambda e: wds_epoch(
                    s3_urls, args.batch, buffer_images, size, e
                )
            rates: dict[str, list[float]] = {name: [] for name in readers}
            for rep in range(args.repeats):
                for name, make in readers.items():
                    t = time.perf_counter()
                    n = run_epoch(make(rep))
                    dt = time.perf_counter() - t
                    if n != len(store.rows("train")):
                        raise RuntimeError(f"{name}: read {n} images, expected {args.images}")
                    rates[name].append(n / dt)
        base = statistics.median(rates["memmap store, BatchFeeder"])
        print(
            f"\nshuffled epoch of {args.images} images, batch {args.batch}, medians of "
            f"{args.repeats}, one process, no loader workers"
        )
        print(f"{'reader':34s} {'images/s':>10s} {'MB/s':>8s} {'vs memmap':>10s}")
        for name, r in rates.items():
            med = statistics.median(r)
            print(f"{name:34s} {med:10,.0f} {med * size * size / 1e6:8,.0f} {med / base:10.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
