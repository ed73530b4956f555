"""Building a store: every catalogued 2D image preprocessed once to ``size × size`` uint8.

The folder layout is described in :mod:`hypermodal.store.format`. Building runs on an engine
(:mod:`hypermodal.common.engines`). On the local process pool each worker decodes its chunk
(:func:`~hypermodal.store.chunks.build_chunk`) and writes the pixels straight into the
preallocated ``images.u8`` memory map. Workers on a Ray cluster may sit on other machines, so they
return each chunk's pixels instead and the driver writes them into ``images.u8`` (then syncs)
before journaling the chunk; the bytes are the same either way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.files import atomic_path, reserve_space, write_text_atomic
from hypermodal.common.isolation import DecodeLimits, map_chunks
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import write_errors
from hypermodal.evidence.features import STAT_NAMES
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.store.chunks import (
    LazyItems,
    build_chunk,
    chunk_bounds,
    chunk_files,
    merge_files,
    one_file_chunks,
)
from hypermodal.store.format import (
    ERRORS_FILE,
    IMAGES_FILE,
    JOURNAL_DIR,
    MANIFEST_FILE,
    PLAN_FILE,
    STATS_COLUMN,
    StoreError,
    frame_hash,
    images_per_class_per_split,
    write_meta,
    write_rows,
)
from hypermodal.store.lock import store_folder
from hypermodal.store.reader import SliceStore

log = logging.getLogger(__name__)

PLAN_META_FILE = "plan.json"


@dataclass
class StoreSummary:
    """What a build did; ``images_planned = images_stored + images_failed``."""

    images_planned: int
    images_stored: int
    images_failed: int
    files: int
    seconds: float
    images_per_second: float
    resumed_chunks: int
    workers: int

    def reconciles(self) -> bool:
        return self.images_planned == self.images_stored + self.images_failed


def write_store_arrays(
    path: Path | str,
    images: np.ndarray,
    table: pd.DataFrame,
    vocabulary: ClassVocabulary,
    preprocess: PreprocessConfig | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> SliceStore:
    """Write a complete store from in-memory arrays (for tests and synthetic workloads).

    ``table`` needs at least ``dataset``, ``label`` and ``split`` columns; ``label_index`` and
    ``ok`` are added when missing.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    preprocess = preprocess or PreprocessConfig(size=int(images.shape[-1]))
    shape = (preprocess.size, preprocess.size)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != shape:
        raise ValueError(f"images must be uint8 (N, {preprocess.size}, {preprocess.size})")
    if len(table) != len(images):
        raise ValueError("table and images differ in length")
    table = table.reset_index(drop=True).copy()
    if "label_index" not in table:
        table["label_index"] = [vocabulary.index(x) for x in table["label"]]
    if "ok" not in table:
        table["ok"] = True
    with atomic_path(path / IMAGES_FILE) as tmp:
        np.ascontiguousarray(images).tofile(tmp)
    with atomic_path(path / MANIFEST_FILE) as tmp:
        table.to_parquet(tmp, index=False)
    write_meta(
        path,
        num_images=len(table),
        num_ok=int(table["ok"].sum()),
        vocabulary=vocabulary,
        preprocess=preprocess,
        split_hash=frame_hash(table, ["dataset", "split"]) if len(table) else "",
        extra=extra_meta,
    )
    return SliceStore.open(path)


def _labelled_plan(
    selected: pd.DataFrame, vocabulary: ClassVocabulary, size: int
) -> tuple[pd.DataFrame, str]:
    """The rows to store (with ``label_index``) and their plan hash."""
    plan = selected.reset_index(drop=True)  # copy-on-write: ``selected`` is never modified
    unknown = sorted(set(plan["label"]) - set(vocabulary.classes))
    if unknown:
        raise StoreError(f"labels {unknown} are not classes of the vocabulary {vocabulary.classes}")
    plan["label_index"] = plan["label"].map({c: i for i, c in enumerate(vocabulary.classes)})
    plan_hash = frame_hash(plan, ["path", "index", "label", "split"]) + "-" + str(size)
    return plan, plan_hash


def _start_or_resume(
    out: Path, plan: pd.DataFrame, plan_hash: str, preprocess: PreprocessConfig
) -> None:
    """Keep an interrupted build of the same plan; otherwise preallocate a new one."""
    journal = out / JOURNAL_DIR
    plan_path = out / PLAN_FILE
    plan_meta = out / PLAN_META_FILE
    if plan_path.exists():
        previous = json.loads(plan_meta.read_text()) if plan_meta.exists() else {}
        if (
            previous.get("plan_hash") != plan_hash
            or previous.get("preprocess") != preprocess.to_dict()
        ):
            log.warning("%s holds an interrupted build of a different plan: starting over", out)
            shutil.rmtree(journal, ignore_errors=True)
            for name in (IMAGES_FILE, PLAN_FILE, PLAN_META_FILE):
                (out / name).unlink(missing_ok=True)
    if not plan_path.exists():
        with atomic_path(out / IMAGES_FILE) as tmp:
            with open(tmp, "wb") as fh:
                fh.truncate(len(plan) * preprocess.size * preprocess.size)
        write_text_atomic(
            plan_meta, json.dumps({"plan_hash": plan_hash, "preprocess": preprocess.to_dict()})
        )
        with atomic_path(plan_path) as tmp:
            plan.to_parquet(tmp, index=False)
    journal.mkdir(exist_ok=True)


def _run_chunks(
    out: Path,
    plan: pd.DataFrame,
    bounds: list[tuple[int, int]],
    todo: list[int],
    preprocess: PreprocessConfig,
    engine: str | Engine,
    workers: int | None,
    ray_address: str | None,
    on_chunk: Callable[[int], None] | None,
    bar: Any,
    limits: DecodeLimits | None = None,
) -> int:
    """Build the chunks ``todo`` on the engine, journaling each; return the workers used.

    A chunk whose worker died is decoded again one file at a time (:func:`map_chunks`): only
    the file that killed it fails, with the reason, and its rows are zeros.
    """
    journal = out / JOURNAL_DIR
    n, size = len(plan), preprocess.size
    # the column's own array (Arrow strings), not one Python str per row: sliced per chunk
    paths = plan["path"].array
    indices = plan["index"].to_numpy()

    def chunk_args(c: int, images_path: str) -> tuple:
        files = chunk_files(paths, indices, *bounds[c])
        return (images_path, n, size, c, files, preprocess.to_dict())

    def record(result: dict, fd: int | None) -> None:
        if "images" in result:  # pixels came back (workers elsewhere): write, sync, then journal
            if fd is None:  # pragma: no cover - a shared-filesystem engine returned pixels
                raise StoreError("a worker returned pixels but images.u8 is not open")
            write_rows(fd, int(result.pop("lo")), result.pop("images"))
        write_text_atomic(journal / f"chunk-{result['chunk']:06d}.json", json.dumps(result))
        lo, hi = bounds[result["chunk"]]
        bar.update(hi - lo)
        if on_chunk is not None:
            on_chunk(int(result["chunk"]))

    with engine_scope(engine, workers=workers, address=ray_address, limits=limits) as runner:
        in_place = runner.shares_filesystem
        images_path = str(out / IMAGES_FILE) if in_place else ""
        work = LazyItems(len(todo), lambda k: chunk_args(todo[k], images_path))
        fd = None if in_place else os.open(out / IMAGES_FILE, os.O_WRONLY)
        try:
            for _, result in map_chunks(runner, build_chunk, work, one_file_chunks, merge_files):
                record(result, fd)
        finally:
            if fd is not None:
                os.close(fd)
        return runner.workers


def build_store(
    selected: pd.DataFrame,
    out: Path | str,
    vocabulary: ClassVocabulary,
    preprocess: PreprocessConfig | None = None,
    split_hash: str = "",
    workers: int | None = None,
    chunk_images: int = 256,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    replace: bool = False,
    limits: DecodeLimits | None = None,
) -> StoreSummary:
    """Preprocess every row of ``selected`` (catalog rows with ``split``) into a store at ``out``.

    Resumable: the plan and a preallocated ``images.u8`` are written first; each finished chunk
    leaves a journal marker after its pixels are flushed, so a rerun redoes only unfinished
    chunks. ``store.json`` is written last. A finished store at ``out`` is an error, unless
    ``replace`` (then it is removed and built anew).

    Before anything is decoded, :func:`~hypermodal.store.lock.store_folder` checks that ``out``
    can be written and takes its exclusive lock (a second build into it fails at once and
    changes nothing) and the temporary files of a killed build are removed; then the disk space
    of ``images.u8`` is allocated, so a full disk is reported there, not by a decoding worker.

    ``engine`` is ``"local"`` (process pool of ``workers`` writing into the memory map),
    ``"ray"`` (Ray Data: a local Ray instance, or the cluster at ``ray_address``; workers return
    pixels and this process writes them), or an :class:`~hypermodal.common.engines.Engine` the
    caller owns. The store is byte-for-byte the same with either. ``limits`` bound each local
    worker (time per file, memory ceiling; default
    :class:`~hypermodal.common.isolation.DecodeLimits`): a file that crashes its worker or goes
    past them fails with the reason, and the build goes on.

    ``on_chunk(chunk_id)`` is called in this process after each chunk is journaled (progress
    reporting; an exception raised there stops the build as an interruption would, and a rerun
    resumes after the chunks journaled so far).

    Raises:
        OutputError: ``out`` is a file, or cannot be written.
        LockedError: another build holds ``out``'s lock.
        DiskFullError: the disk cannot hold ``images.u8`` (or filled up while writing).
        StoreError: ``out`` already holds a finished store and ``replace`` is False.
    """
    start = time.perf_counter()
    out = Path(out)
    preprocess = preprocess or PreprocessConfig()
    plan, plan_hash = _labelled_plan(selected, vocabulary, preprocess.size)
    with store_folder(out, replace):
        _start_or_resume(out, plan, plan_hash, preprocess)
        reserve_space(out / IMAGES_FILE, len(plan) * preprocess.size * preprocess.size)
        return _build(
            out,
            plan,
            plan_hash,
            vocabulary,
            preprocess,
            split_hash,
            workers,
            chunk_images,
            progress,
            extra_meta,
            engine,
            ray_address,
            on_chunk,
            start,
            limits,
        )


def _build(
    out: Path,
    plan: pd.DataFrame,
    plan_hash: str,
    vocabulary: ClassVocabulary,
    preprocess: PreprocessConfig,
    split_hash: str,
    workers: int | None,
    chunk_images: int,
    progress: bool,
    extra_meta: dict[str, Any] | None,
    engine: str | Engine,
    ray_address: str | None,
    on_chunk: Callable[[int], None] | None,
    start: float,
    limits: DecodeLimits | None = None,
) -> StoreSummary:
    """The build proper, under the folder's lock, once the plan and ``images.u8`` are in place."""
    n = len(plan)
    journal = out / JOURNAL_DIR
    bounds = chunk_bounds(plan["path"].array, chunk_images)
    done = {int(p.stem.split("-")[1]) for p in journal.glob("chunk-*.json")}
    todo = [c for c in range(len(bounds)) if c not in done]

    bar = progress_bar(n, progress, desc="store", unit="img")
    bar.update(sum(bounds[c][1] - bounds[c][0] for c in done if c < len(bounds)))
    if isinstance(engine, str):  # nothing left to do: no need to start processes or Ray
        used_workers = max(1, workers or os.cpu_count() or 1)
    else:
        used_workers = engine.workers
    if todo:
        used_workers = _run_chunks(
            out, plan, bounds, todo, preprocess, engine, workers, ray_address, on_chunk, bar, limits
        )
    bar.close()

    ok = np.zeros(n, dtype=bool)
    stats = np.full((n, len(STAT_NAMES)), np.nan, dtype=np.float32)
    errors: list[dict] = []
    for c in range(len(bounds)):
        result = json.loads((journal / f"chunk-{c:06d}.json").read_text())
        ok[result["ok"]] = True
        if result.get("stats"):
            stats[result["ok"]] = np.asarray(result["stats"], dtype=np.float32)
        errors.extend(result["errors"])
    plan["ok"] = ok
    plan[STATS_COLUMN] = list(stats)
    seconds = time.perf_counter() - start
    built_now = sum(bounds[c][1] - bounds[c][0] for c in todo)
    summary = StoreSummary(
        images_planned=n,
        images_stored=int(ok.sum()),
        images_failed=int(n - ok.sum()),
        files=int(plan["path"].nunique()),
        seconds=round(seconds, 3),
        images_per_second=round(built_now / seconds, 1) if seconds > 0 else 0.0,
        resumed_chunks=len(bounds) - len(todo),
        workers=used_workers,
    )
    if not summary.reconciles() or summary.images_failed != len(errors):
        raise StoreError(f"store counts do not reconcile: {summary}, {len(errors)} errors")
    write_errors(out / ERRORS_FILE, errors)
    with atomic_path(out / MANIFEST_FILE) as tmp:
        plan.to_parquet(tmp, index=False)
    per_split = images_per_class_per_split(plan.loc[ok, ["split", "label"]], vocabulary.classes)
    write_meta(
        out,
        num_images=n,
        num_ok=summary.images_stored,
        vocabulary=vocabulary,
        preprocess=preprocess,
        split_hash=split_hash,
        extra={
            "plan_hash": plan_hash,
            "summary": summary.__dict__,
            "images_per_class_per_split": per_split,
            **(extra_meta or {}),
        },
    )
    shutil.rmtree(journal, ignore_errors=True)
    for name in (PLAN_FILE, PLAN_META_FILE):
        (out / name).unlink(missing_ok=True)
    return summary
