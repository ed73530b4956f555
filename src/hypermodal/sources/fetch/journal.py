"""The fetch journal: one SQLite row per planned series, and the lock of a target folder.

Layout inside the target folder ``DIR``::

    DIR/.fetch/journal.sqlite     one row per series: pending → downloading → verified | failed
                                  (attempts, instances, bytes, error, time of the last change)
    DIR/.fetch/lock               held by the one fetch writing to DIR
    DIR/.fetch/partial/<key>/     staging of series being downloaded
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from hypermodal.common.files import exclusive_lock
from hypermodal.sources.fetch.plan_rows import PlanRow

STATE_DIR = ".fetch"
JOURNAL = "journal.sqlite"
PENDING, DOWNLOADING, VERIFIED, FAILED = "pending", "downloading", "verified", "failed"


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
        """``{series key: state}`` of every series the journal knows."""
        with self._lock:
            return dict(self._db.execute("SELECT key, state FROM series").fetchall())

    def row(self, key: str) -> dict[str, Any] | None:
        """The journal row of one series as a mapping, or None."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM series WHERE key = ?", (key,))
            r = cur.fetchone()
            return dict(zip([d[0] for d in cur.description], r, strict=True)) if r else None

    def add(self, row: PlanRow) -> None:
        """Record a planned series as pending, unless the journal has it already."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO series (key, dataset, series, source, state, updated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row.key, row.dataset, row.series, row.source, PENDING, time.time()),
            )

    def set(self, key: str, state: str, **values: Any) -> None:
        """Move a series to ``state``, updating the other columns given."""
        cols = ["state = ?", "updated = ?"] + [f"{k} = ?" for k in values]
        with self._lock:
            self._db.execute(
                f"UPDATE series SET {', '.join(cols)} WHERE key = ?",
                (state, time.time(), *values.values(), key),
            )

    def bump_attempts(self, key: str) -> None:
        with self._lock:
            self._db.execute("UPDATE series SET attempts = attempts + 1 WHERE key = ?", (key,))


def journal_path(target: Path) -> Path:
    """Where the journal of a fetch into ``target`` lives."""
    return target / STATE_DIR / JOURNAL


def lock_target(target: Path) -> Any:
    """Hold the lock of ``target`` (close the result to release it).

    Raises:
        FileExistsError: another fetch is writing to ``target``.
    """
    try:
        return exclusive_lock(target / STATE_DIR / "lock", "fetch")
    except FileExistsError:
        raise FileExistsError(f"another hypermodal fetch is writing to {target}") from None


def pending_rows(
    rows: list[PlanRow], target: Path, journal: Journal, retry_failed: bool
) -> tuple[list[PlanRow], list[PlanRow]]:
    """Split rows into (to fetch, already done); verified rows whose folder vanished redo.

    ``retry_failed=False`` counts series an earlier run marked failed as done.
    """
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
