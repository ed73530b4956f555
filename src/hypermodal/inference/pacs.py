"""Classify what a PACS holds, in place: a few instances per series through DICOMweb.

:func:`classify_dicomweb` lists the series a
:class:`~hypermodal.sources.fetch.query.SeriesQuery` selects (QIDO-RS), retrieves
``per_series`` instances of each, spread through the series by InstanceNumber (WADO-RS, into a
private temporary folder), classifies them with :func:`hypermodal.inference.predict`, and
writes one row per series to ``out``; the temporary files are deleted as each batch is done, so
nothing copied from the server is left behind. With ``write_labels`` each answer is also put
on the server (Orthanc: a ``hypermodal-<CLASS>`` label, or metadata on servers without labels;
:mod:`hypermodal.inference.orthanc_labels`).

Columns of ``out`` (CSV or Parquet by extension): ``StudyInstanceUID, SeriesInstanceUID,
PatientID, StudyDate, StudyDescription, SeriesDescription, SeriesNumber, Modality`` (what the
server's QIDO-RS says), ``prediction, confidence, header_label, agreement, p_<CLASS>…,
pixel_prediction, feature_prediction`` (the classifier's, per series), ``instances`` (in the
series, per QIDO-RS), ``retrieved`` (instances retrieved), ``images_decoded``, ``written``
(what was put on the server) and ``error`` (why a series has no answer).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.files import atomic_path
from hypermodal.common.progress import progress_bar
from hypermodal.inference.pacs_batch import BatchJob, classes_of, thread_clients
from hypermodal.sources.fetch.base import RetryPolicy
from hypermodal.sources.fetch.query import SeriesQuery

__all__ = ["PacsSummary", "SERIES_COLUMNS", "classify_dicomweb"]

log = logging.getLogger(__name__)

#: the columns of ``out`` before the classifier's ``p_<CLASS>`` columns
SERIES_COLUMNS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "prediction",
    "confidence",
    "header_label",
    "agreement",
)
TAIL_COLUMNS = (
    "pixel_prediction",
    "feature_prediction",
    "instances",
    "retrieved",
    "images_decoded",
    "written",
    "error",
)
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass
class PacsSummary:
    """What one :func:`classify_dicomweb` call did (``to_dict``: its JSON)."""

    url: str = ""
    query: dict[str, Any] = field(default_factory=dict)
    series: int = 0  # series the query selected
    series_classified: int = 0
    series_failed: int = 0
    instances_in_series: int = 0  # instances QIDO-RS lists in those series
    instances_retrieved: int = 0
    bytes_retrieved: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    unknowns: int = 0
    written: int = 0  # answers put on the server
    write_mode: str | None = None  # labels | metadata
    write_errors: int = 0
    seconds: float = 0.0
    series_per_second: float = 0.0
    out: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_out(out: Path) -> Path:
    if out.suffix.lower() not in _TABLE_SUFFIXES:
        raise ValueError(f"{out}: output must end in .csv or .parquet")
    return out


def _write_table(df: pd.DataFrame, out: Path) -> None:
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def classify_dicomweb(
    url: str,
    query: SeriesQuery | None,
    checkpoint: Path | str | None,
    out: Path | str,
    *,
    per_series: int = 3,
    write_labels: bool = False,
    orthanc_url: str | None = None,
    metadata_key: str = "1024",
    scratch: Path | str | None = None,
    batch_series: int = 200,
    workers: int = 4,
    decode_workers: int | None = None,
    device: str = "auto",
    slices: int | None = 8,
    timeout_s: float = 60.0,
    retry: RetryPolicy | None = None,
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
) -> PacsSummary:
    """Classify the series of the DICOMweb server at ``url`` that ``query`` selects, in place.

    Args:
        url: the DICOMweb root (Orthanc: ``http://host:8042/dicom-web``).
        query: which series (None: all of them).
        checkpoint: the model (None: the bundled default model).
        out: the table to write, one row per series (see the module doc).
        per_series: instances retrieved per series, spread through it by InstanceNumber.
        write_labels: put each answer on the server (Orthanc's REST API).
        orthanc_url: Orthanc's REST root (default: ``url`` without ``/dicom-web``).
        metadata_key: the metadata key for servers without labels (1024+, or a
            ``UserMetadata`` name).
        scratch: where the private temporary folder is made (default: the system's).
        batch_series: series retrieved, classified and deleted at a time (the temporary
            folder holds at most ``batch_series × per_series`` instances).
        workers: series retrieved at once.
        decode_workers: decoding processes of the classifier (None: its default).
        device: where the model runs.
        slices: images decoded per series by the classifier (multi-frame instances).
        timeout_s: read time-out of each request.
        retry: retries of a failed request (a server that cannot be reached is not retried).
        progress: show a progress bar.
        engine: ``"local"`` (batches one after the other here) or ``"ray"``: each batch is
            retrieved and classified by a Ray task on a worker (the model runs there, the
            instances go to that worker's temporary folder), and only the rows come back
            (:mod:`hypermodal.inference.pacs_ray`); the answers are written back from here.
        ray_address: the Ray cluster to join (None: a local Ray instance).
        ray_workers: CPUs of the local Ray instance (None: all of this machine's).

    Raises:
        ValueError: a bad option (``out`` not .csv/.parquet, ``per_series`` below 1, no
            Orthanc REST root to derive).
        SourceUnreachableError: the server does not accept connections (nothing is written).
        PermanentFetchError: ``url`` is not a DICOMweb root, or (with ``write_labels``) not an
            Orthanc.
    """
    from hypermodal.inference.orthanc_labels import OrthancWriter, rest_root
    from hypermodal.sources.fetch.dicomweb import query_server
    from hypermodal.sources.fetch.wado import WadoClient

    start = time.perf_counter()
    out = _check_out(Path(out))
    if per_series < 1 or batch_series < 1 or workers < 1:
        raise ValueError("per_series, batch_series and workers must be at least 1")
    query = query or SeriesQuery()
    retry = retry or RetryPolicy(attempts=3, backoff_s=0.5)
    writer = None
    if write_labels:
        writer = OrthancWriter(rest_root(url, orthanc_url), metadata_key, timeout_s)
        writer.connect()  # fail before any work when the server cannot take the answers
    clients = thread_clients(url, timeout_s)

    series = query_server(url, query, client=clients(), timeout_s=timeout_s, retry=retry)
    summary = PacsSummary(url=url, query=query.describe(), series=len(series), out=str(out))
    summary.write_mode = writer.mode if writer else None
    options = {"progress": False, "device": device, "slices": slices, "workers": decode_workers}
    job = BatchJob(url, checkpoint, options, per_series, retry, workers, timeout_s)
    rows: list[dict[str, Any]] = []
    bar = progress_bar(len(series), progress, desc="series", unit="series")
    try:
        if str(engine).strip().lower() == "ray":
            from hypermodal.inference.pacs_ray import classify_on_ray

            done = classify_on_ray(job, series, batch_series, ray_address, ray_workers)
        else:
            if scratch is not None:
                Path(scratch).mkdir(parents=True, exist_ok=True)
            wado = WadoClient(url, timeout_s)
            done = (
                job.run(series[b : b + batch_series], b, scratch, clients, wado)
                for b in range(0, len(series), batch_series)
            )
        for result in done:
            rows += result["rows"]
            summary.instances_in_series += result["instances_in_series"]
            summary.instances_retrieved += result["instances_retrieved"]
            summary.bytes_retrieved += result["bytes"]
            bar.update(len(result["rows"]))
    finally:
        bar.close()
    classes = classes_of(rows)
    if writer is not None:
        _write_answers(writer, rows, summary, checkpoint)
    _finish(rows, classes, summary)
    _write_table(_frame(rows, classes), out)
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.series_per_second = (
        round(summary.series / summary.seconds, 2) if summary.seconds else 0.0
    )
    return summary


def _write_answers(
    writer: Any, rows: list[dict[str, Any]], summary: PacsSummary, checkpoint: Any
) -> None:
    from hypermodal.common.errors import FetchError

    model = Path(checkpoint).name if checkpoint is not None else "default"
    for row in rows:
        if row["prediction"] is None:
            continue
        record = {
            "confidence": round(float(row["confidence"]), 4) if row["confidence"] else None,
            "agreement": row["agreement"],
            "header": row["Modality"],
            "model": model,
        }
        try:
            row["written"] = writer.write(row["SeriesInstanceUID"], row["prediction"], record)
            summary.written += 1
        except FetchError as exc:
            summary.write_errors += 1
            row["error"] = f"not written to the server: {exc}"
            log.warning("series %s: %s", row["SeriesInstanceUID"], exc)
    summary.write_mode = writer.mode


def _finish(rows: list[dict[str, Any]], classes: list[str], summary: PacsSummary) -> None:
    for row in rows:
        pred = row["prediction"]
        if pred is None:
            summary.series_failed += 1
            continue
        summary.series_classified += 1
        summary.per_class[pred] = summary.per_class.get(pred, 0) + 1
        summary.conflicts += row["agreement"] == "conflict"
        summary.unknowns += pred == "UNKNOWN"


def _frame(rows: list[dict[str, Any]], classes: list[str]) -> pd.DataFrame:
    columns = [*SERIES_COLUMNS, *(f"p_{c}" for c in classes), *TAIL_COLUMNS]
    return pd.DataFrame(rows, columns=columns)
