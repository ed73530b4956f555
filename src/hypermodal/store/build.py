"""The slice store: every catalogued 2D image preprocessed once to ``size × size`` uint8.

Layout of a store folder::

    images.u8          raw uint8 array, shape (N, size, size), C order; row i is manifest row i
    manifest.parquet   one row per image: the catalog columns + ``split``, ``label_index``, ``ok``
    store.json         metadata (classes, preprocessing, split hash, counts, versions); written
                       last, so its presence means the store is complete
    journal/           one marker per finished chunk, so an interrupted build resumes
    errors.jsonl       images that could not be decoded, with their reasons

Building runs on an engine (:mod:`hypermodal.common.engines`). On the local process pool each worker
decodes its chunk and writes the pixels straight into the preallocated ``images.u8`` memory map.
Workers on a Ray cluster may sit on other machines, so they return each chunk's pixels instead and
the driver writes them into ``images.u8`` (then syncs) before journaling the chunk; the bytes are
the same either way.

Training reads ``images.u8`` through a memory map: no decoding, no per-file overhead, random
access at memory speed, and the OS page cache shares it between data-loader workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.errors import StoreError
from hypermodal.common.files import atomic_path, write_text_atomic
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import error_record, read_errors, write_errors
from hypermodal.io import ImageReadError, iter_images
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig, to_uint8

log = logging.getLogger(__name__)

IMAGES_FILE = "images.u8"
MANIFEST_FILE = "manifest.parquet"
META_FILE = "store.json"
JOURNAL_DIR = "journal"
ERRORS_FILE = "errors.jsonl"
SPLITS = ("train", "validate", "test")


@dataclass
class SliceStore:
    """A finished store, opened read-only.

    Attributes:
        path: the store folder.
        images: memory-mapped uint8 array of shape (N, size, size).
        table: the manifest (one row per image, same order as ``images``).
        vocabulary: class order used for ``label_index``.
        preprocess: preprocessing applied to every image.
        meta: the whole ``store.json``.
    """

    path: Path
    images: np.ndarray
    table: pd.DataFrame
    vocabulary: ClassVocabulary
    preprocess: PreprocessConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | str) -> SliceStore:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise StoreError(
                f"{path} is not a finished store (no {META_FILE}); build it with `hypermodal store`"
            )
        meta = json.loads(meta_path.read_text())
        table = pd.read_parquet(path / MANIFEST_FILE)
        size = int(meta["preprocess"]["size"])
        n = int(meta["num_images"])
        if len(table) != n:
            raise StoreError(f"{path}: manifest has {len(table)} rows, store.json says {n}")
        expected = n * size * size
        actual = (path / IMAGES_FILE).stat().st_size
        if actual != expected:
            raise StoreError(f"{path}: {IMAGES_FILE} is {actual} bytes, expected {expected}")
        images = (
            np.memmap(path / IMAGES_FILE, dtype=np.uint8, mode="r", shape=(n, size, size))
            if n
            else np.zeros((0, size, size), dtype=np.uint8)
        )
        return cls(
            path=path,
            images=images,
            table=table,
            vocabulary=ClassVocabulary.from_dict(meta["vocabulary"]),
            preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
            meta=meta,
        )

    def __len__(self) -> int:
        return len(self.table)

    @property
    def split_hash(self) -> str:
        return str(self.meta.get("split_hash", ""))

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row indices of images that were stored successfully, optionally of one split."""
        mask = self.table["ok"].to_numpy(dtype=bool, copy=True)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
            mask &= (self.table["split"] == split).to_numpy()
        return np.flatnonzero(mask)

    def labels(self) -> np.ndarray:
        """``label_index`` for every row (int64)."""
        return self.table["label_index"].to_numpy(dtype=np.int64)


def frame_hash(table: pd.DataFrame, columns: Iterable[str]) -> str:
    """A stable SHA-256 over the given columns of a table (used for split and catalog hashes)."""
    h = hashlib.sha256()
    for col in columns:
        h.update(col.encode())
        h.update(
            pd.util.hash_pandas_object(table[col].astype(str), index=False).to_numpy().tobytes()
        )
    return h.hexdigest()[:16]


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
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:]
        != (
            preprocess.size,
            preprocess.size,
        )
    ):
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
    meta = {
        "num_images": len(table),
        "num_ok": int(table["ok"].sum()),
        "vocabulary": vocabulary.to_dict(),
        "preprocess": preprocess.to_dict(),
        "split_hash": frame_hash(table, ["dataset", "split"]) if len(table) else "",
        **(extra_meta or {}),
    }
    write_text_atomic(path / META_FILE, json.dumps(meta, indent=2, default=str))
    return SliceStore.open(path)


PLAN_FILE = "plan.parquet"


@dataclass
class StoreSummary:
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


def _chunk_bounds(paths: Sequence[Any], target: int) -> list[tuple[int, int]]:
    """Split rows into runs of about ``target`` images that never cut a file in two."""
    bounds: list[tuple[int, int]] = []
    n = len(paths)
    start = 0
    while start < n:
        end = min(start + target, n)
        while end < n and paths[end] == paths[end - 1]:
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def _build_chunk(
    args: tuple[str, int, int, int, list[tuple[str, list[int], list[int]]], dict],
) -> dict:
    """Worker: decode and preprocess one chunk of rows.

    With an ``images_path`` (first argument) the pixels go straight into that shared memmap
    (workers on this machine). With an empty one they come back in the result as ``lo`` (first
    row) and ``images`` (uint8, one per row of the chunk, zeros for failed rows), for the driver
    to write (workers on other machines).
    """
    images_path, n, size, chunk_id, files, pre_dict = args
    pre = PreprocessConfig.from_dict(pre_dict)
    all_rows = [r for _, _, rows in files for r in rows]
    lo = min(all_rows) if all_rows else 0
    hi = max(all_rows) + 1 if all_rows else 0
    if images_path:
        arr = np.memmap(images_path, dtype=np.uint8, mode="r+", shape=(n, size, size))
        offset = 0
    else:
        arr = np.zeros((hi - lo, size, size), dtype=np.uint8)
        offset = lo
    ok: list[int] = []
    errors: list[dict] = []
    for path, indices, rows in files:
        wanted = dict(zip(indices, rows, strict=True))
        done: set[int] = set()
        try:
            for idx, img in iter_images(Path(path), indices):
                row = wanted.get(idx)
                if row is None:
                    continue
                try:
                    arr[row - offset] = to_uint8(img, pre)
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
                    errors.append(error_record(path, "store", f"preprocess: {exc}", index=idx))
                    done.add(idx)
                    continue
                ok.append(row)
                done.add(idx)
        except ImageReadError as exc:
            reason = exc.reason
        else:
            reason = "image not found in file"
        for idx in indices:
            if idx not in done:
                errors.append(error_record(path, "store", reason, index=idx))
                arr[wanted[idx] - offset] = 0
    result: dict[str, Any] = {"chunk": chunk_id, "ok": ok, "errors": errors}
    if images_path:
        assert isinstance(arr, np.memmap)
        arr.flush()
        del arr
    else:
        result["lo"] = lo
        result["images"] = arr
    return result


class _LazyItems(Sequence[Any]):
    """A sequence whose items are made when asked for: a local pool holds only the chunks in
    flight, not a file list for every chunk of the store."""

    def __init__(self, n: int, make: Callable[[int], Any]) -> None:
        self._n = n
        self._make = make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> Any:  # type: ignore[override]
        if not -self._n <= k < self._n:
            raise IndexError(k)
        return self._make(k % self._n)


def _write_rows(fd: int, lo: int, images: np.ndarray) -> None:
    """Write ``images`` (rows ``lo``...) into the open ``images.u8`` and sync them to disk."""
    data = memoryview(np.ascontiguousarray(images, dtype=np.uint8)).cast("B")
    offset = lo * images.shape[1] * images.shape[2]
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
    getattr(os, "fdatasync", os.fsync)(fd)


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
) -> StoreSummary:
    """Preprocess every row of ``selected`` (catalog rows with ``split``) into a store at ``out``.

    Resumable: the plan and a preallocated ``images.u8`` are written first; each finished chunk
    leaves a journal marker after its pixels are flushed, so a rerun redoes only unfinished
    chunks. ``store.json`` is written last. A store that is already complete is left as is.

    ``engine`` is ``"local"`` (process pool of ``workers`` writing into the memory map),
    ``"ray"`` (Ray Data: a local Ray instance, or the cluster at ``ray_address``; workers return
    pixels and this process writes them), or an :class:`~hypermodal.common.engines.Engine` the caller
    owns. The store is byte-for-byte the same with either.
    """
    start = time.perf_counter()
    out = Path(out)
    preprocess = preprocess or PreprocessConfig()
    size = preprocess.size
    if (out / META_FILE).exists():
        raise StoreError(f"{out} already holds a finished store; remove it or pass --force")
    plan = selected.reset_index(drop=True)  # copy-on-write: ``selected`` is never modified
    unknown = sorted(set(plan["label"]) - set(vocabulary.classes))
    if unknown:
        raise StoreError(f"labels {unknown} are not classes of the vocabulary {vocabulary.classes}")
    plan["label_index"] = plan["label"].map({c: i for i, c in enumerate(vocabulary.classes)})
    plan_hash = frame_hash(plan, ["path", "index", "label", "split"]) + "-" + str(size)
    n = len(plan)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / JOURNAL_DIR
    plan_path = out / PLAN_FILE
    if plan_path.exists():
        previous = (
            json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
        )
        if (
            previous.get("plan_hash") != plan_hash
            or previous.get("preprocess") != preprocess.to_dict()
        ):
            log.warning("%s holds an interrupted build of a different plan: starting over", out)
            shutil.rmtree(journal, ignore_errors=True)
            for name in (IMAGES_FILE, PLAN_FILE, "plan.json"):
                (out / name).unlink(missing_ok=True)
    if not plan_path.exists():
        with atomic_path(out / IMAGES_FILE) as tmp:
            with open(tmp, "wb") as fh:
                fh.truncate(n * size * size)
        write_text_atomic(
            out / "plan.json",
            json.dumps({"plan_hash": plan_hash, "preprocess": preprocess.to_dict()}),
        )
        with atomic_path(plan_path) as tmp:
            plan.to_parquet(tmp, index=False)
    journal.mkdir(exist_ok=True)

    # the column's own array (Arrow strings), not one Python str per row: sliced per chunk
    paths = plan["path"].array
    bounds = _chunk_bounds(paths, chunk_images)
    done = {int(p.stem.split("-")[1]) for p in journal.glob("chunk-*.json")}
    todo = [c for c in range(len(bounds)) if c not in done]
    idx_col = plan["index"].to_numpy()

    def chunk_args(c: int, images_path: str) -> tuple:
        lo, hi = bounds[c]
        files: list[tuple[str, list[int], list[int]]] = []
        chunk_paths = np.asarray(paths[lo:hi], dtype=object)
        for row, path in zip(range(lo, hi), chunk_paths, strict=True):
            if files and files[-1][0] == path:
                files[-1][1].append(int(idx_col[row]))
                files[-1][2].append(row)
            else:
                files.append((str(path), [int(idx_col[row])], [row]))
        return (images_path, n, size, c, files, preprocess.to_dict())

    def record(result: dict, fd: int | None) -> None:
        if "images" in result:  # pixels came back (workers elsewhere): write, sync, then journal
            if fd is None:  # pragma: no cover - a shared-filesystem engine returned pixels
                raise StoreError("a worker returned pixels but images.u8 is not open")
            _write_rows(fd, int(result.pop("lo")), result.pop("images"))
        write_text_atomic(journal / f"chunk-{result['chunk']:06d}.json", json.dumps(result))
        lo, hi = bounds[result["chunk"]]
        bar.update(hi - lo)

    bar = progress_bar(n, progress, desc="store", unit="img")
    bar.update(sum(bounds[c][1] - bounds[c][0] for c in done if c < len(bounds)))
    if isinstance(engine, str):  # nothing left to do: no need to start processes or Ray
        used_workers = max(1, workers or os.cpu_count() or 1)
    else:
        used_workers = engine.workers
    if todo:
        with engine_scope(engine, workers=workers, address=ray_address) as runner:
            used_workers = runner.workers
            in_place = runner.shares_filesystem
            work = _LazyItems(
                len(todo), lambda k: chunk_args(todo[k], str(out / IMAGES_FILE) if in_place else "")
            )
            fd = None if in_place else os.open(out / IMAGES_FILE, os.O_WRONLY)
            try:
                # _build_chunk is looked up now, not at import, so tests can stand in for it.
                for _, result in runner.map_unordered(_build_chunk, work):
                    record(result, fd)
            finally:
                if fd is not None:
                    os.close(fd)
    bar.close()

    ok = np.zeros(n, dtype=bool)
    errors: list[dict] = []
    for c in range(len(bounds)):
        result = json.loads((journal / f"chunk-{c:06d}.json").read_text())
        ok[result["ok"]] = True
        errors.extend(result["errors"])
    plan["ok"] = ok
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
    meta = {
        "num_images": n,
        "num_ok": summary.images_stored,
        "vocabulary": vocabulary.to_dict(),
        "preprocess": preprocess.to_dict(),
        "split_hash": split_hash,
        "plan_hash": plan_hash,
        "summary": summary.__dict__,
        "images_per_class_per_split": images_per_class_per_split(
            plan.loc[ok, ["split", "label"]], vocabulary.classes
        ),
        **(extra_meta or {}),
    }
    write_text_atomic(out / META_FILE, json.dumps(meta, indent=2, default=str))
    shutil.rmtree(journal, ignore_errors=True)
    (out / PLAN_FILE).unlink(missing_ok=True)
    (out / "plan.json").unlink(missing_ok=True)
    return summary


def images_per_class_per_split(
    table: pd.DataFrame, classes: Iterable[str]
) -> dict[str, dict[str, int]]:
    """{split: {class: images}} for every split and class (zeros included); labels of the
    table outside ``classes`` follow, sorted."""
    counts = table.groupby(["split", "label"]).size()
    names = list(classes)
    names += sorted(set(table["label"]) - set(names))
    return {s: {c: int(counts.get((s, c), 0)) for c in names} for s in SPLITS}


def store_errors(path: Path | str) -> list[dict]:
    return read_errors(Path(path) / ERRORS_FILE)
