"""``hypermodal sort``: lay an archive out by class, patient, study and series.

The series decisions come from a ``predict`` run made here (nothing but the plan is computed
before files are placed) or from a series table ``predict`` wrote before (``--predictions``:
then only headers are read, to know each file's series). Every readable file of a decided
series is placed (:mod:`~hypermodal.sort.place`: symlink, hard link or copy, never
overwriting); unreadable files and files of series the table does not hold are listed, not
placed. The target itself is the journal: a placed file is complete (placing is atomic), so a
rerun after a kill places only what is missing. ``DST/sort-manifest.csv`` lists every file
seen: source, target, status, class, series, reason; a dry run computes the same plan and
touches nothing (it writes the manifest only where ``manifest`` says).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.files import remove_stale_temps
from hypermodal.common.isolation import DecodeLimits
from hypermodal.common.progress import progress_bar
from hypermodal.inference.predict import (
    DEFAULT_SLICES,
    classify,
    errors_path,
    expand_inputs,
    write_table,
)
from hypermodal.inference.sampling import SERIES_TEXT, EmptyInputError, Series, group_series
from hypermodal.sort.layout import series_folders
from hypermodal.sort.names import safe_name
from hypermodal.sort.place import MODES, Mode, free_name, place

#: what a sort writes at the top of DST (besides the class folders)
MANIFEST_NAME = "sort-manifest.csv"
SERIES_NAME = "sort-series.csv"
MANIFEST_COLUMNS = ("source", "target", "status", "class", "series", "reason")
#: columns read as text from a series table (an ID such as 0001 stays 0001)
_TEXT_COLUMNS = ("series", "path", "prediction", *(c for c, _ in SERIES_TEXT))


@dataclass
class SortSummary:
    """What a sort did (its JSON summary); every file seen has exactly one status."""

    files_seen: int = 0
    placed: int = 0
    renamed: int = 0
    already: int = 0
    unreadable: int = 0
    unpredicted: int = 0
    failed: int = 0
    mode: str = "symlink"
    dry_run: bool = False
    per_class: dict[str, int] = field(default_factory=dict)
    series: int = 0
    to: str = ""
    manifest: str | None = None
    predictions: str | None = None
    seconds: float = 0.0
    predict: dict[str, Any] | None = None
    #: the manifest records (not part of the JSON summary)
    plan: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The counts as plain values (the JSON summary), without the plan."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "plan"}

    def reconciles(self) -> bool:
        done = self.placed + self.renamed + self.already
        return self.files_seen == done + self.unreadable + self.unpredicted + self.failed


def read_series_table(path: Path | str) -> pd.DataFrame:
    """A series table ``predict`` wrote (CSV or Parquet), its text columns as text.

    Raises:
        ValueError: Not a series table (no ``series`` or ``prediction`` column).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        head = pd.read_csv(path, nrows=0).columns
        df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS if c in head})
    else:
        df = pd.read_parquet(path)
    missing = [c for c in ("series", "prediction") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a series table from predict (no {', '.join(missing)})")
    return df


def _rows_by_series(table: pd.DataFrame, groups: Sequence[Series]) -> dict[str, dict[str, Any]]:
    """Series key -> its row; a file-keyed series (a volume) also matches by its real path."""
    rows = {str(r["series"]): r for r in table.to_dict("records")}
    real = {os.path.realpath(k): r for k, r in rows.items() if os.path.sep in k}
    out: dict[str, dict[str, Any]] = {}
    for s in groups:
        row = rows.get(s.key) or real.get(os.path.realpath(s.key))
        if row is not None:
            out[s.key] = {**row, "series": s.key}
    return out


def plan(
    groups: Sequence[Series], rows: dict[str, dict[str, Any]], to: Path
) -> list[dict[str, Any]]:
    """Manifest records (status ``planned``, or ``no prediction``) for every file of ``groups``."""
    folders = series_folders(list(rows.values()))
    records: list[dict[str, Any]] = []
    for s in groups:
        parts = folders.get(s.key)
        for f in s.files:
            rec = {"source": f.path, "target": "", "status": "no prediction", "class": ""}
            rec.update(series=s.key, reason="")
            if parts is not None:
                name = safe_name(os.path.basename(f.path), "unknown")
                rec.update(target=str(to.joinpath(*parts, name)), status="planned")
                rec["class"] = parts[0]
            else:
                rec["reason"] = "its series is not in the predictions table"
            records.append(rec)
    return records


def _execute(records: list[dict[str, Any]], mode: Mode, dry_run: bool, progress: bool) -> None:
    taken: set[str] = set()
    cleaned: set[str] = set()
    bar = progress_bar(len(records), progress, desc="sort", unit="file")
    for rec in records:
        bar.update(1)
        if rec["status"] != "planned":
            continue
        wanted = rec["target"]
        if dry_run:
            where, already = free_name(rec["source"], wanted, taken)
            taken.add(where)
            rec["target"] = where
            rec["status"] = (
                "already" if already else "would place" if where == wanted else "would rename"
            )
            continue
        folder = os.path.dirname(wanted)
        if folder not in cleaned:  # a killed copy's temporary files
            remove_stale_temps(folder)
            cleaned.add(folder)
        try:
            rec["target"], rec["status"] = place(rec["source"], wanted, mode)
        except OSError as exc:
            rec.update(status="failed", reason=f"{type(exc).__name__}: {exc.strerror or exc}")
    bar.close()


def sort_archive(
    sources: Iterable[Path | str],
    to: Path | str,
    *,
    mode: Mode = "symlink",
    dry_run: bool = False,
    model: Path | str | None = None,
    predictions: Path | str | None = None,
    manifest: Path | str | None = None,
    slices: int | None = DEFAULT_SLICES,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    limits: DecodeLimits | None = None,
) -> SortSummary:
    """Lay every readable file under ``sources`` out as ``to/<class>/<patient>/<study>/<series>/``.

    Args:
        sources: Files and folders (files under ``to`` are never inputs).
        to: The sorted tree's root.
        mode: ``symlink`` (absolute links to the sources), ``hardlink`` or ``copy``.
        dry_run: Plan only: nothing is created, linked or copied.
        model: The checkpoint for predict (None: the bundled model).
        predictions: A series table ``predict`` wrote: reuse its decisions instead of predicting.
        manifest: Where the manifest goes (default ``to/sort-manifest.csv``; a dry run writes
            one only when given).
        slices: Images per series predict decodes (None: all).
        workers: Processes for headers and decoding.
        device: The model's device.
        progress: Show progress bars.
        limits: Bounds on each decoding worker.

    Returns:
        The counts; ``files_seen`` = placed + renamed + already + unreadable + unpredicted +
        failed.

    Raises:
        ValueError: An unknown mode, or a predictions file that is not a series table.
        EmptyInputError: The sources hold no file.
    """
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    start = time.perf_counter()
    to = Path(to)
    sources = list(sources)
    summary = SortSummary(mode=mode, dry_run=dry_run, to=str(to))
    errors: list[dict[str, Any]] = []
    if predictions is not None:
        from hypermodal.common.engines import engine_scope
        from hypermodal.inference.decoding import read_headers

        table = read_series_table(predictions)
        files = expand_inputs(sources, skip=[to])
        if not files:
            raise EmptyInputError(f"no files under {', '.join(map(str, sources))}")
        with engine_scope("local", workers=workers, limits=limits) as runner:
            infos, failed = read_headers(files, runner, progress)
        groups = group_series(infos)
        errors = [{"path": p, "reason": r} for p, r in failed]
        summary.predictions = str(predictions)
    else:
        result = classify(
            sources,
            model,
            slices=slices,
            workers=workers,
            device=device,
            progress=progress,
            limits=limits,
            skip=[to],
        )
        table, groups, errors = result.series, result.groups, result.errors
        summary.predict = asdict(result.summary)
    rows = _rows_by_series(table, groups)
    records = plan(groups, rows, to)
    records += [
        {"source": e["path"], "target": "", "status": "unreadable", "class": "", "series": ""}
        | {"reason": e["reason"]}
        for e in errors
    ]
    summary.files_seen = len(records)
    summary.series = len(rows)
    _execute(records, mode, dry_run, progress)
    counts = Counter(r["status"] for r in records)
    summary.placed = counts["placed"] + counts["would place"]
    summary.renamed = counts["renamed"] + counts["would rename"]
    summary.already, summary.failed = counts["already"], counts["failed"]
    summary.unreadable, summary.unpredicted = counts["unreadable"], counts["no prediction"]
    summary.per_class = dict(sorted(Counter(r["class"] for r in records if r["class"]).items()))
    frame = pd.DataFrame(records, columns=list(MANIFEST_COLUMNS))
    summary.plan = frame
    if not dry_run:
        manifest = manifest or to / MANIFEST_NAME
        if predictions is None:  # the decisions the layout rests on, reusable with --predictions
            write_table(table, to / SERIES_NAME)
            write_errors_of(to / SERIES_NAME, errors)
    if manifest is not None:
        write_table(frame, manifest)
        summary.manifest = str(manifest)
    summary.seconds = round(time.perf_counter() - start, 3)
    assert summary.reconciles(), summary
    return summary


def write_errors_of(table: Path, errors: list[dict[str, Any]]) -> None:
    """The unreadable files beside the series table, as ``predict`` writes them."""
    from hypermodal.common.rejects import write_errors

    write_errors(errors_path(table), errors)


def summary_text(summary: SortSummary, records_shown: pd.DataFrame | None = None) -> str:
    """The lines printed on stderr at the end of a sort."""
    s = summary
    verb = "would be" if s.dry_run else "were"
    lines = [
        f"{s.files_seen:,} files, {s.series:,} series: {s.placed:,} {verb} placed, "
        f"{s.renamed:,} under a de-duplicated name, {s.already:,} already in place "
        f"({s.mode}{', dry run: nothing touched' if s.dry_run else ''})",
    ]
    if s.per_class:
        lines.append("  " + ", ".join(f"{c}: {n:,}" for c, n in s.per_class.items()))
    if s.unreadable or s.unpredicted or s.failed:
        lines.append(
            f"not placed: {s.unreadable} unreadable, {s.unpredicted} without a prediction, "
            f"{s.failed} failed (see the manifest)"
        )
    if records_shown is not None:
        for _, rec in records_shown.iterrows():
            lines.append(f"  {rec['source']} -> {rec['target'] or '-'} [{rec['status']}]")
        if s.files_seen > len(records_shown):
            lines.append(f"  … and {s.files_seen - len(records_shown):,} more in the manifest")
    lines.append(f"manifest: {s.manifest or 'not written (give --manifest FILE)'}")
    return "\n".join(lines)


__all__ = [
    "MANIFEST_NAME",
    "SortSummary",
    "plan",
    "read_series_table",
    "sort_archive",
    "summary_text",
]
