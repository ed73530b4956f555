"""Classify files and folders: one row per 2D image, and optionally one row per series.

Decoding runs on an engine (a local process pool, or a Ray cluster:
:mod:`hypermodal.common.engines`) while the main process runs the model on full batches, so the
model is loaded once and the CPU/GPU stays busy. Decoded files come back in input order, so
batches, and therefore the probabilities, are the same whichever engine decoded them. Unreadable
files go to the errors file and the run goes on; counts reconcile (files seen = files predicted
+ files skipped).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.catalog import SKIP_NAMES
from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.files import atomic_path, remove_stale_temps
from hypermodal.common.isolation import Crashed, DecodeLimits, failure_reason, heartbeat
from hypermodal.common.paths import local_path, path_text
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import error_record, write_errors
from hypermodal.evidence.features import (
    STAT_NAMES,
    feature_matrix,
    header_geometry,
    image_stats,
    series_keys,
)
from hypermodal.evidence.fusion import UNKNOWN
from hypermodal.evidence.table import table_claims
from hypermodal.io import ImageReadError, iter_images, read_header
from hypermodal.io.inputs import FolderKey, walk_files
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig, to_uint8

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass
class PredictSummary:
    files_seen: int = 0
    files_predicted: int = 0
    files_skipped: int = 0
    images: int = 0
    series: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    model: str = ""
    per_class: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    warnings: list[str] = field(default_factory=list)

    def reconciles(self) -> bool:
        return self.files_seen == self.files_predicted + self.files_skipped


def expand_inputs(inputs: Iterable[Path | str]) -> list[Path]:
    """Files named directly, plus every file under named folders, in a stable order.

    Folders are listed by :func:`~hypermodal.io.inputs.walk_files`: a folder's files by name,
    then its sub-folders; links to folders are followed once (a second way into a folder, such
    as a link loop, is not listed again); nothing is opened. Every file found is an input, a
    hidden name included, and is either predicted or skipped with its reason: FIFOs, sockets,
    devices and broken links are refused by the reader without being opened. Only a corpus
    folder's metadata files (``dataset.json`` …) are left out, and a folder that cannot be
    listed is logged. Paths come back as :func:`~hypermodal.common.paths.path_text`, the text
    every output can hold (a name that is not UTF-8 included); the readers open them as such.

    Raises:
        FileNotFoundError: An input does not exist.
    """
    files: list[Path] = []
    seen: dict[FolderKey, Path] = {}
    for item in inputs:
        p = local_path(item)  # a path as the file system has it, or as an output wrote it
        if not os.path.lexists(p):
            raise FileNotFoundError(f"input {path_text(p)} does not exist")
        if not p.is_dir():
            files.append(Path(path_text(p)))
            continue
        for entry in walk_files(p, SKIP_NAMES, seen):
            if entry.unlisted:
                log.warning("%s: %s: its files are not predicted", entry.path, entry.unlisted)
            elif not entry.repeated:
                files.append(Path(path_text(entry.path)))
    return files


def check_table_path(path: Path | str) -> Path:
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: output must end in .csv or .parquet")
    return path


def write_table(df: pd.DataFrame, path: Path | str) -> None:
    """Write CSV or Parquet (chosen by the extension), atomically."""
    path = check_table_path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def _decode_file(args: tuple[str, dict]) -> dict[str, Any]:
    """Worker: header + every 2D image of one file, preprocessed to uint8, with the intensity
    statistics of each decoded image and the file's header geometry (the feature model's
    evidence, computed from the same decode)."""
    path, pre_dict = args
    pre = PreprocessConfig.from_dict(pre_dict)
    try:
        h = read_header(Path(path))
        indices: list[int] = []
        images: list[np.ndarray] = []
        stats: list[np.ndarray] = []
        for idx, img in iter_images(Path(path)):
            heartbeat()  # a file of many images is not cut short while it makes progress
            indices.append(idx)
            images.append(to_uint8(img, pre))
            stats.append(image_stats(img))
    except ImageReadError as exc:
        return {"path": path, "error": exc.reason}
    except BaseException as exc:  # noqa: BLE001 - a strange image or a decoder's panic
        return {"path": path, "error": failure_reason(exc)}
    if not images:
        return {"path": path, "error": "file holds no images"}
    return {
        "path": path,
        "indices": indices,
        "images": np.stack(images),
        "stats": np.stack(stats),
        "series": h.series or path,
        "modality": h.modality,
        "sop_class": h.extra.get("sop_class"),
        "localizer": h.localizer,
        "rows": h.rows,
        "columns": h.columns,
        **header_geometry(h.format, h.num_images, h.extra),
    }


def _decoded(files: list[Path], pre: PreprocessConfig, engine: Engine) -> Iterator[dict[str, Any]]:
    """Decoded files in input order (the engine bounds how far decoding runs ahead); a file
    whose worker died or went past its limits is an error with the reason."""
    args = [(str(f), pre.to_dict()) for f in files]
    for (path, _), item in zip(args, engine.map(_decode_file, args), strict=True):
        yield {"path": path, "error": item.reason} if isinstance(item, Crashed) else item


def series_table(images: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """One row per series/volume: the mean fused probability over its images, its class
    (``UNKNOWN`` when the series' confidence is below the threshold its images used), the
    header claim, and ``agreement`` (``conflict`` when any image of the series conflicts)."""
    pcols = [f"p_{c}" for c in classes]
    grouped = images.groupby("series", sort=False)
    out = grouped[pcols].mean()
    probs = out[pcols].to_numpy()
    conf = probs.max(axis=1) if len(out) else np.zeros(0)
    names = np.asarray(classes, dtype=object)[probs.argmax(axis=1)] if len(out) else []
    threshold = float(images.attrs.get("unknown_below", 0.0))
    out.insert(0, "num_images", grouped.size())
    out.insert(0, "path", grouped["path"].first())
    out.insert(2, "prediction", np.where(conf >= threshold, names, UNKNOWN))
    out.insert(3, "confidence", conf.astype(np.float32))
    out.insert(4, "header_label", grouped["header_label"].first())
    out.insert(5, "agreement", grouped["agreement"].agg(_series_agreement))
    for name in ("pixel_prediction", "feature_prediction"):
        out.insert(6, name, grouped[name].agg(_majority))
    return out.reset_index()


def _majority(values: pd.Series) -> Any:
    counts = values.dropna().value_counts()
    return counts.index[0] if len(counts) else None


def _series_agreement(values: pd.Series) -> str:
    kinds = set(values)
    for kind in ("conflict", "header only", "agree"):
        if kind in kinds:
            return kind
    return "no header"


def default_model_path() -> Path:
    """The model ``predict`` uses without ``--model``: the one the package ships."""
    from hypermodal.default_model import MODEL_PATH

    return MODEL_PATH


def model_warnings(loaded: Any) -> list[str]:
    """What a user should know about the model before trusting its labels."""
    notes: list[str] = []
    if loaded.evidence is None:
        notes.append(
            f"{loaded.meta.get('path')}: no feature model or fusion in this checkpoint: "
            "the CNN alone decides (the header is only compared with it)"
        )
        return notes
    info = loaded.evidence.info
    trained = info.get("trained_classes")
    if trained:
        unseen = [c for c in loaded.classes if c not in trained]
        if unseen:
            notes.append(f"the model never saw {', '.join(unseen)} in training but may predict it")
    real = info.get("real_classes")
    if real:
        simulated_only = [c for c in (trained or loaded.classes) if c not in real]
        if simulated_only:
            notes.append(
                f"{', '.join(simulated_only)}: trained on simulated images only (no real "
                "images of it were available); treat its labels with care"
            )
    return notes


def _decide(loaded: Any, meta_rows: list[dict], stats: list[np.ndarray], p: np.ndarray):
    from hypermodal.inference.model import evidence_model

    vocab: ClassVocabulary = loaded.vocabulary
    table = pd.DataFrame(meta_rows, columns=list(META_COLUMNS))
    model = evidence_model(loaded)
    n = len(table)
    x = feature_matrix(np.concatenate(stats) if stats else np.zeros((0, len(STAT_NAMES))), table)
    claims = table_claims(table, vocab)
    # an image without finite values or with one value everywhere carries no image evidence:
    # it is decided on its header alone, or comes out UNKNOWN
    std = x[:, STAT_NAMES.index("std")] if n else np.zeros(0)
    has_image = np.isfinite(std) & (std > 0)
    decided = model.decide(
        p if n else None, x if n else None, claims, has_image=has_image, series=series_keys(table)
    )
    decided.attrs["unknown_below"] = model.fusion.unknown_below
    pcols = [f"p_{c}" for c in loaded.classes]
    out = pd.concat([table[["path", "index"]], decided], axis=1)
    first = ["path", "index", "prediction", "confidence", *pcols]
    rest = ["pixel_prediction", "feature_prediction", "header_label", "agreement"]
    out = pd.concat([out[first + rest], table[["series", "modality", "localizer"]]], axis=1)
    out.attrs["unknown_below"] = model.fusion.unknown_below
    return out


#: Per-image values gathered from each decoded file (the feature model needs the geometry).
META_COLUMNS = (
    "path",
    "index",
    "series",
    "modality",
    "sop_class",
    "localizer",
    "rows",
    "columns",
    "frames",
    "pixel_spacing",
    "slice_thickness",
    "bits_stored",
    "samples",
)


def predict(
    inputs: Iterable[Path | str],
    checkpoint: Path | str | None,
    out: Path | str,
    series_out: Path | str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    limits: DecodeLimits | None = None,
) -> PredictSummary:
    """Classify every 2D image under ``inputs`` with the model in ``checkpoint`` (None: the
    bundled default model, :func:`default_model_path`).

    Writes ``out`` (CSV or Parquet: ``path, index, prediction, confidence, p_<CLASS>...,
    pixel_prediction, feature_prediction, header_label, agreement, series, modality,
    localizer``; ``prediction`` is the fused class or ``UNKNOWN``, ``header_label`` what the
    DICOM header claims, ``agreement`` whether it matches the image), ``<out>.errors.jsonl``,
    and ``series_out`` when given (:func:`series_table`).

    ``engine`` decodes the files: ``"local"`` (process pool of ``workers``), ``"ray"`` (Ray
    Data: a local Ray instance, or the cluster at ``ray_address``; every worker must see the
    files at the same paths), or an :class:`~hypermodal.common.engines.Engine` the caller owns. The
    model always runs in this process. ``limits`` bound each local decoding worker (time per
    file, memory ceiling; default :class:`~hypermodal.common.isolation.DecodeLimits`): a file
    that crashes its worker or goes past them is skipped with the reason.
    """
    # imported here: the decoding processes import this module and never need torch
    from hypermodal.inference.model import load_model, predict_proba

    start = time.perf_counter()
    out = check_table_path(out)
    if series_out is not None:
        series_out = check_table_path(series_out)
    files = expand_inputs(inputs)
    checkpoint = Path(checkpoint) if checkpoint is not None else default_model_path()
    loaded = load_model(checkpoint, device=device)
    classes = tuple(loaded.vocabulary.classes)
    meta_rows: list[dict[str, Any]] = []
    stats: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    errors: list[dict] = []
    buf: list[np.ndarray] = []
    summary = PredictSummary(files_seen=len(files), model=str(checkpoint))
    summary.warnings = model_warnings(loaded)

    def flush() -> None:
        if buf:
            probs.append(np.asarray(predict_proba(loaded, np.concatenate(buf))))
            buf.clear()

    bar = progress_bar(len(files), progress, desc="predict", unit="file")
    pending = 0
    with engine_scope(engine, workers=workers, address=ray_address, limits=limits) as runner:
        for item in _decoded(files, loaded.preprocess, runner):
            bar.update(1)
            if "error" in item:
                errors.append(error_record(item["path"], "predict", item["error"]))
                summary.files_skipped += 1
                continue
            summary.files_predicted += 1
            same = {k: item.get(k) for k in META_COLUMNS if k not in ("index",)}
            for idx in item["indices"]:
                meta_rows.append({**same, "index": idx})
            stats.append(item["stats"])
            buf.append(item["images"])
            pending += len(item["indices"])
            if pending >= batch_size:
                flush()
                pending = 0
        flush()
    bar.close()

    p = np.concatenate(probs) if probs else np.zeros((0, len(classes)), dtype=np.float32)
    table = _decide(loaded, meta_rows, stats, p)
    summary.images = len(table)
    summary.per_class = {c: int(n) for c, n in table["prediction"].value_counts().items()}
    summary.conflicts = int((table["agreement"] == "conflict").sum()) if len(table) else 0
    errors_out = out.with_name(out.name + ".errors.jsonl")
    own = [out.name, errors_out.name] + ([Path(series_out).name] if series_out else [])
    for stale in remove_stale_temps(out.parent, own):  # left by a killed earlier run
        log.info("removed %s, left by a killed run", stale)
    write_table(table, out)
    write_errors(errors_out, errors)
    s = series_table(table, classes) if len(table) else pd.DataFrame()
    summary.series = len(s)
    if series_out is not None:
        write_table(s, series_out)
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.images_per_second = (
        round(summary.images / summary.seconds, 1) if summary.seconds else 0.0
    )
    assert summary.reconciles(), summary
    return summary


def summary_dict(summary: PredictSummary) -> dict[str, Any]:
    return asdict(summary)
