"""Stream-through build: plan → fetch → decode → store → delete, one batch of series at a time.

A corpus that would be terabytes of DICOM needs only its ``size × size`` store on disk plus one
batch of DICOM in a scratch folder. Each batch goes through the same machinery as the staged
pipeline, so the pixels are byte-for-byte those of ``hypermodal fetch`` + ``catalog`` +
``store``:

1. **fetch** the batch's series into ``SCRATCH/fetch`` with
   :func:`~hypermodal.sources.fetch.fetch_plan` (verified, retried, journaled); series that still
   fail are reported, not fatal;
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
written last: the result is a normal store for :meth:`~hypermodal.store.reader.SliceStore.open`.

The batch steps live in :mod:`hypermodal.store.stream_batch`, the journal, the part files and
the final join in :mod:`hypermodal.store.stream_journal`.

Manifest ``path`` values are relative to the DICOM layout (``<dataset>/<series>/<SOP>.dcm``);
``store.json`` says where that layout lives (``dicom_root``) when ``keep_dicom`` kept it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.files import exclusive_lock
from hypermodal.common.progress import progress_bar
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.sources.fetch import (
    FetchOptions,
    PlanRow,
    fetch_plan,
    read_plan,
)
from hypermodal.store.format import META_FILE, SPLITS, StoreError
from hypermodal.store.stream_batch import (
    FETCH_DIR,
    STEPS,
    BatchWriter,
    prune_fetched,
    remove_scratch,
)
from hypermodal.store.stream_journal import (
    BUILD_DIR,
    JOURNAL_FILE,
    BuildJournal,
    StreamBuildSummary,
    finish_store,
)

__all__ = [
    "STEPS",
    "BuildJournal",
    "StoreError",
    "StreamBuildSummary",
    "read_stream_plan",
    "stream_build",
]


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


# -------------------------------------------------------------------------------- the build
def _check_request(out: Path, batch_series: int, default_split: str | None) -> None:
    if batch_series < 1:
        raise ValueError("batch_series must be at least 1")
    if default_split is not None and default_split not in SPLITS:
        raise ValueError(f"unknown split {default_split!r}; expected one of {SPLITS}")
    if (out / META_FILE).exists():
        raise StoreError(f"{out} already holds a finished store; remove it first")


def _remaining(
    planned: list[PlanRow], done: list[dict[str, Any]]
) -> tuple[list[PlanRow], list[PlanRow]]:
    """The series still to fetch (not in a committed batch, not capped to zero images), and
    the uncommitted series capped to zero images (never fetched)."""
    finished = {k for b in done for k in b["series"]}
    todo = [s for s in planned if s.key not in finished]
    capped_out = [s for s in todo if s.kept_images == 0]
    return [s for s in todo if s.kept_images != 0], capped_out


def _planned_series(
    plan: Path | str | pd.DataFrame, default_split: str | None
) -> tuple[list[PlanRow], list[dict[str, Any]]]:
    """The plan's fetchable series and its skipped rows; a :class:`ValueError` when a series
    has no split and there is no ``default_split``."""
    skipped: list[dict[str, Any]] = []
    planned = read_stream_plan(plan, skipped)
    no_split = [s.key for s in planned if s.split is None]
    if no_split and default_split is None:
        raise ValueError(
            f"plan gives no split for {len(no_split)} series (e.g. {no_split[0]}); "
            "give --default-split or a plan with a split column"
        )
    return planned, skipped


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
    on_step: Callable[[str, int], None] | None = None,
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
        on_batch: called with (batch id, summary so far) after each committed batch is cleared
            from the scratch folder (progress reporting).
        on_step: called with (step, batch id) as each batch passes the :data:`STEPS`:
            ``fetched`` (downloaded, nothing stored), ``appended`` (its pixels are in
            ``images.u8`` past the committed rows; only a batch with images), ``written`` (its
            part files are written, the commit is next), ``committed`` (its DICOM is not yet
            cleared). An exception raised there stops the build at that point, as an
            interruption would; a rerun resumes it.
    """
    start = time.perf_counter()
    out = Path(out)
    preprocess = preprocess or PreprocessConfig()
    vocab = vocabulary or ClassVocabulary()
    opts = fetch_options or FetchOptions(workers=workers, progress=False)
    _check_request(out, batch_series, default_split)
    build = out / BUILD_DIR
    scratch = Path(scratch) if scratch is not None else out.parent / f"{out.name}.scratch"
    out.mkdir(parents=True, exist_ok=True)
    lock = exclusive_lock(build / "lock", "build")
    journal = BuildJournal(build / JOURNAL_FILE)
    writer = BatchWriter(
        out, scratch, journal, vocab, preprocess, default_split, keep_dicom, on_step
    )
    try:
        planned, skipped = _planned_series(plan, default_split)
        plan_hash = _plan_hash(planned, preprocess, vocab)
        done = writer.resume(plan_hash)
        summary = StreamBuildSummary(
            series_planned=len(planned),
            series_unfetchable=len(skipped),
            resumed_batches=len(done),
        )
        todo, capped_out = _remaining(planned, done)
        if not keep_dicom:  # stale series of another plan or batch size: not needed any more
            prune_fetched(scratch, {s.key for s in todo})
        batches = [todo[i : i + batch_series] for i in range(0, len(todo), batch_series)]
        bar = progress_bar(len(planned), progress, desc="build", unit="series")
        bar.update(len(planned) - len(todo))

        def fetch(rows: list[PlanRow]) -> Any:
            return fetch_plan(list(rows), scratch / FETCH_DIR, opts, sources=sources)

        writer.run(batches, fetch, workers, prefetch, summary, bar, on_batch)
        bar.close()
        writer.close()
        summary.series_capped_out = len(capped_out)
        if planned and all(s.kept_images is not None for s in planned):
            summary.images_expected = sum(int(s.kept_images or 0) for s in planned)
        config = {
            "plan": str(plan) if not isinstance(plan, pd.DataFrame) else None,
            "scratch": str(scratch),
            "batch_series": batch_series,
            "workers": workers,
            "keep_dicom": keep_dicom,
            "default_split": default_split,
            "prefetch": prefetch,
        }
        dicom_root = str((scratch / FETCH_DIR).resolve()) if keep_dicom else None
        extra = {"built_by": "stream", "config": config, "dicom_root": dicom_root}
        summary = finish_store(out, journal, summary, vocab, preprocess, plan_hash, extra)
    finally:
        writer.close()
        journal.close()
        lock.close()
    if not keep_dicom:
        remove_scratch(scratch)
    shutil.rmtree(build, ignore_errors=True)
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary
