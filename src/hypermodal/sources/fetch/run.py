"""Resumable, verified downloads of planned series from IDC, TCIA (NBIA v4) and DICOMweb.

The plan is read by :mod:`hypermodal.sources.fetch.plan_rows` (its columns are listed there).

Layout of the target folder ``DIR``::

    DIR/<dataset>/<series>/<SOPInstanceUID>.dcm   only verified series, renamed into place whole
    DIR/.fetch/journal.sqlite                     one row per series: pending → downloading →
                                                  verified | failed (attempts, error, bytes)
    DIR/.fetch/partial/<key>/                     staging of series being downloaded

A series counts as *verified* only after every instance is on disk, each parses as DICOM and
belongs to the planned series, no SOPInstanceUID repeats, the count matches ``images`` (and the
server's own count where it gives one), and MD5 matches where the server gives one (TCIA's
``md5hashes.csv``, S3 ETags of single-part uploads); see
:func:`~hypermodal.sources.fetch.verify.verify_series`. A rerun skips verified series and redoes
anything else, so an interrupted fetch (even ``kill -9``) resumes and ends with exactly the
planned instances. Network errors, time-outs and failed checks are retried with exponential
backoff; archives that try to escape the target folder are reported, never retried. A server
that cannot be reached at all (connection refused, unknown host, connect time-out) is not
retried: the fetch stops at once with
:class:`~hypermodal.sources.fetch.reach.SourceUnreachableError` (a rerun resumes).

Series the plan's caps reduce to zero images (``kept_images == 0``) are not downloaded, as
``hypermodal build`` does not download them; :func:`dry_run` counts exactly what
:func:`fetch_plan` would download, which is what the plan promises (``series_kept``,
``download_MB``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypermodal.common.files import fsync_dir
from hypermodal.common.progress import progress_bar
from hypermodal.sources.fetch.base import FetchOptions, Source, with_retries
from hypermodal.sources.fetch.dicomweb import DICOMwebSource
from hypermodal.sources.fetch.idc import IDCSource
from hypermodal.sources.fetch.journal import (
    DOWNLOADING,
    FAILED,
    STATE_DIR,
    VERIFIED,
    Journal,
    journal_path,
    lock_target,
    pending_rows,
)
from hypermodal.sources.fetch.plan_rows import PlanRow, split_capped
from hypermodal.sources.fetch.reach import SourceUnreachableError, describe_source
from hypermodal.sources.fetch.tcia import TCIASource
from hypermodal.sources.fetch.verify import verify_series

log = logging.getLogger(__name__)

#: The source registry: plan ``source`` value → the class that downloads its series.
SOURCE_TYPES: dict[str, Callable[[FetchOptions], Source]] = {
    "idc": IDCSource,
    "tcia": TCIASource,
    "dicomweb": DICOMwebSource,
}


def make_source(kind: str, opts: FetchOptions) -> Source:
    """A source of kind ``kind`` (a key of :data:`SOURCE_TYPES`) built with ``opts``."""
    if kind not in SOURCE_TYPES:
        raise ValueError(f"unknown source {kind!r}")
    return SOURCE_TYPES[kind](opts)


# ------------------------------------------------------------------------------------ summary
@dataclass
class FetchSummary:
    """What one :func:`fetch_plan` call did; ``to_dict`` is the JSON ``hypermodal fetch`` prints."""

    planned: int = 0
    capped_out: int = 0  # kept_images == 0 in the plan: not downloaded
    verified: int = 0  # verified in this run
    skipped: int = 0  # already verified by an earlier run
    failed: int = 0
    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def series_per_s(self) -> float:
        return self.verified / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["series_per_s"] = round(self.series_per_s, 3)
        d["MB_per_s"] = round(self.mb_per_s, 3)
        d["seconds"] = round(self.seconds, 3)
        return d


# --------------------------------------------------------------------------------- the fetcher
def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class _Progress:
    """Two bars, series done and bytes received, updated from the worker threads."""

    def __init__(self, total_series: int, total_bytes: int | None, enabled: bool):
        self._lock = threading.Lock()
        self.series = progress_bar(total_series, enabled=enabled, desc="series", unit="series")
        self.bytes = progress_bar(
            total_bytes or 0, enabled=enabled, desc="bytes", unit="B", unit_scale=True, position=1
        )

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes.update(n)

    def series_done(self) -> None:
        with self._lock:
            self.series.update(1)

    def close(self) -> None:
        self.series.close()
        self.bytes.close()


def fetch_series(
    row: PlanRow,
    target: Path,
    journal: Journal,
    source: Source,
    opts: FetchOptions,
    on_bytes: Callable[[int], None],
) -> tuple[int, int]:
    """Download, verify and publish one series; return ``(instances, bytes)``."""
    staging = target / STATE_DIR / "partial" / row.dataset / row.series
    final = target / row.dataset / row.series

    def attempt() -> tuple[int, int]:
        journal.bump_attempts(row.key)
        _rmtree(staging)
        staging.mkdir(parents=True)
        download = source.download_series(row, staging / "in", on_bytes)
        files = verify_series(row, download)
        done = staging / "series"
        done.mkdir()
        for path, sop in files:
            os.replace(path, done / f"{sop}.dcm")
        fsync_dir(done)
        nbytes = sum(p.stat().st_size for p in done.iterdir())
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # left by a run that died between rename and journal update
            old = staging / "old"
            os.replace(final, old)
        os.replace(done, final)
        fsync_dir(final.parent)
        journal.set(row.key, VERIFIED, instances=len(files), bytes=nbytes, error=None)
        _rmtree(staging)
        return len(files), nbytes

    journal.set(row.key, DOWNLOADING)
    where = (opts.s3_endpoint or row.url) if row.source == "idc" else describe_source(row.url)
    try:
        return with_retries(attempt, opts.retry, row.key, where)
    except Exception as exc:
        _rmtree(staging)
        journal.set(row.key, FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise


def fetch_plan(
    rows: list[PlanRow],
    target: Path | str,
    options: FetchOptions | None = None,
    sources: Mapping[str, Source] | None = None,
) -> FetchSummary:
    """Fetch every row into ``target``; resume from the journal; return a summary.

    Rows whose ``kept_images`` is 0 are counted (``capped_out``), not fetched.

    Raises:
        SourceUnreachableError: a server does not accept connections; the series in flight are
            marked failed, the rest stay pending, and nothing else is tried.
    """
    opts = options or FetchOptions()
    target = Path(target)
    rows, capped = split_capped(rows)
    target.mkdir(parents=True, exist_ok=True)
    lock = lock_target(target)
    journal = Journal(journal_path(target))
    summary = FetchSummary(planned=len(rows) + len(capped), capped_out=len(capped))
    unreachable: list[SourceUnreachableError] = []
    start = time.perf_counter()
    try:
        for row in rows:
            journal.add(row)
        todo, done = pending_rows(rows, target, journal, opts.retry_failed)
        summary.skipped = len(done)
        _rmtree(target / STATE_DIR / "partial")  # half-finished work of a killed run
        built: dict[str, Source] = dict(sources or {})
        for kind in sorted({r.source for r in todo} - set(built)):
            built[kind] = make_source(kind, opts)
        total_mb = sum(r.size_MB or 0 for r in todo)
        bar = _Progress(len(todo), int(total_mb * 1e6) or None, opts.progress)
        counting = threading.Lock()

        def run(row: PlanRow) -> tuple[int, int]:
            return fetch_series(row, target, journal, built[row.source], opts, bar.add_bytes)

        try:
            with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
                futures = {pool.submit(run, row): row for row in todo}
                for fut in as_completed(futures):
                    row = futures[fut]
                    if fut.cancelled():
                        continue
                    try:
                        n, nbytes = fut.result()
                    except SourceUnreachableError as exc:
                        if not unreachable:  # the rest would fail the same way: stop
                            for other in futures:
                                other.cancel()
                        unreachable.append(exc)
                        with counting:
                            summary.failed += 1
                            summary.failures[row.key] = str(exc)
                        continue
                    except Exception as exc:
                        with counting:
                            summary.failed += 1
                            summary.failures[row.key] = f"{type(exc).__name__}: {exc}"
                        log.warning("series %s failed: %s", row.key, exc)
                    else:
                        with counting:
                            summary.verified += 1
                            summary.instances += n
                            summary.bytes += nbytes
                    bar.series_done()
        finally:
            bar.close()
        _rmtree(target / STATE_DIR / "partial")
    finally:
        journal.close()
        lock.close()
    summary.seconds = time.perf_counter() - start
    if unreachable:
        raise unreachable[0]
    return summary


# ------------------------------------------------------------------------------------- dry run
def dry_run(rows: list[PlanRow], target: Path | str | None = None) -> dict[str, Any]:
    """What a fetch would download (skipping series a journal in ``target`` has verified, and
    series the plan's caps reduce to zero images, which are counted as ``capped_out``).

    ``images`` counts every instance to download, ``images_kept`` the ones the plan keeps
    after its caps (where it says).
    """
    rows, capped = split_capped(rows)
    done: set[str] = set()
    if target is not None and journal_path(Path(target)).exists():
        journal = Journal(journal_path(Path(target)))
        try:
            _, finished = pending_rows(rows, Path(target), journal, retry_failed=True)
            done = {r.key for r in finished}
        finally:
            journal.close()
    todo = [r for r in rows if r.key not in done]
    by_source: dict[str, dict[str, Any]] = {}
    for r in todo:
        s = by_source.setdefault(r.source, {"series": 0, "images": 0, "size_MB": 0.0})
        s["series"] += 1
        s["images"] += r.images or 0
        s["size_MB"] += r.size_MB or 0.0
    for s in by_source.values():
        s["size_MB"] = round(s["size_MB"], 3)
    kept = [r.kept_images if r.kept_images is not None else r.images for r in todo]
    return {
        "series": len(todo),
        "already_verified": len(done),
        "capped_out": len(capped),
        "images": sum(r.images or 0 for r in todo),
        "images_kept": sum(k or 0 for k in kept),
        "size_MB": round(sum(r.size_MB or 0.0 for r in todo), 3),
        "size_unknown_series": sum(r.size_MB is None for r in todo),
        "by_source": by_source,
        "rows": [asdict(r) for r in todo],
    }


def iter_verified(target: Path | str) -> Iterator[Path]:
    """Files of verified series under ``target`` (for tests and catalog building)."""
    target = Path(target)
    for ds in sorted(target.iterdir()):
        if ds.name == STATE_DIR or not ds.is_dir():
            continue
        for series in sorted(ds.iterdir()):
            yield from sorted(series.glob("*.dcm"))
