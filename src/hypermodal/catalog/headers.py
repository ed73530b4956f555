"""The catalog's unit of work: the headers of a chunk of files, read by one worker.

:func:`read_chunk` runs in a worker process (see :mod:`hypermodal.common.engines`); the driver
(:mod:`hypermodal.catalog.build`) writes what it returns to a part file. When a chunk's worker
dies, :func:`one_file_chunks` and :func:`merge_files` let
:func:`~hypermodal.common.isolation.map_chunks` read its files again one at a time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from hypermodal.catalog.schema import CATALOG_COLUMNS, SCHEMA, FileTask, exclusion_reason
from hypermodal.common.isolation import Crashed, failure_reason, heartbeat
from hypermodal.common.rejects import error_record
from hypermodal.evidence.features import header_geometry
from hypermodal.io import ImageReadError, read_header
from hypermodal.labels import ClassVocabulary


def read_chunk(
    args: tuple[list[FileTask], dict[str, Any]],
) -> tuple[pa.Table, list[dict], dict]:
    """Worker: headers of a chunk of files -> (rows as an Arrow table, errors, outcome counts).

    Rows are gathered column by column (a multi-frame file adds the same values ``num_images``
    times), never as one dict per image: a chunk of 512 files × 50 frames stays a few MB. A file
    whose header cannot be read, or whose reading raises anything else (a ``MemoryError``, a
    decoder's panic), is that file's error; its rows, if any were added, are taken back.
    """
    tasks, vocab_dict = args
    vocab = ClassVocabulary.from_dict(vocab_dict)
    columns: dict[str, list[Any]] = {name: [] for name in CATALOG_COLUMNS}
    errors: list[dict] = []
    outcome: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    excluded_files: list[dict] = []  # excluded inputs, by path, with the reason
    for t in tasks:
        heartbeat()  # the time limit is per file
        unread = t.unread()
        if unread is not None:  # the listing decided (a hidden name, a folder seen twice...)
            outcome[unread[0]] += 1
            listed = excluded_files if unread[0] == "excluded" else errors
            listed.append(error_record(t.path, "catalog", unread[1], dataset=t.dataset))
            continue
        before = len(columns["index"])
        try:
            h = read_header(Path(t.path))
            modality = h.modality or t.modality_hint
            if modality:
                label = vocab.label_for_modality(modality)
            else:
                label = vocab.normalise_label(t.label)
            if label is None:
                outcome["excluded"] += 1
                excluded[str(modality or t.label or "unknown").upper()] += 1
                reason = exclusion_reason(modality, t.label)
                excluded_files.append(error_record(t.path, "catalog", reason, dataset=t.dataset))
                continue
            _add_rows(columns, t, h, label)
        except BaseException as exc:  # noqa: BLE001 - one bad file costs that file only
            for values in columns.values():
                del values[before:]
            reason = exc.reason if isinstance(exc, ImageReadError) else failure_reason(exc)
            errors.append(error_record(t.path, "catalog", reason, dataset=t.dataset))
            outcome["skipped"] += 1
            continue
        outcome["cataloged"] += 1
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    counts = {"outcome": dict(outcome), "excluded": dict(excluded)}
    return table, errors, {**counts, "excluded_files": excluded_files}


def _add_rows(columns: dict[str, list[Any]], t: FileTask, h: Any, label: str) -> None:
    """The catalog rows of one file (one per image), added to ``columns``."""
    series = h.series or t.path
    n = h.num_images
    same = {
        "dataset": t.dataset,
        "patient": h.patient or t.dataset,
        "study": h.study or series,
        "series": series,
        "path": t.path,
        "label": label,
        "modality": h.modality,
        "body_part": (h.body_part or t.body_part or None),
        "rows": h.rows,
        "columns": h.columns,
        "localizer": bool(h.localizer),
        "template": t.template,
        "format": h.format,
        "split": None,
        **header_geometry(h.format, n, h.extra),
        "sop_class": h.extra.get("sop_class"),
        "synthetic": t.synthetic,
        "simulated_from": t.simulated_from,
    }
    for name, value in same.items():
        columns[name].extend([value] * n)
    columns["index"].extend(range(n))


def one_file_chunks(work: tuple[list[FileTask], dict[str, Any]]) -> list[tuple]:
    """A chunk's work as one chunk per file, in order."""
    tasks, vocab_dict = work
    return [([t], vocab_dict) for t in tasks]


def merge_files(work: tuple[list[FileTask], dict[str, Any]], results: list[Any]) -> tuple:
    """A chunk's result from its files' results (a file that crashed its worker is an error)."""
    tables, errors = [], []
    outcome: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    excluded_files: list[dict] = []
    for t, result in zip(work[0], results, strict=True):
        if isinstance(result, Crashed):
            errors.append(error_record(t.path, "catalog", result.reason, dataset=t.dataset))
            outcome["skipped"] += 1
            continue
        tables.append(result[0])
        errors.extend(result[1])
        outcome.update(result[2]["outcome"])
        excluded.update(result[2]["excluded"])
        excluded_files.extend(result[2].get("excluded_files", []))
    table = pa.concat_tables(tables).combine_chunks() if tables else SCHEMA.empty_table()
    counts = {"outcome": dict(outcome), "excluded": dict(excluded)}
    return table, errors, {**counts, "excluded_files": excluded_files}
