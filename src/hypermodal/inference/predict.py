"""Classify files and folders: one row per series/volume, and on request one row per 2D image.

Every file's header is read first (cheap) and the files are grouped into series
(:mod:`~hypermodal.inference.sampling`); then only the images each series' sample picked are
decoded (``slices`` spread through the volume, the middle one always among them; all of them
with ``slices=None``), on an engine (a local process pool, or a Ray cluster:
:mod:`hypermodal.common.engines`), while the main process runs the model on full batches, so the
model is loaded once and the CPU/GPU stays busy. Files come back in input order, so batches,
and therefore the probabilities, are the same whichever engine decoded them. Unreadable files
go to the errors file and the run goes on; counts reconcile (files seen = files predicted +
files sampled out + files skipped: :mod:`~hypermodal.inference.summary`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.files import atomic_path, remove_stale_temps
from hypermodal.common.isolation import DecodeLimits
from hypermodal.common.paths import local_path, path_text
from hypermodal.common.rejects import error_record, write_errors
from hypermodal.inference.batches import BatchQueue
from hypermodal.inference.decoding import Sampler, decode_rounds, read_headers
from hypermodal.inference.inputs import expand_inputs
from hypermodal.inference.results import META_COLUMNS, PredictResult, finish
from hypermodal.inference.sampling import EmptyInputError, group_series
from hypermodal.inference.summary import (
    PredictSummary,
    default_model_path,
    model_warnings,
    summary_dict,
    summary_text,
)

__all__ = [
    "DEFAULT_SLICES",
    "PredictResult",
    "PredictSummary",
    "classify",
    "default_model_path",
    "expand_inputs",
    "model_warnings",
    "predict",
    "summary_dict",
    "summary_text",
]

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: images decoded per series unless told otherwise
DEFAULT_SLICES = 8


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


def classify(
    inputs: Iterable[Path | str],
    checkpoint: Path | str | None,
    *,
    slices: int | None = DEFAULT_SLICES,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    limits: DecodeLimits | None = None,
    skip: Iterable[Path | str] = (),
) -> PredictResult:
    """Classify every series under ``inputs`` (see :func:`predict`), writing nothing; files in
    the folders ``skip`` are not inputs.

    Raises:
        FileNotFoundError: An input does not exist.
        EmptyInputError: The inputs hold no file at all.
        ValueError: ``slices`` below 1.
    """
    # imported here: the decoding processes import this module and never need torch
    from hypermodal.inference.model import load_model, predict_proba

    if slices is not None and slices < 1:
        raise ValueError(f"slices must be at least 1 (None: every image), got {slices}")
    start = time.perf_counter()
    inputs = list(inputs)
    # ---- Ray (the model on the workers) and s3:// inputs: inference/ray_predict.py
    from hypermodal.inference.ray_predict import classify_on_workers, runs_on_workers

    if runs_on_workers(engine, inputs):
        run = {"progress": progress, "engine": engine, "ray_address": ray_address}
        return classify_on_workers(
            inputs, checkpoint, slices=slices, batch_size=batch_size, workers=workers,
            device=device, limits=limits, skip=list(skip), **run,
        )  # fmt: skip
    # ---- local files on the local engine
    # as strings: a Path object costs several hundred bytes more per file, for the whole run
    files = [str(f) for f in expand_inputs(inputs, skip)]
    if not files:
        named = ", ".join(path_text(local_path(i)) for i in inputs)
        raise EmptyInputError(f"no files under {named}: nothing to classify")
    checkpoint = Path(checkpoint) if checkpoint is not None else default_model_path()
    loaded = load_model(checkpoint, device=device)
    summary = PredictSummary(files_seen=len(files), model=str(checkpoint), slices=slices)
    summary.warnings = model_warnings(loaded)
    errors: list[dict[str, Any]] = []
    meta_rows: list[dict[str, Any]] = []
    stats: list[np.ndarray] = []
    buf: list[np.ndarray] = []
    # the model runs on a thread of its own while the workers decode the next batch
    model_calls = BatchQueue(lambda batch: predict_proba(loaded, batch))

    def flush() -> None:
        if buf:
            model_calls.submit(np.concatenate(buf))
            buf.clear()

    with (
        model_calls,
        engine_scope(engine, workers=workers, address=ray_address, limits=limits) as runner,
    ):
        infos, failed = read_headers(files, runner, progress)
        errors += [error_record(path, "predict", reason) for path, reason in failed]
        groups = group_series(infos)
        order = {f: i for i, f in enumerate(files)}
        sampler = Sampler(groups, slices, order)
        pending = 0
        for _, item in decode_rounds(sampler, loaded.preprocess, runner, progress):
            if "error" in item:
                errors.append(error_record(item["path"], "predict", item["error"]))
                continue
            summary.files_predicted += 1
            same = {k: item.get(k) for k in META_COLUMNS if k != "index"}
            meta_rows += [{**same, "index": idx} for idx in item["indices"]]
            stats.append(item["stats"])
            buf.append(item["images"])
            pending += len(item["indices"])
            if pending >= batch_size:
                flush()
                pending = 0
        flush()
        p = model_calls.results()
    return finish(
        loaded, meta_rows, stats, p, groups, errors, summary,
        sampled_out=len(infos) - sampler.files_tried(),
        where=", ".join(path_text(local_path(i)) for i in inputs),
        start=start,
    )  # fmt: skip


def errors_path(out: Path | str) -> Path:
    """The errors file that goes with the table ``out``: ``<out>.errors.jsonl``."""
    out = Path(out)
    return out.with_name(out.name + ".errors.jsonl")


def predict(
    inputs: Iterable[Path | str],
    checkpoint: Path | str | None,
    out: Path | str,
    images_out: Path | str | None = None,
    series_out: Path | str | None = None,
    *,
    slices: int | None = DEFAULT_SLICES,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    limits: DecodeLimits | None = None,
    report: Path | str | None = None,
) -> PredictSummary:
    """Classify every series/volume under ``inputs`` with the model in ``checkpoint`` (None: the
    bundled default model, :func:`default_model_path`).

    Writes ``out`` (CSV or Parquet), one row per series:
    :func:`~hypermodal.inference.series.series_columns` (``series`` key, first ``path``,
    ``folder``, the fused ``prediction`` or ``UNKNOWN``, ``confidence``, ``p_<CLASS>…``,
    ``header_label`` (what the DICOM header claims), ``agreement``, ``pixel_prediction``,
    ``feature_prediction``, ``PatientID``, ``StudyDate``, ``StudyDescription``,
    ``SeriesDescription``, ``SeriesInstanceUID``, ``StudyInstanceUID``, ``Modality``,
    ``num_files``, ``num_images`` (by the headers), ``images_decoded``);
    ``<out>.errors.jsonl``; ``images_out`` when given, one row per decoded image (``path, index,
    prediction, confidence, p_<CLASS>..., pixel_prediction, feature_prediction, header_label,
    agreement, series, modality, localizer``); and ``series_out`` when given, a second copy of
    the series table (the name older scripts used).

    Args:
        inputs: Files and folders.
        checkpoint: The model (None: the bundled one).
        out: The series table.
        images_out: The per-image table (optional).
        series_out: The series table again (optional).
        slices: Images decoded per series, spread through it, the middle one always among
            them (None: every image of every file).
        batch_size: Images per model call.
        workers: Decoding processes (local engine).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        progress: Show progress bars.
        engine: ``"local"`` (process pool of ``workers``; the model runs in this process),
            ``"ray"`` (a local Ray instance, or the cluster at ``ray_address``: an actor pool
            with one model per actor reads, decodes and classifies, and only rows come back:
            :mod:`~hypermodal.inference.ray_predict`; local paths must be seen by every
            worker at the same paths), or an :class:`~hypermodal.common.engines.Engine` the
            caller owns. Inputs may be ``s3://bucket/prefix`` on either engine (objects read
            where they are decoded: :mod:`~hypermodal.inference.remote_inputs`).
        ray_address: The Ray cluster to join.
        limits: Bounds on each local decoding worker (time per file, memory ceiling; default
            :class:`~hypermodal.common.isolation.DecodeLimits`): a file that crashes its worker
            or goes past them is skipped with the reason.
        report: A folder for the archive report (``index.html`` and the tables beside it:
            :func:`~hypermodal.inference.report.write_archive_report`), or None.

    Returns:
        The counts (:class:`~hypermodal.inference.summary.PredictSummary`).

    Raises:
        ValueError: An output that is not ``.csv`` or ``.parquet``; ``slices`` below 1.
        FileNotFoundError: An input does not exist.
        EmptyInputError: The inputs hold no file at all (nothing is written).
    """
    outputs = [check_table_path(p) for p in (out, images_out, series_out) if p is not None]
    if report is not None:
        from hypermodal.common.files import check_writable

        check_writable(report, folder=True, what="the report folder")
    result = classify(
        inputs,
        checkpoint,
        slices=slices,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        engine=engine,
        ray_address=ray_address,
        limits=limits,
    )
    out = Path(out)
    errors_out = errors_path(out)
    result.summary.errors_file = str(errors_out)
    own = [p.name for p in outputs] + [errors_out.name]
    for folder in {p.parent for p in outputs}:
        for stale in remove_stale_temps(folder, own):  # left by a killed earlier run
            log.info("removed %s, left by a killed run", stale)
    write_table(result.series, out)
    write_errors(errors_out, result.errors)
    if images_out is not None:
        write_table(result.images, images_out)
    if series_out is not None:
        write_table(result.series, series_out)
    if report is not None:
        from hypermodal.inference.report import write_archive_report

        threshold = result.images.attrs.get("unknown_below")
        page = write_archive_report(
            result.images,
            result.series,
            report,
            errors=result.errors,
            notes=result.summary.warnings,
            unknown_below=None if threshold is None else float(threshold),
            workers=workers,
            limits=limits,
        )
        result.summary.report = str(page)
    return result.summary
