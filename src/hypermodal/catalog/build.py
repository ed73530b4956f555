"""The catalog: a Parquet manifest with one row per 2D image, built from headers only.

Columns: see :mod:`hypermodal.catalog.schema` (identity, label, header geometry, provenance).
``label`` is the class
from the vocabulary (``None`` rows are not written: images of excluded modalities are counted in
the summary and listed by path in ``<out>.excluded.jsonl`` instead, with hidden names and
second ways into one folder). ``split`` stays empty until :mod:`hypermodal.split` assigns it.

Datasets: a folder given to :func:`build_catalog` holds one sub-folder per dataset (as the
paper's download did). A sub-folder may carry a ``dataset.json`` (written by
``hypermodal samples`` and ``hypermodal simulate``) with the dataset's ``name``, the ``label`` for
files that have no DICOM Modality (NIfTI, PNG), ``body_part``, ``template``/``phantom`` flags and,
for simulated images, ``synthetic`` and ``simulated_from``.

The build walks files in sorted order, reads headers in parallel in chunks
(:mod:`hypermodal.catalog.headers`, in crash-isolated local worker processes or on a Ray
cluster, see :mod:`hypermodal.common.engines`), and the driver writes each chunk's
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
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hypermodal.catalog.headers import merge_files, one_file_chunks, read_chunk
from hypermodal.catalog.schema import (
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
from hypermodal.common.files import atomic_path, remove_stale_temps, write_text_atomic
from hypermodal.common.isolation import DecodeLimits, map_chunks
from hypermodal.common.paths import local_path, path_text
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import write_errors
from hypermodal.io.inputs import Entry, FolderKey, claim_folder, name_matcher, walk_files
from hypermodal.labels import ClassVocabulary

log = logging.getLogger(__name__)


#: the names that are never inputs nor datasets (:data:`~hypermodal.catalog.schema.SKIP_NAMES`)
_SKIPPED = name_matcher(SKIP_NAMES)


def discover(roots: Iterable[Path | str]) -> list[FileTask]:
    """Every input under ``roots``, sorted, each with its dataset.

    A root that itself holds a ``dataset.json``, or holds no folder, is one dataset; otherwise
    each sub-folder of the root is a dataset (and files beside them one more, named after the
    root). A root may also be a single file. What the program itself writes there (a fetch's
    ``.fetch/`` journal and lock, temporary files: :data:`~hypermodal.catalog.schema.SKIP_NAMES`)
    is neither an input nor a dataset.

    Every entry is a task, so every input is in the accounting
    (:func:`hypermodal.io.inputs.walk_files`): links to folders are followed once; FIFOs,
    sockets, devices and broken links are listed and the reader refuses them with a reason,
    without opening them; a hidden name (``.DS_Store``, anything under ``.git/``) and a second
    way into one folder (a link loop) are counted as excluded, with their paths; a folder that
    cannot be listed is skipped, with the reason. Paths are written as
    :func:`~hypermodal.common.paths.path_text` (names that are not UTF-8 included).

    Raises:
        FileNotFoundError: A root does not exist.
    """
    tasks: list[FileTask] = []
    seen: dict[FolderKey, Path] = {}
    for root in roots:
        root = local_path(root)  # a path as the file system has it, or as an output wrote it
        if not os.path.lexists(root):
            raise FileNotFoundError(f"input {path_text(root)} does not exist")
        if not root.is_dir():  # one file (or FIFO, device, broken link) named directly
            info = DatasetInfo.from_folder(root.parent, root.parent.name or "dataset")
            tasks.append(_task(Entry(root), root.parent, info))
            continue
        children = sorted(c for c in root.iterdir() if not _SKIPPED(c.name))
        folders = [c for c in children if c.is_dir()]
        if (root / DATASET_FILE).is_file() or not folders:
            groups = [(root, DatasetInfo.from_folder(root, root.name), False)]
        else:
            groups = [(c, DatasetInfo.from_folder(c, c.name), c.name[0] == ".") for c in folders]
            loose = [c for c in children if not c.is_dir()]
            info = DatasetInfo(name=path_text(root.name))
            tasks.extend(_task(Entry(p, p.name[0] == "."), root, info) for p in loose)
        # real dataset folders claim their place before links inside other datasets do
        for folder, _, _ in sorted(groups, key=lambda g: g[0].is_symlink()):
            claim_folder(seen, folder)
        for folder, info, hidden in groups:
            entries = walk_files(folder, SKIP_NAMES, seen, hidden)
            tasks.extend(sorted((_task(e, folder, info) for e in entries), key=_by_path))
    return tasks


def _by_path(task: FileTask) -> Path:
    return Path(task.path)


def _task(entry: Entry, folder: Path, info: DatasetInfo) -> FileTask:
    path = entry.path
    rel = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
    excluded = None
    if entry.repeated:
        excluded = f"excluded: {entry.repeated}"
    elif entry.hidden:
        hidden_file = path.name.startswith(".")
        excluded = "excluded: hidden file" if hidden_file else "excluded: in a hidden folder"
    rel = path_text(rel)
    return FileTask(
        path=path_text(path),
        dataset=info.name,
        rel=rel,
        label=info.label,
        body_part=info.body_part,
        template=info.template or info.phantom,
        modality_hint=info.file_modality.get(rel),
        synthetic=info.synthetic,
        simulated_from=info.simulated_from,
        excluded=excluded,
        skipped=entry.unlisted,
    )


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
    limits: DecodeLimits | None = None,
) -> None:
    """Read the chunks that have no finished part file yet, and write their parts.

    A chunk whose worker died is read again one file at a time (:func:`map_chunks`): only the
    file that killed it is lost, with the reason, as a skipped file.
    """
    todo = [i for i in range(len(chunks)) if not _part(parts, i, "json").exists()]
    bar = progress_bar(sum(map(len, chunks)), progress, desc="catalog", unit="file")
    bar.update(sum(len(chunks[i]) for i in range(len(chunks)) if i not in set(todo)))
    if todo:
        vocab_dict = vocabulary.to_dict()
        scope = engine_scope(engine, workers=workers, address=ray_address, limits=limits)
        with scope as runner:
            work = [(chunks[i], vocab_dict) for i in todo]
            results = map_chunks(runner, read_chunk, work, one_file_chunks, merge_files)
            for k, (table, errors, counts) in results:
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
    out: Path,
    parts: Path,
    n_parts: int,
    summary: CatalogSummary,
    classes: Iterable[str],
    excluded_files: list[dict] | None = None,
) -> list[dict]:
    """Copy the parts into the catalog at ``out`` and fill in ``summary``; returns the errors
    (and adds the excluded inputs, by path, to ``excluded_files``).

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
                if excluded_files is not None:
                    excluded_files.extend(meta.get("excluded_files", []))
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
    limits: DecodeLimits | None = None,
) -> CatalogSummary:
    """Read the headers of every file under ``roots`` and write the catalog to ``out``.

    Writes ``out`` (Parquet), ``<out>.errors.jsonl`` (skipped inputs),
    ``<out>.excluded.jsonl`` (excluded inputs, :func:`excluded_path`) and ``<out>.json``
    (summary + vocabulary).
    Part files in ``<out>.parts/`` make the build resumable; they are removed at the end. The
    temporary files a killed build left (of these files and of its parts) are removed first.

    ``engine`` is ``"local"`` (process pool of ``workers``), ``"ray"`` (Ray Data; a local Ray
    instance, or the cluster at ``ray_address``), or an :class:`~hypermodal.common.engines.Engine`
    the caller owns. With Ray, every worker must see the files at the same paths.

    ``limits`` bound each local worker (time per file, memory ceiling; default
    :class:`~hypermodal.common.isolation.DecodeLimits`): a file that crashes its worker or goes
    past them is a skipped file with the reason, and the build goes on.

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
    # the temporary files a killed build left: of its final files, and of its parts
    own = [out.name, errors_path(out).name, excluded_path(out).name, summary_path(out).name]
    for stale in remove_stale_temps(out.parent, own) + remove_stale_temps(parts):
        log.info("removed %s, left by an interrupted build", stale)
    if (parts / "listing").exists() and (parts / "listing").read_text() != listing:
        log.warning("input listing changed since the interrupted build: starting over")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomic(parts / "listing", listing)

    chunks = [tasks[i : i + chunk_files] for i in range(0, len(tasks), chunk_files)]
    _read_parts(chunks, parts, vocabulary, progress, engine, workers, ray_address, limits)
    summary = CatalogSummary(files_seen=len(tasks))
    excluded: list[dict] = []
    all_errors = _merge_parts(out, parts, len(chunks), summary, vocabulary.classes, excluded)
    summary.seconds = round(time.perf_counter() - start, 3)
    if not summary.reconciles():  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"catalog counts do not reconcile: {summary}")

    write_errors(errors_path(out), all_errors)
    write_errors(excluded_path(out), excluded)
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


def excluded_path(catalog: Path | str) -> Path:
    """The catalog's list of excluded inputs (``<catalog>.excluded.jsonl``): one JSON line per
    input that was not cataloged although nothing was wrong with it (a modality outside the
    vocabulary, a hidden name, a second way into one folder), with its path and reason."""
    catalog = Path(catalog)
    return catalog.with_name(catalog.name + ".excluded.jsonl")


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
