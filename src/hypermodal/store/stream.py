"""Stream-through build: plan → fetch → decode → store → delete, one batch of series at a time.

A corpus that would be terabytes of DICOM needs only its ``size × size`` store on disk plus one
batch of DICOM in a scratch folder. Each batch goes through the same machinery as the staged
pipeline, so the pixels are byte-for-byte those of ``hypermodal fetch`` + ``catalog`` +
``store``:

1. **fetch** the batch's series into ``SCRATCH/fetch`` with :func:`~hypermodal.sources.fetch.run.
   fetch_plan` (verified, retried, journaled); series that still fail are reported, not fatal;
2. move the verified series folders to ``SCRATCH/batch/<dataset>/<series>/`` and read their
   headers with :func:`~hypermodal.catalog.build_catalog` (labels from the DICOM Modality via the
   :class:`~hypermodal.labels.ClassVocabulary`), then set each row's ``split`` from the plan and
   keep the first ``kept_images`` images of each series (the plan's caps, in plan order);
3. decode + preprocess them with :func:`~hypermodal.store.build.build_store` into a batch store in
   ``SCRATCH/work``;
4. **append** the batch's pixels to ``OUT/images.u8`` at the committed row offset (then
   ``fdatasync``), write its manifest and errors part files, and only then **commit** the batch in
   ``OUT/.build/journal.sqlite``;
5. delete the batch's DICOM (``keep_dicom`` moves it back to ``SCRATCH/fetch`` instead).

Rows are stored in plan order (then file order within a series), whatever the batch size.

Resume: a rerun truncates ``images.u8`` to the last committed row, drops part files of
uncommitted batches and continues with the first uncommitted series (series already verified in
the scratch folder are not downloaded again), so nothing is stored twice and nothing is missed.
At the end the parts become ``manifest.parquet`` and ``errors.jsonl`` and ``store.json`` is
written last: the result is a normal store for :meth:`~hypermodal.store.build.SliceStore.open`.

Manifest ``path`` values are relative to the DICOM layout (``<dataset>/<series>/<SOP>.dcm``);
``store.json`` says where that layout lives (``dicom_root``) when ``keep_dicom`` kept it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.files import atomic_path, exclusive_lock, write_text_atomic
from hypermodal.common.rejects import error_record, read_errors, write_errors
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.sources.fetch import (
    FetchOptions,
    PlanRow,
    fetch_plan,
    read_plan,
)
from hypermodal.store.build import (
    ERRORS_FILE,
    IMAGES_FILE,
    MANIFEST_FILE,
    META_FILE,
    SPLITS,
    StoreError,
    build_store,
    frame_hash,
    images_per_class_per_split,
)

log = logging.getLogger(__name__)

BUILD_DIR = ".build"
JOURNAL_FILE = "journal.sqlite"
PARTS_DIR = "parts"
FETCH_DIR = "fetch"
BATCH_DIR = "batch"
WORK_DIR = "work"


# ------------------------------------------------------------------------------------- plan
def read_stream_plan(
    plan: Path | str | pd.DataFrame, skipped: list[dict[str, Any]] | None = None
) -> list[PlanRow]:
    """The fetchable series of a plan (:func:`hypermodal.sources.fetch.read_plan`), each with a
    known split (``None`` where the plan has none) or a :class:`ValueError` naming the row."""
    rows = read_plan(plan, skipped)
    for row in rows:
        if row.split is not None and row.split not in SPLITS:
            raise ValueError(f"plan row {row.key}: unknown split {row.split!r}")
    return rows


def _plan_hash(series: list[PlanRow], preprocess: PreprocessConfig, vocab: ClassVocabulary):
    h = hashlib.sha256()
    h.update(json.dumps([preprocess.to_dict(), vocab.to_dict()], sort_keys=True).encode())
    for s in series:
        h.update(json.dumps([s.key, s.split, s.kept_images]).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------- journal
class BuildJournal:
    """``OUT/.build/journal.sqlite``: the plan hash and one committed row per finished batch."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, lo INTEGER, hi INTEGER,"
            " series TEXT, stats TEXT, committed REAL)"
        )

    def close(self) -> None:
        self._db.close()

    def get(self, key: str) -> str | None:
        r = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def batches(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT id, lo, hi, series, stats FROM batches ORDER BY id")
        return [
            {"id": i, "lo": lo, "hi": hi, "series": json.loads(s), "stats": json.loads(st)}
            for i, lo, hi, s, st in cur.fetchall()
        ]

    def commit(self, batch: int, lo: int, hi: int, series: list[str], stats: dict) -> None:
        self._db.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
            (batch, lo, hi, json.dumps(series), json.dumps(stats), time.time()),
        )

    def reset(self) -> None:
        self._db.execute("DELETE FROM batches")
        self._db.execute("DELETE FROM meta")


# ---------------------------------------------------------------------------------- summary
@dataclass
class StreamBuildSummary:
    series_planned: int = 0  # fetchable plan rows
    series_stored: int = 0  # fetched and catalogued
    series_failed: int = 0  # could not be fetched (see errors.jsonl, stage "fetch")
    series_capped_out: int = 0  # kept_images == 0: not fetched at all
    series_unfetchable: int = 0  # plan rows with no fetchable source (external)
    images_expected: int | None = None  # sum of the plan's kept_images (when it has them)
    images_planned: int = 0  # images seen in fetched series, after caps
    images_stored: int = 0
    images_failed: int = 0  # could not be decoded (ok = False; see errors.jsonl)
    images_capped: int = 0  # beyond a series' kept_images
    files_unreadable: int = 0  # headers could not be read (errors.jsonl, stage "catalog")
    files_excluded: int = 0  # modality not a class of the vocabulary
    bytes_fetched: int = 0
    batches: int = 0
    resumed_batches: int = 0
    peak_scratch_bytes: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    def reconciles(self) -> bool:
        return self.images_planned == self.images_stored + self.images_failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# ------------------------------------------------------------------------------ batch steps
# Module-level steps, so tests can interrupt a build at each point.
def _fetch_batch(
    rows: list[PlanRow], target: Path, opts: FetchOptions, sources: dict | None
) -> Any:
    return fetch_plan(rows, target, opts, sources=sources)


def _append_pixels(fd: int, row_bytes: int, lo: int, images_path: Path) -> None:
    """Copy a batch store's ``images.u8`` into the open store file at row ``lo``; sync."""
    offset = lo * row_bytes
    with open(images_path, "rb") as src:
        while chunk := src.read(1 << 24):
            view = memoryview(chunk)
            while view:
                n = os.pwrite(fd, view, offset)
                view = view[n:]
                offset += n
    getattr(os, "fdatasync", os.fsync)(fd)


def _commit_batch(
    journal: BuildJournal, batch: int, lo: int, hi: int, series: list[str], stats: dict
) -> None:
    journal.commit(batch, lo, hi, series, stats)


def _clear_batch(scratch: Path, keep_dicom: bool) -> None:
    batch_dir = scratch / BATCH_DIR
    if keep_dicom:
        _restore_batch(scratch)
    shutil.rmtree(batch_dir, ignore_errors=True)
    shutil.rmtree(scratch / WORK_DIR, ignore_errors=True)


def _restore_batch(scratch: Path) -> None:
    """Move series folders of ``SCRATCH/batch`` back to ``SCRATCH/fetch`` (still verified)."""
    batch_dir = scratch / BATCH_DIR
    if not batch_dir.exists():
        return
    for ds in sorted(p for p in batch_dir.iterdir() if p.is_dir()):
        for series in sorted(p for p in ds.iterdir() if p.is_dir()):
            dest = scratch / FETCH_DIR / ds.name / series.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(series, dest)
    shutil.rmtree(batch_dir, ignore_errors=True)


def _lock(path: Path) -> Any:
    return exclusive_lock(path, "build")


def _catalog_batch(
    batch_dir: Path,
    work: Path,
    series: list[PlanRow],
    vocab: ClassVocabulary,
    engine: Any,
    default_split: str | None,
) -> tuple[pd.DataFrame, list[dict], dict[str, int]]:
    """Headers of the batch → selected rows (split set, caps applied), errors, counts."""
    from hypermodal.catalog import build_catalog, errors_path, read_catalog

    cat_path = work / "catalog.parquet"
    summary = build_catalog([batch_dir], cat_path, vocabulary=vocab, progress=False, engine=engine)
    table = read_catalog(cat_path)
    errors = read_errors(errors_path(cat_path))
    counts = {
        "files_unreadable": summary.files_skipped,
        "files_excluded": summary.files_excluded,
        "images_capped": 0,
    }
    rel = [Path(p).relative_to(batch_dir).as_posix() for p in table["path"]]
    keys = ["/".join(r.split("/")[:2]) for r in rel]
    by_key = {s.key: s for s in series}
    table["split"] = [by_key[k].split or default_split for k in keys]
    if table["split"].isna().any():
        missing = sorted({k for k, s in zip(keys, table["split"], strict=True) if s is None})
        raise ValueError(
            f"plan gives no split for {len(missing)} series (e.g. {missing[0]}); "
            "give --default-split or a plan with a split column"
        )
    rank = table.groupby(pd.Series(keys), sort=False).cumcount().to_numpy()
    cap = np.array(
        [
            by_key[k].kept_images if by_key[k].kept_images is not None else np.iinfo(np.int64).max
            for k in keys
        ],
        dtype=np.int64,
    )
    keep = rank < cap
    counts["images_capped"] = int((~keep).sum())
    # Rows in plan order (then catalog order within a series), whatever the batch size.
    position = {s.key: i for i, s in enumerate(series)}
    order = np.argsort(np.array([position[k] for k in keys], dtype=np.int64), kind="stable")
    keep_order = order[keep[order]]
    for e in errors:
        with contextlib.suppress(ValueError):
            e["path"] = Path(e["path"]).relative_to(batch_dir).as_posix()
    return table.iloc[keep_order].reset_index(drop=True), errors, counts


# -------------------------------------------------------------------------------- the build
def stream_build(
    plan: Path | str | pd.DataFrame,
    out: Path | str,
    scratch: Path | str | None = None,
    batch_series: int = 16,
    workers: int = 4,
    preprocess: PreprocessConfig | None = None,
    vocabulary: ClassVocabulary | None = None,
    fetch_options: FetchOptions | None = None,
    keep_dicom: bool = False,
    default_split: str | None = None,
    prefetch: bool = False,
    progress: bool = True,
    sources: dict | None = None,
    on_batch: Callable[[int, StreamBuildSummary], None] | None = None,
) -> StreamBuildSummary:
    """Build a slice store at ``out`` from a plan, holding at most one batch of DICOM on disk.

    Args:
        plan: plan Parquet (or DataFrame) with one row per series; see :func:`read_stream_plan`.
        out: the store folder (a finished store there is an error).
        scratch: folder for one batch of DICOM (default ``<out>.scratch`` beside ``out``; removed
            at the end when empty).
        batch_series: series fetched and stored per batch (the scratch peak is one batch).
        workers: series downloaded at once, and processes decoding a batch.
        keep_dicom: keep the fetched DICOM in ``scratch/fetch`` (a normal fetch target).
        default_split: split for series the plan gives none.
        prefetch: download the next batch while this one decodes (faster; the scratch peak
            becomes two batches of DICOM).
        sources: fetch sources by kind (tests).
        on_batch: called after each committed batch (progress reporting).
    """
    from hypermodal.common.engines import get_engine
    from hypermodal.common.progress import progress_bar

    start = time.perf_counter()
    out = Path(out)
    preprocess = preprocess or PreprocessConfig()
    vocab = vocabulary or ClassVocabulary()
    opts = fetch_options or FetchOptions(workers=workers, progress=False)
    size = preprocess.size
    row_bytes = size * size
    if batch_series < 1:
        raise ValueError("batch_series must be at least 1")
    if default_split is not None and default_split not in SPLITS:
        raise ValueError(f"unknown split {default_split!r}; expected one of {SPLITS}")
    if (out / META_FILE).exists():
        raise StoreError(f"{out} already holds a finished store; remove it first")
    build = out / BUILD_DIR
    scratch = Path(scratch) if scratch is not None else out.parent / f"{out.name}.scratch"
    parts = build / PARTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(build / "lock")
    journal = BuildJournal(build / JOURNAL_FILE)
    fd = -1
    try:
        skipped: list[dict[str, Any]] = []
        planned = read_stream_plan(plan, skipped)
        no_split = [s.key for s in planned if s.split is None]
        if no_split and default_split is None:
            raise ValueError(
                f"plan gives no split for {len(no_split)} series (e.g. {no_split[0]}); "
                "give --default-split or a plan with a split column"
            )
        plan_hash = _plan_hash(planned, preprocess, vocab)
        if journal.get("plan_hash") not in (None, plan_hash):
            log.warning("%s holds an interrupted build of a different plan: starting over", out)
            journal.reset()
            shutil.rmtree(parts, ignore_errors=True)
            (out / IMAGES_FILE).unlink(missing_ok=True)
        journal.put("plan_hash", plan_hash)
        journal.put("scratch", str(scratch))

        done = journal.batches()
        committed = done[-1]["hi"] if done else 0
        finished = {k for b in done for k in b["series"]}
        next_batch = done[-1]["id"] + 1 if done else 0
        # Undo whatever an interrupted batch left: pixels past the commit, its part files.
        fd = os.open(out / IMAGES_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        if os.fstat(fd).st_size < committed * row_bytes:
            raise StoreError(
                f"{out / IMAGES_FILE} is shorter than its {committed} committed rows: it was "
                f"changed outside the build; remove {out} to start over"
            )
        if os.fstat(fd).st_size != committed * row_bytes:
            os.ftruncate(fd, committed * row_bytes)
            getattr(os, "fdatasync", os.fsync)(fd)
        parts.mkdir(parents=True, exist_ok=True)
        for p in parts.iterdir():
            if p.name.startswith(".") or int(p.stem.split("-")[1]) >= next_batch:
                p.unlink()
        _restore_batch(scratch)
        shutil.rmtree(scratch / WORK_DIR, ignore_errors=True)

        summary = StreamBuildSummary(
            series_planned=len(planned),
            series_unfetchable=len(skipped),
            resumed_batches=len(done),
        )
        todo = [s for s in planned if s.key not in finished]
        capped_out = [s for s in todo if s.kept_images == 0]
        todo = [s for s in todo if s.kept_images != 0]
        if not keep_dicom:  # stale series of another plan or batch size: not needed any more
            wanted = {s.key for s in todo}
            fetched = scratch / FETCH_DIR
            if fetched.exists():
                for ds in (p for p in fetched.iterdir() if p.is_dir() and p.name != ".fetch"):
                    for ser in (p for p in ds.iterdir() if p.is_dir()):
                        if f"{ds.name}/{ser.name}" not in wanted:
                            shutil.rmtree(ser)
        batches = [todo[i : i + batch_series] for i in range(0, len(todo), batch_series)]
        bar = progress_bar(len(planned), progress, desc="build", unit="series")
        bar.update(len(planned) - len(todo))
        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

        def start_fetch(i: int) -> Future:
            rows = list(batches[i])
            return fetcher.submit(_fetch_batch, rows, scratch / FETCH_DIR, opts, sources)

        with fetcher, get_engine("local", workers=workers) as engine:
            pending = start_fetch(0) if batches else None
            for k, batch in enumerate(batches):
                batch_id = next_batch + k
                assert pending is not None
                fs = pending.result()
                pending = None
                failed = dict(fs.failures)
                batch_dir = scratch / BATCH_DIR
                work = scratch / WORK_DIR
                work.mkdir(parents=True, exist_ok=True)
                ok_series = [s for s in batch if s.key not in failed]
                for s in ok_series:
                    src = scratch / FETCH_DIR / s.dataset / s.series
                    dest = batch_dir / s.dataset / s.series
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dest)
                if k + 1 < len(batches):  # the next batch downloads while this one decodes
                    if prefetch:
                        pending = start_fetch(k + 1)
                errors: list[dict] = [
                    error_record(key, "fetch", reason, series=key.split("/", 1)[1])
                    for key, reason in failed.items()
                ]
                counts = {"files_unreadable": 0, "files_excluded": 0, "images_capped": 0}
                manifest = None
                n_rows = 0
                if ok_series:
                    selected, cat_errors, counts = _catalog_batch(
                        batch_dir, work, ok_series, vocab, engine, default_split
                    )
                    errors.extend(cat_errors)
                    if len(selected):
                        sub = work / "store"
                        build_store(
                            selected,
                            sub,
                            vocab,
                            preprocess=preprocess,
                            progress=False,
                            engine=engine,
                        )
                        manifest = pd.read_parquet(sub / MANIFEST_FILE)
                        manifest["path"] = [
                            Path(p).relative_to(batch_dir).as_posix() for p in manifest["path"]
                        ]
                        n_rows = len(manifest)
                        for e in read_errors(sub / ERRORS_FILE):
                            with contextlib.suppress(ValueError):
                                e["path"] = Path(e["path"]).relative_to(batch_dir).as_posix()
                            errors.append(e)
                        _append_pixels(fd, row_bytes, committed, sub / IMAGES_FILE)
                summary.peak_scratch_bytes = max(summary.peak_scratch_bytes, _du(scratch))
                if manifest is not None:
                    with atomic_path(parts / f"manifest-{batch_id:06d}.parquet") as tmp:
                        manifest.to_parquet(tmp, index=False)
                write_errors(parts / f"errors-{batch_id:06d}.jsonl", errors)
                stats = {
                    **counts,
                    "failed": failed,
                    "bytes": fs.bytes,
                    "peak_scratch_bytes": summary.peak_scratch_bytes,
                    "ok": int(manifest["ok"].sum()) if manifest is not None else 0,
                }
                _commit_batch(
                    journal, batch_id, committed, committed + n_rows, [s.key for s in batch], stats
                )
                committed += n_rows
                _clear_batch(scratch, keep_dicom)
                if pending is None and k + 1 < len(batches):
                    pending = start_fetch(k + 1)
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(batch_id, summary)
        bar.close()
        os.close(fd)
        fd = -1
        summary = _finish(
            out,
            journal,
            summary,
            capped_out,
            planned,
            vocab,
            preprocess,
            plan_hash,
            keep_dicom,
            scratch,
            {
                "plan": str(plan) if not isinstance(plan, pd.DataFrame) else None,
                "scratch": str(scratch),
                "batch_series": batch_series,
                "workers": workers,
                "keep_dicom": keep_dicom,
                "default_split": default_split,
                "prefetch": prefetch,
            },
        )
    finally:
        if fd >= 0:
            os.close(fd)
        journal.close()
        lock.close()
    if not keep_dicom:
        _remove_scratch(scratch, build)
    shutil.rmtree(build, ignore_errors=True)
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary


def _remove_scratch(scratch: Path, build: Path) -> None:
    shutil.rmtree(scratch / BATCH_DIR, ignore_errors=True)
    shutil.rmtree(scratch / WORK_DIR, ignore_errors=True)
    shutil.rmtree(scratch / FETCH_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):
        scratch.rmdir()  # only when empty: never remove what else the user keeps there


def _finish(
    out: Path,
    journal: BuildJournal,
    summary: StreamBuildSummary,
    capped_out: list[PlanRow],
    planned: list[PlanRow],
    vocab: ClassVocabulary,
    preprocess: PreprocessConfig,
    plan_hash: str,
    keep_dicom: bool,
    scratch: Path,
    config: dict[str, Any],
) -> StreamBuildSummary:
    """Join the parts into ``manifest.parquet`` + ``errors.jsonl``; write ``store.json`` last."""
    from hypermodal.catalog import CATALOG_COLUMNS

    parts = out / BUILD_DIR / PARTS_DIR
    done = journal.batches()
    tables, errors = [], []
    for b in done:
        p = parts / f"manifest-{b['id']:06d}.parquet"
        if p.exists():
            tables.append(pd.read_parquet(p))
        errors.extend(read_errors(parts / f"errors-{b['id']:06d}.jsonl"))
        st = b["stats"]
        summary.series_failed += len(st["failed"])
        summary.failures.update(st["failed"])
        summary.files_unreadable += st["files_unreadable"]
        summary.files_excluded += st["files_excluded"]
        summary.images_capped += st["images_capped"]
        summary.bytes_fetched += st["bytes"]
        summary.peak_scratch_bytes = max(summary.peak_scratch_bytes, st["peak_scratch_bytes"])
    summary.batches = len(done)
    summary.series_capped_out = len(capped_out)
    summary.series_stored = sum(len(b["series"]) for b in done) - summary.series_failed
    if planned and all(s.kept_images is not None for s in planned):
        summary.images_expected = sum(int(s.kept_images or 0) for s in planned)
    if tables:
        table = pd.concat(tables, ignore_index=True)
    else:
        table = pd.DataFrame({c: [] for c in (*CATALOG_COLUMNS, "label_index", "ok")})
    n = len(table)
    size = preprocess.size
    actual = (out / IMAGES_FILE).stat().st_size
    if actual != n * size * size or (done and done[-1]["hi"] != n):
        raise StoreError(f"{out}: {IMAGES_FILE} holds {actual} bytes for {n} manifest rows")
    summary.images_planned = n
    summary.images_stored = int(table["ok"].sum()) if n else 0
    summary.images_failed = n - summary.images_stored
    decode_errors = sum(e.get("stage") == "store" for e in errors)
    if not summary.reconciles() or decode_errors != summary.images_failed:
        raise StoreError(f"store counts do not reconcile: {summary}, {decode_errors} errors")
    write_errors(out / ERRORS_FILE, errors)
    with atomic_path(out / MANIFEST_FILE) as tmp:
        table.to_parquet(tmp, index=False)
    ok = table[table["ok"].astype(bool)] if n else table
    meta = {
        "num_images": n,
        "num_ok": summary.images_stored,
        "vocabulary": vocab.to_dict(),
        "preprocess": preprocess.to_dict(),
        "split_hash": frame_hash(table, ["dataset", "split"]) if n else "",
        "plan_hash": plan_hash,
        "summary": summary.to_dict(),
        "images_per_class_per_split": images_per_class_per_split(ok, vocab.classes),
        "built_by": "stream",
        "config": config,
        "dicom_root": str((scratch / FETCH_DIR).resolve()) if keep_dicom else None,
    }
    write_text_atomic(out / META_FILE, json.dumps(meta, indent=2, default=str))
    return summary
