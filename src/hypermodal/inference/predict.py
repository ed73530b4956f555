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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.catalog import SKIP_NAMES
from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.files import atomic_path
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import error_record, write_errors
from hypermodal.io import ImageReadError, iter_images, read_header
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

    def reconciles(self) -> bool:
        return self.files_seen == self.files_predicted + self.files_skipped


def expand_inputs(inputs: Iterable[Path | str]) -> list[Path]:
    """Files named directly, plus every file under named folders, in sorted order."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for name in sorted(filenames):
                    if name in SKIP_NAMES or name.startswith("."):
                        continue
                    files.append(Path(dirpath) / name)
        else:
            raise FileNotFoundError(f"input {p} does not exist")
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
    """Worker: header + every 2D image of one file, preprocessed to uint8."""
    path, pre_dict = args
    pre = PreprocessConfig.from_dict(pre_dict)
    try:
        h = read_header(Path(path))
        indices: list[int] = []
        images: list[np.ndarray] = []
        for idx, img in iter_images(Path(path)):
            indices.append(idx)
            images.append(to_uint8(img, pre))
    except ImageReadError as exc:
        return {"path": path, "error": exc.reason}
    except Exception as exc:  # noqa: BLE001 - preprocessing failure on a strange image
        return {"path": path, "error": f"{type(exc).__name__}: {exc}"}
    if not images:
        return {"path": path, "error": "file holds no images"}
    return {
        "path": path,
        "indices": indices,
        "images": np.stack(images),
        "series": h.series or path,
        "modality": h.modality,
        "localizer": h.localizer,
    }


def _decoded(files: list[Path], pre: PreprocessConfig, engine: Engine) -> Iterator[dict[str, Any]]:
    """Decoded files in input order (the engine bounds how far decoding runs ahead)."""
    args = [(str(f), pre.to_dict()) for f in files]
    yield from engine.map(_decode_file, args)


def series_table(images: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """One row per series/volume: mean probability over its images, and the argmax class."""
    pcols = [f"p_{c}" for c in classes]
    grouped = images.groupby("series", sort=False)
    out = grouped[pcols].mean()
    out.insert(0, "num_images", grouped.size())
    out.insert(0, "path", grouped["path"].first())
    out.insert(2, "prediction", [classes[i] for i in out[pcols].to_numpy().argmax(axis=1)])
    out.insert(3, "header_label", grouped["header_label"].first())
    return out.reset_index()


def predict(
    inputs: Iterable[Path | str],
    checkpoint: Path | str,
    out: Path | str,
    series_out: Path | str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
) -> PredictSummary:
    """Classify every 2D image under ``inputs`` with the model in ``checkpoint``.

    Writes ``out`` (CSV or Parquet: ``path, index, prediction, p_<CLASS>...`` plus ``series``,
    ``modality`` and ``header_label`` — the class the DICOM header implies, for spotting wrong
    headers), ``<out>.errors.jsonl``, and ``series_out`` when given.

    ``engine`` decodes the files: ``"local"`` (process pool of ``workers``), ``"ray"`` (Ray
    Data: a local Ray instance, or the cluster at ``ray_address``; every worker must see the
    files at the same paths), or an :class:`~hypermodal.common.engines.Engine` the caller owns. The
    model always runs in this process.
    """
    # imported here: the decoding processes import this module and never need torch
    from hypermodal.inference.model import load_model, predict_proba

    start = time.perf_counter()
    out = check_table_path(out)
    if series_out is not None:
        series_out = check_table_path(series_out)
    files = expand_inputs(inputs)
    loaded = load_model(checkpoint, device=device)
    vocab: ClassVocabulary = loaded.vocabulary
    classes = tuple(vocab.classes)
    meta_rows: list[dict[str, Any]] = []
    probs: list[np.ndarray] = []
    errors: list[dict] = []
    buf: list[np.ndarray] = []
    summary = PredictSummary(files_seen=len(files))

    def flush() -> None:
        if buf:
            probs.append(np.asarray(predict_proba(loaded, np.concatenate(buf))))
            buf.clear()

    bar = progress_bar(len(files), progress, desc="predict", unit="file")
    pending = 0
    with engine_scope(engine, workers=workers, address=ray_address) as runner:
        for item in _decoded(files, loaded.preprocess, runner):
            bar.update(1)
            if "error" in item:
                errors.append(error_record(item["path"], "predict", item["error"]))
                summary.files_skipped += 1
                continue
            summary.files_predicted += 1
            header_label = vocab.label_for_modality(item["modality"]) if item["modality"] else None
            for idx in item["indices"]:
                meta_rows.append(
                    {
                        "path": item["path"],
                        "index": idx,
                        "series": item["series"],
                        "modality": item["modality"],
                        "header_label": header_label,
                        "localizer": item["localizer"],
                    }
                )
            buf.append(item["images"])
            pending += len(item["indices"])
            if pending >= batch_size:
                flush()
                pending = 0
        flush()
    bar.close()

    p = np.concatenate(probs) if probs else np.zeros((0, len(classes)), dtype=np.float32)
    table = pd.DataFrame(
        meta_rows, columns=["path", "index", "series", "modality", "header_label", "localizer"]
    )
    table.insert(2, "prediction", [classes[i] for i in p.argmax(axis=1)] if len(p) else [])
    for j, c in enumerate(classes):
        table[f"p_{c}"] = p[:, j] if len(p) else []
    summary.images = len(table)
    write_table(table, out)
    write_errors(out.with_name(out.name + ".errors.jsonl"), errors)
    if series_out is not None:
        s = series_table(table, classes) if len(table) else pd.DataFrame()
        summary.series = len(s)
        write_table(s, series_out)
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.images_per_second = (
        round(summary.images / summary.seconds, 1) if summary.seconds else 0.0
    )
    assert summary.reconciles(), summary
    return summary


def summary_dict(summary: PredictSummary) -> dict[str, Any]:
    return asdict(summary)
