"""Is every input file accounted for? The checks the fuzz and kill tests apply to the outputs
of ``catalog``, ``store`` and ``predict``.

The expected inputs are found by walking the corpus as the issue says a stage must: every
entry that is not a folder counts (regular files, FIFOs, sockets, links to devices, dangling
links and links to themselves), names starting with ``.`` included; folder links are followed
once, and a link back to a folder already walked is a loop (it may be reported, need not be).
Only the metadata names the catalog reserves (``dataset.json`` …) are left out.

Paths in outputs are matched whatever way a stage chose to carry a name that is not UTF-8
(surrogate escapes, ``\\xNN`` escapes, percent-encoding, raw bytes) and whether or not it
resolved links: each side is reduced to a set of byte keys, and an input is found when the
sets meet. Each check returns a list of problems (empty: all is well).
"""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from hypermodal.catalog.schema import SKIP_NAMES
from hypermodal.io.inputs import name_matcher

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Inputs:
    """What a stage given ``root`` must account for."""

    must: dict[bytes, set[bytes]] = field(default_factory=dict)  # path -> keys that match it
    may: dict[bytes, set[bytes]] = field(default_factory=dict)  # loops: reported or not


def _keys_of_bytes(raw: bytes) -> set[bytes]:
    keys = {raw, os.path.normpath(raw)}
    try:
        keys.add(os.path.realpath(raw))
    except OSError:
        pass
    return keys


def path_keys(value: Any) -> set[bytes]:
    """Every byte path an output value may stand for."""
    if isinstance(value, bytes):
        return _keys_of_bytes(value)
    text = str(value)
    raw = text.encode("utf-8", "surrogateescape")
    forms = {raw, re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m[1], 16)]), raw)}
    if "%" in text:
        forms.add(urllib.parse.unquote_to_bytes(text))
    keys: set[bytes] = set()
    for form in forms:
        keys |= _keys_of_bytes(form)
    return keys


_SKIPPED = name_matcher(SKIP_NAMES)


def expected_inputs(roots: Iterable[Path]) -> Inputs:
    """Walk ``roots`` the way the stages must (see the module docstring)."""
    found = Inputs()
    seen_dirs: set[bytes] = set()
    stack = [os.fsencode(os.path.abspath(r)) for r in roots]
    seen_dirs.update(os.path.realpath(r) for r in stack)
    while stack:
        folder = stack.pop()
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if _SKIPPED(os.fsdecode(entry.name)):
                continue
            path = entry.path
            try:
                st = os.stat(path)  # follows links
            except OSError:
                found.must[path] = _keys_of_bytes(path)  # dangling, or a link to itself
                continue
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(path)
                if real in seen_dirs:
                    found.may[path] = _keys_of_bytes(path)
                else:
                    seen_dirs.add(real)
                    stack.append(path)
                continue
            found.must[path] = _keys_of_bytes(path)
    return found


def match(inputs: Inputs, reported: Iterable[Any]) -> tuple[list[bytes], list[str]]:
    """(inputs no output names, output paths that are no input)."""
    index: dict[bytes, bytes] = {}
    for path, keys in [*inputs.must.items(), *inputs.may.items()]:
        for key in keys:
            index.setdefault(key, path)
    hit: set[bytes] = set()
    strangers: list[str] = []
    for value in reported:
        paths = {index[k] for k in path_keys(value) if k in index}
        if paths:
            hit |= paths
        else:
            strangers.append(ascii(value))
    missing = [p for p in inputs.must if p not in hit]
    return missing, strangers


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line]


def bad_reasons(records: Iterable[dict[str, Any]]) -> list[str]:
    """Error records without a clear reason (missing, empty, or a traceback)."""
    problems = []
    for rec in records:
        reason = rec.get("reason")
        if not isinstance(reason, str) or not reason.strip() or TRACEBACK in reason:
            problems.append(f"error record without a clear reason: {ascii(rec)[:300]}")
    return problems


def leftovers(folder: Path, output: str | None = None) -> list[str]:
    """Temporary files and part folders a finished run must not leave in ``folder`` (only
    those of the output named ``output`` when given: other stages may share the folder)."""
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir()]
    if output is not None:
        names = [n for n in names if n.startswith((output + ".", f".{output}."))]
    return [n for n in names if n.endswith((".tmp", ".parts")) or ".tmp" in n]


def side_records(out: Path) -> list[dict[str, Any]]:
    """Path records in any JSON-lines file beside a table ``out`` (``<out>.errors.jsonl``,
    ``<out>.excluded.jsonl``, …), each with the name of its file as ``_source``."""
    recs: list[dict[str, Any]] = []
    for p in sorted(out.parent.glob(out.name + ".*jsonl")):
        recs += [
            {**r, "_source": p.name} for r in read_records(p) if isinstance(r, dict) and "path" in r
        ]
    return recs


def _excluded_in_summary(meta: Any) -> list[Any]:
    """Paths listed under an ``excluded…`` key anywhere in the catalog's summary file."""
    found: list[Any] = []
    if isinstance(meta, dict):
        for key, value in meta.items():
            if "excluded" in key and isinstance(value, list):
                found += [v.get("path") if isinstance(v, dict) else v for v in value]
            else:
                found += _excluded_in_summary(value)
    return found


def check_catalog(out: Path, roots: list[Path], summary: dict[str, Any]) -> list[str]:
    """Every input of ``roots`` is a catalog row, an excluded file named by path, or an error
    with a reason; the counts reconcile."""
    problems: list[str] = []
    inputs = expected_inputs(roots)
    table = pq.read_table(out, columns=["path"])
    rows = set(table.column("path").to_pylist())
    errors, excluded_records = [], []
    for rec in side_records(out):
        reason = str(rec.get("reason", "")).lower()
        is_excluded = "exclu" in rec["_source"] or reason.startswith("excluded")
        (excluded_records if is_excluded else errors).append(rec)
    meta_path = out.with_name(out.name + ".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    excluded = {r["path"] for r in excluded_records} | set(_excluded_in_summary(meta))
    error_paths = {r["path"] for r in errors}
    missing, strangers = match(inputs, rows | excluded | error_paths)
    problems += [f"not accounted for: {ascii(os.fsdecode(p))}" for p in missing]
    problems += [f"accounted but not an input: {s}" for s in strangers]
    problems += bad_reasons(errors)
    seen = summary.get("files_seen")
    parts = [summary.get(k, 0) for k in ("files_cataloged", "files_excluded", "files_skipped")]
    if seen != sum(parts):
        problems.append(f"counts do not reconcile: {summary}")
    if not len(inputs.must) <= (seen or 0) <= len(inputs.must) + len(inputs.may):
        problems.append(f"files_seen {seen}, but {len(inputs.must)} inputs")
    if summary.get("files_excluded") and len(excluded) != summary["files_excluded"]:
        problems.append(f"{summary['files_excluded']} files excluded, {len(excluded)} by path")
    if len(error_paths) != summary.get("files_skipped"):
        problems.append(f"{summary.get('files_skipped')} skipped, {len(error_paths)} errors")
    return problems + [f"left behind: {n}" for n in leftovers(out.parent, out.name)]


def check_store(store: Path, catalog: Path) -> list[str]:
    """Every catalog row is a stored image or a failed one with its error; counts reconcile."""
    problems: list[str] = []
    if not (store / "store.json").exists():
        return [f"{store} has no store.json"]
    meta = json.loads((store / "store.json").read_text())
    manifest = pq.read_table(store / "manifest.parquet", columns=["path", "index", "ok"])
    planned = list(zip(*(manifest.column(c).to_pylist() for c in ("path", "index")), strict=True))
    cat = pq.read_table(catalog, columns=["path", "index"])
    wanted = list(zip(cat.column("path").to_pylist(), cat.column("index").to_pylist(), strict=True))
    if sorted(planned) != sorted(wanted):
        problems.append(f"store plans {len(planned)} images, the catalog has {len(wanted)}")
    ok = manifest.column("ok").to_pylist()
    failed = {key for key, good in zip(planned, ok, strict=True) if not good}
    errors = read_records(store / "errors.jsonl")
    reported = {(r.get("path"), r.get("index")) for r in errors}
    if reported != failed:
        problems.append(
            f"{len(failed)} failed images, {len(reported)} errors; "
            f"unreported {ascii(sorted(failed - reported)[:5])}"
        )
    problems += bad_reasons(errors)
    summary = meta.get("summary", {})
    if summary.get("images_planned") != summary.get("images_stored", 0) + summary.get(
        "images_failed", 0
    ) or summary.get("images_planned") != len(planned):
        problems.append(f"store counts do not reconcile: {summary}")
    size = int(meta.get("preprocess", {}).get("size", 0))
    images = store / "images.u8"
    if images.stat().st_size != len(planned) * size * size:
        problems.append(f"images.u8 holds {images.stat().st_size} bytes for {len(planned)} rows")
    return problems + [f"left behind: {n}" for n in leftovers(store)]


def check_predict(
    out: Path, roots: list[Path], summary: dict[str, Any], images: Path | None = None
) -> list[str]:
    """Every input is a predicted file (rows with probabilities) or an error with a reason.

    ``images`` is the per-image table of a run of every image (``--all-slices``); without it
    ``out`` is read as the rows to check.
    """
    import numpy as np
    import pandas as pd

    problems: list[str] = []
    inputs = expected_inputs(roots)
    rows = images or out
    table = pd.read_parquet(rows) if rows.suffix == ".parquet" else pd.read_csv(rows)
    errors = side_records(out)
    row_paths, error_paths = set(table["path"]), {r["path"] for r in errors}
    missing, strangers = match(inputs, row_paths | error_paths)
    problems += [f"not accounted for: {ascii(os.fsdecode(p))}" for p in missing]
    problems += [f"accounted but not an input: {s}" for s in strangers]
    problems += bad_reasons(errors)
    if both := row_paths & error_paths:
        problems.append(f"both predicted and skipped: {ascii(sorted(both)[:5])}")
    seen = summary.get("files_seen")
    if seen != summary.get("files_predicted", 0) + summary.get("files_skipped", 0) + summary.get(
        "files_sampled_out", 0
    ):
        problems.append(f"counts do not reconcile: {summary}")
    if not len(inputs.must) <= (seen or 0) <= len(inputs.must) + len(inputs.may):
        problems.append(f"files_seen {seen}, but {len(inputs.must)} inputs")
    if len(row_paths) != summary.get("files_predicted"):
        problems.append(f"{summary.get('files_predicted')} predicted, {len(row_paths)} in table")
    probs = table[[c for c in table.columns if c.startswith("p_")]].to_numpy(dtype=float)
    if len(probs) and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        problems.append("probabilities that are not finite or do not sum to 1")
    return problems + [f"left behind: {n}" for n in leftovers(out.parent, out.name)]
