"""The batches of a stream build: fetched DICOM → catalog rows → batch store → ``images.u8``.

:class:`BatchWriter` takes each batch through its :data:`STEPS` and commits it in the journal
(:mod:`hypermodal.store.stream_journal`). The scratch folder::

    SCRATCH/fetch/                    the fetch target: verified series (a normal fetch target)
    SCRATCH/batch/<dataset>/<series>/ the series of the batch being stored
    SCRATCH/work/                     the batch's catalog and its batch store
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.engines import get_engine
from hypermodal.common.rejects import error_record, read_errors
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.sources.fetch import PlanRow
from hypermodal.store.build import build_store
from hypermodal.store.format import IMAGES_FILE, StoreError, sync_rows, write_rows
from hypermodal.store.reader import SliceStore, store_errors
from hypermodal.store.stream_journal import (
    BUILD_DIR,
    PARTS_DIR,
    BuildJournal,
    StreamBuildSummary,
    drop_uncommitted_parts,
    write_parts,
)

log = logging.getLogger(__name__)

FETCH_DIR = "fetch"
BATCH_DIR = "batch"
WORK_DIR = "work"


def scratch_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def take_series(scratch: Path, series: Iterable[PlanRow]) -> None:
    """Move fetched series folders from ``SCRATCH/fetch`` into ``SCRATCH/batch``."""
    for s in series:
        src = scratch / FETCH_DIR / s.dataset / s.series
        dest = scratch / BATCH_DIR / s.dataset / s.series
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)


def restore_batch(scratch: Path) -> None:
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


def clear_batch(scratch: Path, keep_dicom: bool) -> None:
    """Delete a stored batch's DICOM and work files (``keep_dicom``: move the DICOM back)."""
    if keep_dicom:
        restore_batch(scratch)
    shutil.rmtree(scratch / BATCH_DIR, ignore_errors=True)
    shutil.rmtree(scratch / WORK_DIR, ignore_errors=True)


def prune_fetched(scratch: Path, wanted: set[str]) -> None:
    """Delete fetched series that no batch still needs (another plan's, or stale ones)."""
    fetched = scratch / FETCH_DIR
    if not fetched.exists():
        return
    for ds in (p for p in fetched.iterdir() if p.is_dir() and p.name != ".fetch"):
        for ser in (p for p in ds.iterdir() if p.is_dir()):
            if f"{ds.name}/{ser.name}" not in wanted:
                shutil.rmtree(ser)


def remove_scratch(scratch: Path) -> None:
    """Remove the build's folders from the scratch folder, and the folder itself when empty."""
    shutil.rmtree(scratch / BATCH_DIR, ignore_errors=True)
    shutil.rmtree(scratch / WORK_DIR, ignore_errors=True)
    shutil.rmtree(scratch / FETCH_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):
        scratch.rmdir()  # only when empty: never remove what else the user keeps there


def relative_paths(errors: list[dict], batch_dir: Path) -> list[dict]:
    """``errors`` with each ``path`` inside ``batch_dir`` made relative to it (others unchanged)."""
    for e in errors:
        with contextlib.suppress(ValueError):
            e["path"] = Path(e["path"]).relative_to(batch_dir).as_posix()
    return errors


def catalog_batch(
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
    return table.iloc[keep_order].reset_index(drop=True), relative_paths(errors, batch_dir), counts


@dataclass
class StoredBatch:
    """A batch catalogued and stored in ``SCRATCH/work``.

    Attributes:
        manifest: its rows, paths relative to the batch folder (``None``: no image kept).
        images: its pixels, row i = manifest row i (``None`` with no manifest).
        errors: files and images that could not be used, paths relative to the batch folder.
        counts: ``files_unreadable``, ``files_excluded``, ``images_capped``.
    """

    manifest: pd.DataFrame | None
    images: np.ndarray | None
    errors: list[dict]
    counts: dict[str, int]


def store_batch(
    scratch: Path,
    series: list[PlanRow],
    vocab: ClassVocabulary,
    preprocess: PreprocessConfig,
    engine: Any,
    default_split: str | None,
) -> StoredBatch:
    """Catalog the series in ``SCRATCH/batch`` and store their kept images in ``SCRATCH/work``."""
    batch_dir, work = scratch / BATCH_DIR, scratch / WORK_DIR
    none = {"files_unreadable": 0, "files_excluded": 0, "images_capped": 0}
    stored = StoredBatch(manifest=None, images=None, errors=[], counts=none)
    if not series:
        return stored
    selected, stored.errors, stored.counts = catalog_batch(
        batch_dir, work, series, vocab, engine, default_split
    )
    if not len(selected):
        return stored
    sub = work / "store"
    build_store(selected, sub, vocab, preprocess=preprocess, progress=False, engine=engine)
    batch_store = SliceStore.open(sub)
    manifest = batch_store.table
    manifest["path"] = [Path(p).relative_to(batch_dir).as_posix() for p in manifest["path"]]
    stored.errors += relative_paths(store_errors(sub), batch_dir)
    stored.manifest, stored.images = manifest, batch_store.images
    return stored


#: The steps a batch passes, in order, as reported to ``on_step``.
STEPS = ("fetched", "appended", "written", "committed")


class BatchWriter:
    """Stores batches one after another at the end of ``OUT/images.u8``, committing each."""

    def __init__(
        self,
        out: Path,
        scratch: Path,
        journal: BuildJournal,
        vocab: ClassVocabulary,
        preprocess: PreprocessConfig,
        default_split: str | None,
        keep_dicom: bool,
        on_step: Callable[[str, int], None] | None,
    ) -> None:
        self.out, self.scratch, self.journal = out, scratch, journal
        self.parts = out / BUILD_DIR / PARTS_DIR
        self.vocab, self.preprocess = vocab, preprocess
        self.default_split, self.keep_dicom = default_split, keep_dicom
        self.on_step = on_step
        self.fd = -1
        self.committed = 0  # store rows committed so far
        self.next_batch = 0  # id of the next batch

    def resume(self, plan_hash: str) -> list[dict[str, Any]]:
        """Undo whatever an interrupted batch left (pixels past the commit, its part files, its
        DICOM in the batch folder); return the committed batches."""
        row_bytes = self.preprocess.size * self.preprocess.size
        if self.journal.get("plan_hash") not in (None, plan_hash):
            log.warning(
                "%s holds an interrupted build of a different plan: starting over", self.out
            )
            self.journal.reset()
            shutil.rmtree(self.parts, ignore_errors=True)
            (self.out / IMAGES_FILE).unlink(missing_ok=True)
        self.journal.put("plan_hash", plan_hash)
        self.journal.put("scratch", str(self.scratch))
        done = self.journal.batches()
        self.committed = done[-1]["hi"] if done else 0
        self.next_batch = done[-1]["id"] + 1 if done else 0
        self.fd = os.open(self.out / IMAGES_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        size, committed_bytes = os.fstat(self.fd).st_size, self.committed * row_bytes
        if size < committed_bytes:
            raise StoreError(
                f"{self.out / IMAGES_FILE} is shorter than its {self.committed} committed rows: "
                f"it was changed outside the build; remove {self.out} to start over"
            )
        if size != committed_bytes:
            os.ftruncate(self.fd, committed_bytes)
            sync_rows(self.fd)
        drop_uncommitted_parts(self.parts, self.next_batch)
        restore_batch(self.scratch)
        shutil.rmtree(self.scratch / WORK_DIR, ignore_errors=True)
        return done

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _step(self, name: str, batch_id: int) -> None:
        if self.on_step is not None:
            self.on_step(name, batch_id)

    def store(
        self,
        batch_id: int,
        batch: list[PlanRow],
        ok_series: list[PlanRow],
        fetched: Any,
        engine: Any,
        summary: StreamBuildSummary,
    ) -> None:
        """Store one batch and commit it.

        Args:
            batch_id: its id in the journal.
            batch: its series.
            ok_series: those fetched (moved to ``SCRATCH/batch``).
            fetched: the fetch summary (``failures``: key → reason; ``bytes``).
            engine: the engine that catalogues and decodes.
            summary: the build's summary (its scratch peak is updated).
        """
        failed = dict(fetched.failures)
        errors: list[dict] = [
            error_record(key, "fetch", reason, series=key.split("/", 1)[1])
            for key, reason in failed.items()
        ]
        stored = store_batch(
            self.scratch, ok_series, self.vocab, self.preprocess, engine, self.default_split
        )
        n_rows = 0
        if stored.manifest is not None and stored.images is not None:
            write_rows(self.fd, self.committed, stored.images)
            n_rows = len(stored.manifest)
            self._step("appended", batch_id)
        summary.peak_scratch_bytes = max(summary.peak_scratch_bytes, scratch_bytes(self.scratch))
        write_parts(self.parts, batch_id, stored.manifest, errors + stored.errors)
        stats = {
            **stored.counts,
            "failed": failed,
            "bytes": fetched.bytes,
            "peak_scratch_bytes": summary.peak_scratch_bytes,
            "ok": int(stored.manifest["ok"].sum()) if stored.manifest is not None else 0,
        }
        self._step("written", batch_id)
        keys = [s.key for s in batch]
        self.journal.commit(batch_id, self.committed, self.committed + n_rows, keys, stats)
        self.committed += n_rows
        self._step("committed", batch_id)

    def run(
        self,
        batches: list[list[PlanRow]],
        fetch: Callable[[list[PlanRow]], Any],
        workers: int,
        prefetch: bool,
        summary: StreamBuildSummary,
        bar: Any,
        on_batch: Callable[[int, StreamBuildSummary], None] | None,
    ) -> None:
        """Fetch, store, commit and clear every batch (``prefetch``: fetch the next batch while
        this one decodes)."""
        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        with fetcher, get_engine("local", workers=workers) as engine:
            pending = fetcher.submit(fetch, batches[0]) if batches else None
            for k, batch in enumerate(batches):
                batch_id = self.next_batch + k
                assert pending is not None
                fetched = pending.result()
                pending = None
                self._step("fetched", batch_id)
                (self.scratch / WORK_DIR).mkdir(parents=True, exist_ok=True)
                ok_series = [s for s in batch if s.key not in dict(fetched.failures)]
                take_series(self.scratch, ok_series)
                if prefetch and k + 1 < len(batches):
                    pending = fetcher.submit(fetch, batches[k + 1])
                self.store(batch_id, batch, ok_series, fetched, engine, summary)
                clear_batch(self.scratch, self.keep_dicom)
                if pending is None and k + 1 < len(batches):
                    pending = fetcher.submit(fetch, batches[k + 1])
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(batch_id, summary)
