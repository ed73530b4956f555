"""The catalog: a Parquet manifest with one row per 2D image, built from headers only.

Columns (see :data:`CATALOG_COLUMNS`): ``dataset, patient, study, series, path, index, label,
modality, body_part, rows, columns, localizer, template, format, split``. ``label`` is the class
from the vocabulary (``None`` rows are not written: images of excluded modalities are counted in
the summary instead). ``split`` stays empty until :mod:`hypermodal.split` assigns it.

Datasets: a folder given to :func:`build_catalog` holds one sub-folder per dataset (as the
paper's download did). A sub-folder may carry a ``dataset.json`` (written by
``hypermodal samples``) with the dataset's ``name``, the ``label`` for files that have no DICOM
Modality (NIfTI, PNG), ``body_part``, and ``template``/``phantom`` flags.

The build walks files in sorted order, reads headers in parallel in chunks (on a local process
pool or a Ray cluster, see :mod:`hypermodal.engines`), and the driver writes each chunk's rows
to a part file, so an interrupted build resumes where it stopped. Workers only read headers and
return rows, so the catalog is the same whichever engine ran them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hypermodal.atomic import atomic_path, write_text_atomic
from hypermodal.engines import Engine, engine_scope
from hypermodal.errors import error_record, write_errors
from hypermodal.io import ImageReadError, read_header
from hypermodal.labels import ClassVocabulary
from hypermodal.progress import progress_bar

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
SKIP_NAMES = {DATASET_FILE, "samples.json", ".DS_Store", "Thumbs.db"}

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("patient", pa.string()),
        ("study", pa.string()),
        ("series", pa.string()),
        ("path", pa.string()),
        ("index", pa.int32()),
        ("label", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("rows", pa.int32()),
        ("columns", pa.int32()),
        ("localizer", pa.bool_()),
        ("template", pa.bool_()),
        ("format", pa.string()),
        ("split", pa.string()),
    ]
)
CATALOG_COLUMNS = tuple(SCHEMA.names)


@dataclass
class DatasetInfo:
    """What a dataset folder says about itself (``dataset.json``), or defaults."""

    name: str
    label: str | None = None
    body_part: str | None = None
    template: bool = False
    phantom: bool = False
    file_modality: dict[str, str] = field(default_factory=dict)  # relative path -> modality

    @classmethod
    def from_folder(cls, folder: Path, default_name: str) -> DatasetInfo:
        meta_path = folder / DATASET_FILE
        if not meta_path.exists():
            return cls(name=default_name)
        meta = json.loads(meta_path.read_text())
        per_file = {
            f["path"]: f["modality"]
            for f in meta.get("files", [])
            if isinstance(f, dict) and f.get("path") and f.get("modality")
        }
        return cls(
            name=str(meta.get("name") or default_name),
            label=meta.get("label"),
            body_part=meta.get("body_part"),
            template=bool(meta.get("template", False)),
            phantom=bool(meta.get("phantom", False)),
            file_modality=per_file,
        )


@dataclass
class FileTask:
    path: str
    dataset: str
    rel: str  # path relative to the dataset folder
    label: str | None
    body_part: str | None
    template: bool
    modality_hint: str | None


@dataclass
class CatalogSummary:
    files_seen: int = 0
    files_cataloged: int = 0
    files_excluded: int = 0  # readable images whose modality is not a class of the vocabulary
    files_skipped: int = 0  # unreadable, corrupt or not an image: see the errors file
    images: int = 0
    images_per_class: dict[str, int] = field(default_factory=dict)
    excluded_modalities: dict[str, int] = field(default_factory=dict)
    datasets: int = 0
    seconds: float = 0.0

    def reconciles(self) -> bool:
        return self.files_seen == self.files_cataloged + self.files_excluded + self.files_skipped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    )


def _read_chunk(args: tuple[list[FileTask], dict[str, Any]]) -> tuple[list[dict], list[dict], dict]:
    """Worker: headers of a chunk of files -> (rows, errors, per-file outcome counts)."""
    tasks, vocab_dict = args
    vocab = ClassVocabulary.from_dict(vocab_dict)
    rows: list[dict] = []
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
        if modality:
            label = vocab.label_for_modality(modality)
        else:
            label = vocab.normalise_label(t.label)
        if label is None:
            outcome["excluded"] += 1
            excluded[str(modality or t.label or "unknown").upper()] += 1
            continue
        outcome["cataloged"] += 1
        series = h.series or t.path
        for i in range(h.num_images):
            rows.append(
                {
                    "dataset": t.dataset,
                    "patient": h.patient or t.dataset,
                    "study": h.study or series,
                    "series": series,
                    "path": t.path,
                    "index": i,
                    "label": label,
                    "modality": h.modality,
                    "body_part": (h.body_part or t.body_part or None),
                    "rows": h.rows,
                    "columns": h.columns,
                    "localizer": bool(h.localizer),
                    "template": t.template,
                    "format": h.format,
                    "split": None,
                }
            )
    return rows, errors, {"outcome": dict(outcome), "excluded": dict(excluded)}


def _chunks(seq: list[FileTask], size: int) -> list[list[FileTask]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


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
    instance, or the cluster at ``ray_address``), or an :class:`~hypermodal.engines.Engine` the
    caller owns. With Ray, every worker must see the files at the same paths.
    """
    import time

    start = time.perf_counter()
    roots = [Path(r) for r in roots]
    out = Path(out)
    vocabulary = vocabulary or ClassVocabulary()
    tasks = discover(roots)
    listing = hashlib.sha256(
        json.dumps([[t.path, t.dataset] for t in tasks] + [vocabulary.to_dict()]).encode()
    ).hexdigest()[:16]
    parts = out.with_name(out.name + ".parts")
    if (
        parts.exists()
        and (parts / "listing").exists()
        and (parts / "listing").read_text() != listing
    ):
        log.warning("input listing changed since the interrupted build: starting over")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomic(parts / "listing", listing)

    chunks = _chunks(tasks, chunk_files)
    todo = [i for i in range(len(chunks)) if not (parts / f"part-{i:06d}.json").exists()]
    bar = progress_bar(len(tasks), progress, desc="catalog", unit="file")
    bar.update(sum(len(chunks[i]) for i in range(len(chunks)) if i not in set(todo)))
    vocab_dict = vocabulary.to_dict()

    def save_part(i: int, result: tuple[list[dict], list[dict], dict]) -> None:
        rows, errors, counts = result
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        with atomic_path(parts / f"part-{i:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        write_text_atomic(
            parts / f"part-{i:06d}.json",  # written last: marks the part complete
            json.dumps({"errors": errors, **counts}),
        )
        bar.update(len(chunks[i]))

    if todo:
        with engine_scope(engine, workers=workers, address=ray_address) as runner:
            work = [(chunks[i], vocab_dict) for i in todo]
            # Looked up here, not bound at import, so tests can stand in for the worker.
            for k, result in runner.map_unordered(_read_chunk, work):
                save_part(todo[k], result)
    bar.close()

    summary = CatalogSummary(files_seen=len(tasks))
    tables = []
    all_errors: list[dict] = []
    outcome: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    for i in range(len(chunks)):
        meta = json.loads((parts / f"part-{i:06d}.json").read_text())
        all_errors.extend(meta["errors"])
        outcome.update(meta["outcome"])
        excluded.update(meta["excluded"])
        tables.append(pq.read_table(parts / f"part-{i:06d}.parquet", schema=SCHEMA))
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    summary.files_cataloged = outcome["cataloged"]
    summary.files_excluded = outcome["excluded"]
    summary.files_skipped = outcome["skipped"]
    summary.excluded_modalities = dict(sorted(excluded.items()))
    summary.images = table.num_rows
    labels = table.column("label").to_pylist()
    summary.images_per_class = {c: labels.count(c) for c in vocabulary.classes}
    summary.datasets = len(set(table.column("dataset").to_pylist()))
    summary.seconds = round(time.perf_counter() - start, 3)
    if not summary.reconciles():  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"catalog counts do not reconcile: {summary}")

    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    write_errors(errors_path(out), all_errors)
    write_text_atomic(
        summary_path(out),
        json.dumps(
            {
                "summary": summary.to_dict(),
                "vocabulary": vocabulary.to_dict(),
                "roots": [str(r.resolve()) for r in roots],
            },
            indent=2,
        ),
    )
    shutil.rmtree(parts, ignore_errors=True)
    return summary


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
    missing = [c for c in CATALOG_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a hypermodal catalog (missing columns {missing})")
    return table.to_pandas()


def catalog_vocabulary(path: Path | str) -> ClassVocabulary:
    """The vocabulary a catalog was built with (default vocabulary if the summary is missing)."""
    meta = summary_path(path)
    if meta.exists():
        return ClassVocabulary.from_dict(json.loads(meta.read_text())["vocabulary"])
    return ClassVocabulary()
