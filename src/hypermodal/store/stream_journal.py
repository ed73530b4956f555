"""The stream build's journal, its per-batch part files, and the finished store they add up to.

``OUT/.build/journal.sqlite`` holds the plan hash and one row per committed batch (its store rows
``lo:hi``, its series, its counts). Each batch leaves ``OUT/.build/parts/manifest-<id>.parquet``
and ``errors-<id>.jsonl`` before it is committed; :func:`finish_store` joins the committed parts
into ``manifest.parquet`` + ``errors.jsonl`` and writes ``store.json`` last.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.files import atomic_path
from hypermodal.common.rejects import read_errors, write_errors
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.store.format import (
    ERRORS_FILE,
    IMAGES_FILE,
    MANIFEST_FILE,
    StoreError,
    frame_hash,
    images_per_class_per_split,
    write_meta,
)

BUILD_DIR = ".build"
JOURNAL_FILE = "journal.sqlite"
PARTS_DIR = "parts"


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

    def add_batch(self, stats: Mapping[str, Any]) -> None:
        """Count in the stats of one committed batch."""
        self.series_failed += len(stats["failed"])
        self.failures.update(stats["failed"])
        self.files_unreadable += stats["files_unreadable"]
        self.files_excluded += stats["files_excluded"]
        self.images_capped += stats["images_capped"]
        self.bytes_fetched += stats["bytes"]
        self.peak_scratch_bytes = max(self.peak_scratch_bytes, stats["peak_scratch_bytes"])


def manifest_part(parts: Path, batch: int) -> Path:
    return parts / f"manifest-{batch:06d}.parquet"


def errors_part(parts: Path, batch: int) -> Path:
    return parts / f"errors-{batch:06d}.jsonl"


def write_parts(parts: Path, batch: int, manifest: pd.DataFrame | None, errors: list[dict]) -> None:
    """Write one batch's part files (its manifest only when it stored images)."""
    if manifest is not None:
        with atomic_path(manifest_part(parts, batch)) as tmp:
            manifest.to_parquet(tmp, index=False)
    write_errors(errors_part(parts, batch), errors)


def drop_uncommitted_parts(parts: Path, next_batch: int) -> None:
    """Remove part files of batches from ``next_batch`` on (and temporary files)."""
    parts.mkdir(parents=True, exist_ok=True)
    for p in parts.iterdir():
        if p.name.startswith(".") or int(p.stem.split("-")[1]) >= next_batch:
            p.unlink()


def finish_store(
    out: Path,
    journal: BuildJournal,
    summary: StreamBuildSummary,
    vocab: ClassVocabulary,
    preprocess: PreprocessConfig,
    plan_hash: str,
    extra: Mapping[str, Any],
) -> StreamBuildSummary:
    """Join the parts into ``manifest.parquet`` + ``errors.jsonl``; write ``store.json`` last.

    ``summary`` comes in with the plan's counts and leaves with the batches' counts added;
    ``extra`` are the last keys of ``store.json`` (after ``images_per_class_per_split``).
    """
    from hypermodal.catalog import CATALOG_COLUMNS

    parts = out / BUILD_DIR / PARTS_DIR
    done = journal.batches()
    tables, errors = [], []
    for b in done:
        p = manifest_part(parts, b["id"])
        if p.exists():
            tables.append(pd.read_parquet(p))
        errors.extend(read_errors(errors_part(parts, b["id"])))
        summary.add_batch(b["stats"])
    summary.batches = len(done)
    summary.series_stored = sum(len(b["series"]) for b in done) - summary.series_failed
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
    write_meta(
        out,
        num_images=n,
        num_ok=summary.images_stored,
        vocabulary=vocab,
        preprocess=preprocess,
        split_hash=frame_hash(table, ["dataset", "split"]) if n else "",
        extra={
            "plan_hash": plan_hash,
            "summary": summary.to_dict(),
            "images_per_class_per_split": images_per_class_per_split(ok, vocab.classes),
            **extra,
        },
    )
    return summary
