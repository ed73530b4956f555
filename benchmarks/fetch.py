"""Fetch throughput (series/s, MB/s) against loopback NBIA and S3 servers, beside a naive baseline.

Servers: the loopback NBIA v4 server and the moto S3 server (IDC layout) of ``tests/servers``,
serving copies of pydicom's real test files (CT_small, MR_small, emri_small) with distinct UIDs.
Loopback has no latency or bandwidth limit, so these figures measure the client's own overhead
(requests, zip extraction, verification, journal, fsync), not a network; ``--throttle`` and
``--delay`` make the NBIA server pace its answers like a remote one.

Measured in the same run, interleaved repeat by repeat, medians printed:

* ``baseline``: a naive sequential loop, one request per series (NBIA ``getImage``; S3: list the
  prefix, then one GET per object), files written as they come, no verification, no retries.
* ``hypermodal``: :func:`hypermodal.sources.fetch.run.fetch_plan` with ``--workers`` threads: MD5 /
  ETag checks, DICOM parse of every instance, counts, journal, atomic publish.
* ``stream build``: :func:`hypermodal.store.stream.stream_build` (fetch → decode → 224² store →
  delete) from NBIA, for the end-to-end rate.

    .venv/bin/python benchmarks/fetch.py                     # ~30 s
    .venv/bin/python benchmarks/fetch.py --series 60 --per-series 20 --workers 8
    .venv/bin/python benchmarks/fetch.py --delay 0.05        # 50 ms per request, like a WAN
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers.dicom_data import make_corpus, plan_records  # noqa: E402
from tests.servers.nbia_server import nbia_server  # noqa: E402

from hypermodal.sources.fetch import FetchOptions, RetryPolicy, fetch_plan, plan_rows  # noqa: E402


def naive_nbia(records: list[dict], out: Path) -> int:
    """One getImage request per series, members written straight to disk; bytes written."""
    total = 0
    for r in records:
        url = f"{r['url']}/getImage?SeriesInstanceUID={r['series']}"
        with urllib.request.urlopen(url, timeout=60) as resp:
            body = resp.read()
        folder = out / r["series"]
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            for name in zf.namelist():
                data = zf.read(name)
                (folder / Path(name).name).write_bytes(data)
                total += len(data)
    return total


def naive_s3(records: list[dict], out: Path, endpoint: str) -> int:
    """List each series prefix, GET each object (unsigned), write it; bytes written."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    total = 0
    for r in records:
        bucket, _, prefix = r["url"][len("s3://") :].partition("/")
        prefix = prefix.rstrip("*")
        folder = out / r["series"]
        folder.mkdir(parents=True, exist_ok=True)
        listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for obj in listing.get("Contents", []):
            data = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            (folder / Path(obj["Key"]).name).write_bytes(data)
            total += len(data)
    return total


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    t = time.perf_counter()
    nbytes = fn()
    return time.perf_counter() - t, nbytes


def _report(title: str, n_series: int, runs: dict[str, list[tuple[float, int]]]) -> None:
    print(f"\n{title}")
    print(f"  {'variant':<28}{'series/s':>10}{'MB/s':>10}{'median s':>10}   vs baseline")
    base = statistics.median(s for s, _ in runs["baseline"])
    for name, results in runs.items():
        sec = statistics.median(s for s, _ in results)
        mb = statistics.median(b for _, b in results) / 1e6
        ratio = base / sec if sec else float("nan")
        print(f"  {name:<28}{n_series / sec:>10.1f}{mb / sec:>10.1f}{sec:>10.3f}   ×{ratio:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--series", type=int, default=24)
    ap.add_argument("--per-series", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.0, help="NBIA: seconds before each answer")
    ap.add_argument("--throttle", type=float, default=None, help="NBIA: bytes/s per response")
    ap.add_argument("--no-s3", action="store_true", help="skip the moto S3 server")
    ap.add_argument("--no-stream", action="store_true", help="skip the stream build")
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    tmp = Path(tempfile.mkdtemp(prefix="hm-fetch-bench-"))
    try:
        corpus = make_corpus(tmp / "corpus", args.series, args.per_series)
        size_mb = sum(s.size_MB for s in corpus)
        print(
            f"corpus: {args.series} series × {args.per_series} instances, {size_mb:.1f} MB "
            f"(real pydicom files); workers={args.workers}; repeats={args.repeats}"
        )
        opts = FetchOptions(
            workers=args.workers,
            retry=RetryPolicy(attempts=2, backoff_s=0.1),
            timeout_s=60,
            progress=False,
        )

        def fetch_into(records: list[dict], o: FetchOptions) -> Callable[[], int]:
            def run() -> int:
                out = tmp / "out"
                shutil.rmtree(out, ignore_errors=True)
                s = fetch_plan(plan_rows(records), out, o)
                assert s.failed == 0, s.failures
                return s.bytes

            return run

        def naive_into(fn: Callable[[Path], int]) -> Callable[[], int]:
            def run() -> int:
                out = tmp / "naive"
                shutil.rmtree(out, ignore_errors=True)
                return fn(out)

            return run

        with nbia_server(corpus) as srv:
            srv.delay_s = args.delay
            srv.throttle_bps = args.throttle
            records = plan_records(corpus, "tcia", lambda s: srv.url)
            variants: dict[str, Callable[[], int]] = {
                "baseline": naive_into(lambda out: naive_nbia(records, out)),
                f"hypermodal ({args.workers} workers)": fetch_into(records, opts),
                "hypermodal (1 worker)": fetch_into(
                    records, FetchOptions(**{**opts.__dict__, "workers": 1})
                ),
            }
            peaks: dict[bool, int] = {}
            if not args.no_stream:
                from hypermodal.store.stream import stream_build

                def stream(prefetch: bool) -> Callable[[], int]:
                    def run() -> int:
                        out = tmp / "store"
                        shutil.rmtree(out, ignore_errors=True)
                        s = stream_build(
                            records_df(records), out, scratch=tmp / "scratch",
                            workers=args.workers, fetch_options=opts, prefetch=prefetch,
                            batch_series=max(1, args.series // 4), default_split="train",
                            progress=False,
                        )  # fmt: skip
                        peaks[prefetch] = s.peak_scratch_bytes
                        return s.bytes_fetched

                    return run

                variants["stream build (fetch→store)"] = stream(False)
                variants["stream build --prefetch"] = stream(True)
            runs: dict[str, list[tuple[float, int]]] = {k: [] for k in variants}
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    runs[name].append(_timed(fn))
            _report("NBIA v4 (TCIA) on loopback", args.series, runs)
            for prefetch, peak in peaks.items():
                print(
                    f"  stream build{' --prefetch' if prefetch else ''}: peak scratch "
                    f"{peak / 1e6:.2f} MB for {size_mb:.1f} MB of DICOM "
                    f"(batches of {max(1, args.series // 4)} series)"
                )

        if not args.no_s3:
            try:
                from tests.servers.s3 import s3_server
            except ImportError:  # pragma: no cover - moto/boto3 missing
                print("\nS3: moto/boto3 not installed; skipped")
                return
            with s3_server() as s3:
                urls = {s.series: s3.upload_series(s) for s in corpus}
                records = plan_records(corpus, "idc", lambda s: urls[s.series])
                s3_opts = FetchOptions(**{**opts.__dict__, "s3_endpoint": s3.endpoint})
                variants = {
                    "baseline": naive_into(lambda out: naive_s3(records, out, s3.endpoint)),
                    f"hypermodal ({args.workers} workers)": fetch_into(records, s3_opts),
                    "hypermodal (1 worker)": fetch_into(
                        records, FetchOptions(**{**s3_opts.__dict__, "workers": 1})
                    ),
                }
                runs = {k: [] for k in variants}
                for _ in range(args.repeats):
                    for name, fn in variants.items():
                        runs[name].append(_timed(fn))
                _report("S3 (IDC layout, moto) on loopback", args.series, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def records_df(records: list[dict]):
    import pandas as pd

    return pd.DataFrame(records)


if __name__ == "__main__":
    main()
