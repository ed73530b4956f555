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
``md5hashes.csv``, S3 ETags of single-part uploads). A rerun skips verified series and redoes
anything else, so an interrupted fetch (even ``kill -9``) resumes and ends with exactly the
planned instances. Network errors, time-outs and failed checks are retried with exponential
backoff; archives that try to escape the target folder are reported, never retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from hypermodal.common.errors import FetchError, PermanentFetchError, UnsafeArchiveError
from hypermodal.common.files import exclusive_lock, fsync_dir
from hypermodal.sources.fetch.plan_rows import (
    PlanRow,
    safe_name,
)

log = logging.getLogger(__name__)

STATE_DIR = ".fetch"
JOURNAL = "journal.sqlite"
PENDING, DOWNLOADING, VERIFIED, FAILED = "pending", "downloading", "verified", "failed"
CHUNK = 1 << 20


# ------------------------------------------------------------------------------------- errors
# ---------------------------------------------------------------------------------- retrying
@dataclass
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), with jitter."""
        import random

        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


def with_retries(func: Callable[[], Any], policy: RetryPolicy, what: str) -> Any:
    """Call ``func`` until it succeeds, retrying on anything but :class:`PermanentFetchError`."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return func()
        except PermanentFetchError:
            raise
        except Exception as exc:
            if attempt >= policy.attempts:
                raise
            wait = policy.delay(attempt)
            log.info("%s: attempt %d failed (%s); retrying in %.1fs", what, attempt, exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------- file helpers
def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def stream_to_file(
    chunks: Iterable[bytes],
    dest: Path,
    on_bytes: Callable[[int], None] | None = None,
    expected_size: int | None = None,
    max_bytes: int | None = None,
) -> int:
    """Write ``chunks`` to ``dest`` through a temporary name; return the byte count.

    Memory stays bounded by one chunk. Raises :class:`FetchError` when the body is shorter or
    longer than ``expected_size`` (a connection cut mid-body).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    n = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                if not chunk:
                    continue
                fh.write(chunk)
                n += len(chunk)
                if max_bytes is not None and n > max_bytes:
                    raise PermanentFetchError(f"{dest.name}: more than {max_bytes} bytes")
                if on_bytes:
                    on_bytes(len(chunk))
        if expected_size is not None and n != expected_size:
            raise FetchError(f"{dest.name}: got {n} bytes, expected {expected_size}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return n


# ------------------------------------------------------------------------ safe zip extraction
@dataclass
class ZipLimits:
    max_members: int = 100_000
    max_member_bytes: int = 4 << 30
    max_total_bytes: int = 64 << 30
    max_ratio: float = 200.0  # uncompressed / compressed, per member (zip bombs)


def _unsafe_member(name: str) -> str | None:
    if not name or "\0" in name:
        return "empty name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "parent-folder component"
    return None


def safe_extract_zip(
    archive: Path,
    dest: Path,
    limits: ZipLimits | None = None,
    keep: Callable[[str], bool] | None = None,
) -> dict[str, Path]:
    """Extract ``archive`` into ``dest`` safely; return ``{member name: extracted path}``.

    Every member name is checked (no absolute paths, no ``..``, no symlinks or special files)
    and the whole archive is refused with :class:`UnsafeArchiveError` if one fails; members are
    written to generated flat names (``m000000``…) so nothing can land outside ``dest`` even if a
    check were missed. Sizes are counted while decompressing, not trusted from the header.
    ``keep(name)`` may skip members (they are still checked).
    """
    limits = limits or ZipLimits()
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    total = 0
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{archive.name}: not a readable zip ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise UnsafeArchiveError(f"{len(infos)} members > limit {limits.max_members}")
        for info in infos:
            why = _unsafe_member(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip says nothing
            if why is None and kind == stat.S_IFLNK:
                why = "symbolic link"
            elif why is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                why = "special file"
            if why:
                raise UnsafeArchiveError(f"zip member {info.filename!r}: {why}")
        for i, info in enumerate(infos):
            if info.is_dir() or (keep is not None and not keep(info.filename)):
                continue
            if info.filename in out:
                raise UnsafeArchiveError(f"zip member {info.filename!r} appears twice")
            target = dest / f"m{i:06d}"
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        if written > limits.max_member_bytes or total > limits.max_total_bytes:
                            raise UnsafeArchiveError(f"{info.filename!r}: over the size limit")
                        if written > 1 << 20 and written > limits.max_ratio * max(
                            info.compress_size, 1
                        ):
                            raise UnsafeArchiveError(f"{info.filename!r}: compression ratio")
                        dst.write(chunk)
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
                raise FetchError(f"zip member {info.filename!r} is damaged: {exc}") from exc
            out[info.filename] = target
    return out


# ---------------------------------------------------------------------------------- sources
@dataclass
class Download:
    """What a source put in the staging folder: files, plus checks the server offered."""

    files: list[Path] = field(default_factory=list)
    md5: dict[Path, str] = field(default_factory=dict)  # file → expected MD5 (hex)
    server_count: int | None = None  # instance count the server reported


class Source(Protocol):
    def download_series(
        self, row: PlanRow, staging: Path, on_bytes: Callable[[int], None]
    ) -> Download: ...


@dataclass
class FetchOptions:
    workers: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0  # connect/read time-out of each request
    s3_endpoint: str | None = None  # IDC: S3-compatible endpoint (tests, mirrors)
    tcia_md5: bool = True  # use getImageWithMD5Hash
    zip_limits: ZipLimits = field(default_factory=ZipLimits)
    progress: bool = True
    retry_failed: bool = True  # also retry series a previous run marked failed

    @classmethod
    def from_cli(
        cls,
        workers: int,
        retries: int,
        backoff: float,
        timeout: float,
        s3_endpoint: str | None,
        **rest: Any,
    ) -> FetchOptions:
        """Options from the command-line flags shared by ``fetch`` and ``build``."""
        return cls(
            workers=workers,
            retry=RetryPolicy(attempts=max(1, retries), backoff_s=backoff),
            timeout_s=timeout,
            s3_endpoint=s3_endpoint,
            **rest,
        )


def make_source(kind: str, opts: FetchOptions) -> Source:
    if kind == "tcia":
        from hypermodal.sources.fetch.tcia import TCIASource

        return TCIASource(opts)
    if kind == "idc":
        from hypermodal.sources.fetch.idc import IDCSource

        return IDCSource(opts)
    if kind == "dicomweb":
        from hypermodal.sources.fetch.dicomweb import DICOMwebSource

        return DICOMwebSource(opts)
    raise ValueError(f"unknown source {kind!r}")


# -------------------------------------------------------------------------------- verification
def verify_series(row: PlanRow, download: Download) -> list[tuple[Path, str]]:
    """Check a staged series; return ``[(file, SOPInstanceUID)]`` or raise :class:`FetchError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    problems: list[str] = []
    for path, expected in download.md5.items():
        got = md5_file(path)
        if got.lower() != expected.lower():
            problems.append(f"MD5 mismatch for {path.name}: {got} != {expected}")
    if problems:
        raise FetchError("; ".join(problems[:3]))
    seen: dict[str, Path] = {}
    out: list[tuple[Path, str]] = []
    for path in download.files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
            raise FetchError(f"{path.name} does not parse as DICOM: {exc}") from exc
        sop = str(ds.get("SOPInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        if not sop:
            raise FetchError(f"{path.name} has no SOPInstanceUID")
        if series != row.series:
            raise FetchError(f"{path.name} belongs to series {series}, not {row.series}")
        if sop in seen:
            raise FetchError(f"SOPInstanceUID {sop} appears twice ({seen[sop].name}, {path.name})")
        safe_name(sop, "SOPInstanceUID")
        seen[sop] = path
        out.append((path, sop))
    n = len(out)
    if not n:
        raise FetchError("no instances downloaded")
    if row.images is not None and n != row.images:
        raise FetchError(f"{n} instances on disk, plan expects {row.images}")
    if download.server_count is not None and n != download.server_count:
        raise FetchError(f"{n} instances on disk, server lists {download.server_count}")
    return out


# ------------------------------------------------------------------------------------ journal
class Journal:
    """SQLite journal, one row per series; every state change is one committed transaction."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS series (key TEXT PRIMARY KEY, dataset TEXT, series TEXT,"
            " source TEXT, state TEXT, attempts INTEGER DEFAULT 0, instances INTEGER,"
            " bytes INTEGER, error TEXT, updated REAL)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def states(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, state FROM series").fetchall())

    def row(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute("SELECT * FROM series WHERE key = ?", (key,))
            r = cur.fetchone()
            return dict(zip([d[0] for d in cur.description], r, strict=True)) if r else None

    def add(self, row: PlanRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO series (key, dataset, series, source, state, updated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row.key, row.dataset, row.series, row.source, PENDING, time.time()),
            )

    def set(self, key: str, state: str, **values: Any) -> None:
        cols = ["state = ?", "updated = ?"] + [f"{k} = ?" for k in values]
        with self._lock:
            self._db.execute(
                f"UPDATE series SET {', '.join(cols)} WHERE key = ?",
                (state, time.time(), *values.values(), key),
            )

    def bump_attempts(self, key: str) -> None:
        with self._lock:
            self._db.execute("UPDATE series SET attempts = attempts + 1 WHERE key = ?", (key,))


# ------------------------------------------------------------------------------------ summary
@dataclass
class FetchSummary:
    planned: int = 0
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
    def __init__(self, total_series: int, total_bytes: int | None, enabled: bool):
        from hypermodal.common.progress import progress_bar

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
    attempt_bytes = [0]

    def count(n: int) -> None:
        attempt_bytes[0] += n
        on_bytes(n)

    def attempt() -> tuple[int, int]:
        journal.bump_attempts(row.key)
        _rmtree(staging)
        staging.mkdir(parents=True)
        attempt_bytes[0] = 0
        download = source.download_series(row, staging / "in", count)
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
    try:
        return with_retries(attempt, opts.retry, row.key)
    except Exception as exc:
        _rmtree(staging)
        journal.set(row.key, FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise


def pending_rows(rows: list[PlanRow], target: Path, journal: Journal, retry_failed: bool):
    """Split rows into (to fetch, already verified); verified rows whose folder vanished redo."""
    states = journal.states()
    todo, done = [], []
    for row in rows:
        state = states.get(row.key)
        if state == VERIFIED and (target / row.dataset / row.series).is_dir():
            done.append(row)
        elif state == FAILED and not retry_failed:
            done.append(row)
        else:
            todo.append(row)
    return todo, done


def _lock_target(target: Path) -> Any:
    try:
        return exclusive_lock(target / STATE_DIR / "lock", "fetch")
    except FileExistsError:
        raise FileExistsError(f"another hypermodal fetch is writing to {target}") from None


def fetch_plan(
    rows: list[PlanRow],
    target: Path | str,
    options: FetchOptions | None = None,
    sources: Mapping[str, Source] | None = None,
) -> FetchSummary:
    """Fetch every row into ``target``; resume from the journal; return a summary."""
    opts = options or FetchOptions()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    lock = _lock_target(target)
    journal = Journal(target / STATE_DIR / JOURNAL)
    summary = FetchSummary(planned=len(rows))
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
                    try:
                        n, nbytes = fut.result()
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
    return summary


# ------------------------------------------------------------------------------------- dry run
def dry_run(rows: list[PlanRow], target: Path | str | None = None) -> dict[str, Any]:
    """What a fetch would download (skipping series a journal in ``target`` has verified)."""
    done: set[str] = set()
    if target is not None and (Path(target) / STATE_DIR / JOURNAL).exists():
        journal = Journal(Path(target) / STATE_DIR / JOURNAL)
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
    return {
        "series": len(todo),
        "already_verified": len(done),
        "images": sum(r.images or 0 for r in todo),
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
