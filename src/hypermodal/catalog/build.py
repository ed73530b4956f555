"""The catalog: a Parquet manifest with one row per 2D image, built from headers only.

Columns: see :mod:`hypermodal.catalog.schema` (identity, label, header geometry, provenance).
``label`` is the class
from the vocabulary (``None`` rows are not written: images of excluded modalities are counted in
the summary instead). ``split`` stays empty until :mod:`hypermodal.split` assigns it.

Datasets: a folder given to :func:`build_catalog` holds one sub-folder per dataset (as the
paper's download did). A sub-folder may carry a ``dataset.json`` (written by
``hypermodal samples`` and ``hypermodal simulate``) with the dataset's ``name``, the ``label`` for
files that have no DICOM Modality (NIfTI, PNG), ``body_part``, ``template``/``phantom`` flags and,
for simulated images, ``synthetic`` and ``simulated_from``.

The build walks files in sorted order, reads headers in parallel in chunks (on a local process
pool or a Ray cluster, see :mod:`hypermodal.common.engines`), and the driver writes each chunk's
rows to a part file, so an interrupted build resumes where it stopped. Workers only read headers
and return rows, so the catalog is the same whichever engine ran them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hypermodal.catalog.schema import (
    CATALOG_COLUMNS,
    COLUMN_DEFAULTS,
    DATASET_FILE,
    REQUIRED_COLUMNS,
    SCHEMA,
    SKIP_NAMES,
    CatalogSummary,
    DatasetInfo,
    FileTask,
)
from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.files import atomic_path, write_text_atomic
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import error_record, write_errors
from hypermodal.evidence.features import header_geometry
from hypermodal.io import ImageReadError, read_header
from hypermodal.labels import ClassVocabulary

log = logging.getLogger(__name__)


def discover(roots: Iterable[Path | str]) -> list[FileTask]:
    """All candidate files under ``roots``, sorted, each with its dataset.

    A root that itself holds a ``dataset.json``, or holds files directly, is one dataset; otherwise
    each sub-folder of the root is a dataset.
    """
    tasks: list[FileTask] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"input {root} does not exist")
        if root.is_file():
            info = DatasetInfo.from_folder(root.parent, root.parent.name or "dataset")
            tasks.append(_task(root, root.parent, info))
            continue
        children = sorted(root.iterdir())
        if (root / DATASET_FILE).exists() or not any(c.is_dir() for c in children):
            groups = [(root, DatasetInfo.from_folder(root, root.name))]
        else:
            groups = [(c, DatasetInfo.from_folder(c, c.name)) for c in children if c.is_dir()]
            loose = [c for c in children if c.is_file() and c.name not in SKIP_NAMES]
            if loose:
                info = DatasetInfo(name=root.name)
                tasks.extend(_task(p, root, info) for p in loose)
        for folder, info in groups:
            for p in sorted(_walk(folder)):
                tasks.append(_task(p, folder, info))
    return tasks


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            if name in SKIP_NAMES or name.startswith("."):
                continue
            yield Path(dirpath) / name


def _task(path: Path, folder: Path, info: DatasetInfo) -> FileTask:
    rel = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
    return FileTask(
        path=str(path),
        dataset=info.name,
        rel=rel,
        label=info.label,
        body_part=info.body_part,
        template=info.template or info.phantom,
        modality_hint=info.file_modality.get(rel),
        synthetic=info.synthetic,
        simulated_from=info.simulated_from,
    )


def _read_chunk(
    args: tuple[list[FileTask], dict[str, Any]],
) -> tuple[pa.Table, list[dict], dict]:
    """Worker: headers of a chunk of files -> (rows as an Arrow table, errors, outcome counts).

    Rows are gathered column by column (a multi-frame file adds the same values ``num_images``
    times), never as one dict per image: a chunk of 512 files × 50 frames stays a few MB.
    """
    tasks, vocab_dict = args
    vocab = ClassVocabulary.from_dict(vocab_dict)
    columns: dict[str, list[Any]] = {name: [] for name in CATALOG_COLUMNS}
    errors: list[dict] = []
    outcome: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    for t in tasks:
        try:
            h = read_header(Path(t.path))
        except ImageReadError as exc:
            errors.append(error_record(t.path, "catalog", exc.reason, dataset=t.dataset))
            outcome["skipped"] += 1
            continue
        modality = h.modality or t.modality_hint
        label = vocab.label_for_modality(modality) if modality else vocab.normalise_label(t.label)
        if label is None:
            outcome["excluded"] += 1
            excluded[str(modality or t.label or "unknown").upper()] += 1
            continue
        outcome["cataloged"] += 1
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
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    return table, errors, {"outcome": dict(outcome), "excluded": dict(excluded)}


def _part(parts: Path, i: int, suffix: str) -> Path:
    return parts / f"part-{i:06d}.{suffix}"


def _read_parts(
    chunks: list[list[FileTask]],
    parts: Path,
    vocabulary: ClassVocabulary,
    progress: bool,
    engine: str | Engine,
    workers: int | None,
    ray_address: str | None,
) -> None:
    """Read the chunks that have no finished part file yet, and write their parts."""
    todo = [i for i in range(len(chunks)) if not _part(parts, i, "json").exists()]
    bar = progress_bar(sum(map(len, chunks)), progress, desc="catalog", unit="file")
    bar.update(sum(len(chunks[i]) for i in range(len(chunks)) if i not in set(todo)))
    if todo:
        vocab_dict = vocabulary.to_dict()
        with engine_scope(engine, workers=workers, address=ray_address) as runner:
            work = [(chunks[i], vocab_dict) for i in todo]
            for k, (table, errors, counts) in runner.map_unordered(_read_chunk, work):
                i = todo[k]
                with atomic_path(_part(parts, i, "parquet")) as tmp:
                    pq.write_table(table, tmp)
                write_text_atomic(
                    _part(parts, i, "json"),  # written last: marks the part complete
                    json.dumps({"errors": errors, **counts}),
                )
                bar.update(len(chunks[i]))
    bar.close()


def _merge_parts(
    out: Path, parts: Path, n_parts: int, summary: CatalogSummary, classes: Iterable[str]
) -> list[dict]:
    """Copy the parts into the catalog at ``out`` and fill in ``summary``; returns the errors.

    The parts are copied one at a time and counted with Arrow: memory stays at about one part,
    however many images the catalog holds.
    """
    all_errors: list[dict] = []
    outcome: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    per_class: Counter[str] = Counter()
    datasets: set[str] = set()
    images = synthetic = 0
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            for i in range(n_parts):
                meta = json.loads(_part(parts, i, "json").read_text())
                all_errors.extend(meta["errors"])
                outcome.update(meta["outcome"])
                excluded.update(meta["excluded"])
                part = pq.read_table(_part(parts, i, "parquet"), schema=SCHEMA)
                if part.num_rows:
                    writer.write_table(part)
                images += part.num_rows
                for item in pc.value_counts(part.column("label")).to_pylist():
                    if item["values"] is not None:
                        per_class[item["values"]] += item["counts"]
                datasets.update(v for v in pc.unique(part.column("dataset")).to_pylist())
                synthetic += int(pc.sum(part.column("synthetic")).as_py() or 0)
                del part
    summary.files_cataloged = outcome["cataloged"]
    summary.files_excluded = outcome["excluded"]
    summary.files_skipped = outcome["skipped"]
    summary.excluded_modalities = dict(sorted(excluded.items()))
    summary.images = images
    summary.images_per_class = {c: per_class.get(c, 0) for c in classes}
    summary.datasets = len(datasets)
    summary.synthetic_images = synthetic
    return all_errors


def build_catalog(
    roots: Iterable[Path | str],
    out: Path | str,
    vocabulary: ClassVocabulary | None = None,
    workers: int | None = None,
    chunk_files: int = 512,
    progress: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
) -> CatalogSummary:
    """Read the headers of every file under ``roots`` and write the catalog to ``out``.

    Writes ``out`` (Parquet), ``<out>.errors.jsonl`` and ``<out>.json`` (summary + vocabulary).
    Part files in ``<out>.parts/`` make the build resumable; they are removed at the end.

    ``engine`` is ``"local"`` (process pool of ``workers``), ``"ray"`` (Ray Data; a local Ray
    instance, or the cluster at ``ray_address``), or an :class:`~hypermodal.common.engines.Engine`
    the caller owns. With Ray, every worker must see the files at the same paths.

    Raises:
        FileNotFoundError: a root does not exist.
    """
    start = time.perf_counter()
    roots = [Path(r) for r in roots]
    out = Path(out)
    vocabulary = vocabulary or ClassVocabulary()
    tasks = discover(roots)
    listing = listing_hash(tasks, vocabulary)
    parts = out.with_name(out.name + ".parts")
    if (parts / "listing").exists() and (parts / "listing").read_text() != listing:
        log.warning("input listing changed since the interrupted build: starting over")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomic(parts / "listing", listing)

    chunks = [tasks[i : i + chunk_files] for i in range(0, len(tasks), chunk_files)]
    _read_parts(chunks, parts, vocabulary, progress, engine, workers, ray_address)
    summary = CatalogSummary(files_seen=len(tasks))
    all_errors = _merge_parts(out, parts, len(chunks), summary, vocabulary.classes)
    summary.seconds = round(time.perf_counter() - start, 3)
    if not summary.reconciles():  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"catalog counts do not reconcile: {summary}")

    write_errors(errors_path(out), all_errors)
    roots_seen = [str(r.resolve()) for r in roots]
    meta = {"summary": summary.to_dict(), "vocabulary": vocabulary.to_dict(), "roots": roots_seen}
    write_text_atomic(summary_path(out), json.dumps(meta, indent=2))
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def listing_hash(tasks: Iterable[FileTask], vocabulary: ClassVocabulary) -> str:
    """A hash of the input listing (path, dataset) and the vocabulary, fed one file at a time."""
    h = hashlib.sha256()
    for t in tasks:
        h.update(json.dumps([t.path, t.dataset]).encode())
        h.update(b"\n")
    h.update(json.dumps(vocabulary.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def errors_path(catalog: Path | str) -> Path:
    catalog = Path(catalog)
    return catalog.with_name(catalog.name + ".errors.jsonl")


def summary_path(catalog: Path | str) -> Path:
    catalog = Path(catalog)
    return catalog.with_name(catalog.name + ".json")


def read_catalog(path: Path | str) -> pd.DataFrame:
    """The catalog as a DataFrame (columns :data:`CATALOG_COLUMNS`, catalog order kept)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalog {path} not found; build it with `hypermodal catalog`")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a hypermodal catalog (missing columns {missing})")
    frame = table.to_pandas()
    for name, default in COLUMN_DEFAULTS.items():
        if name not in frame.columns:
            frame[name] = default
    return frame


def catalog_vocabulary(path: Path | str) -> ClassVocabulary:
    """The vocabulary a catalog was built with (default vocabulary if the summary is missing)."""
    meta = summary_path(path)
    if meta.exists():
        return ClassVocabulary.from_dict(json.loads(meta.read_text())["vocabulary"])
    return ClassVocabulary()
