"""One batch of a PACS classified in place: retrieve a few instances of each series into a
private temporary folder, classify them, delete them, and give one row per series.

:class:`BatchJob` is what :func:`hypermodal.inference.pacs.classify_dicomweb` runs batch after
batch here, and what :mod:`hypermodal.inference.pacs_ray` runs as Ray tasks on the workers: it
is picklable and returns plain rows.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.inference.pacs_retrieve import Retrieved, retrieve_sample
from hypermodal.sources.fetch.base import RetryPolicy
from hypermodal.sources.fetch.query import SeriesInfo

__all__ = ["BatchJob", "classes_of", "series_row", "thread_clients"]


def thread_clients(url: str, timeout_s: float) -> Callable[[], Any]:
    """A factory of QIDO-RS clients for ``url``, one per thread (a client's session is not
    thread-safe), each made on its thread's first call."""
    from hypermodal.sources.fetch.dicomweb import make_client

    local = threading.local()

    def clients() -> Any:
        if getattr(local, "client", None) is None:
            local.client = make_client(url, timeout_s)
        return local.client

    return clients


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)


def _predict_call(
    folder: Path, work: Path, checkpoint: Path | str | None, options: dict[str, Any]
) -> pd.DataFrame:
    """Classify the files under ``folder``; one row per series of the result, keyed by
    ``SeriesInstanceUID``. Works with either layout of :func:`~hypermodal.inference.predict`'s
    tables: series rows in ``out`` (with ``series_out`` as a copy), or image rows in ``out``
    and series rows in ``series_out``."""
    from hypermodal.inference import predict

    params = inspect.signature(predict).parameters
    kwargs = {k: v for k, v in options.items() if k in params}
    series_out = work / "series.parquet"
    if "series_out" in params:
        kwargs["series_out"] = series_out
    predict([folder], checkpoint, work / "predictions.parquet", **kwargs)
    table = _read_table(series_out if series_out.exists() else work / "predictions.parquet")
    if "index" in table.columns and "num_images" not in table.columns:
        raise RuntimeError("predict wrote image rows where series rows were expected")
    return table


def _series_key(row: pd.Series, by_folder: dict[str, str]) -> str | None:
    """The SeriesInstanceUID a result row belongs to: the UID predict read from the headers,
    else the temporary folder its file lies in."""
    for col in ("SeriesInstanceUID", "series"):
        value = row.get(col)
        if isinstance(value, str) and value in by_folder.values():
            return value
    path = row.get("path")
    if isinstance(path, str):
        return by_folder.get(Path(path).parent.name)
    return None


def _result_rows(table: pd.DataFrame, by_folder: dict[str, str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for _, row in table.iterrows():
        key = _series_key(row, by_folder)
        if key is not None and key not in results:
            results[key] = row.to_dict()
    return results


def series_row(
    done: Retrieved, result: dict[str, Any] | None, classes: list[str]
) -> dict[str, Any]:
    """The row of ``out`` for one series: what QIDO-RS says of it, the classifier's answer
    (``result``: its series row; None when it has none) and what was retrieved."""
    info: SeriesInfo = done.info
    row: dict[str, Any] = {
        "StudyInstanceUID": info.study,
        "SeriesInstanceUID": info.series,
        "PatientID": info.patient,
        "StudyDate": info.study_date,
        "StudyDescription": info.study_description,
        "SeriesDescription": info.series_description,
        "SeriesNumber": info.series_number,
        "Modality": info.modality,
        "prediction": None,
        "confidence": None,
        "header_label": None,
        "agreement": None,
    }
    result = result or {}
    for col in ("prediction", "confidence", "header_label", "agreement"):
        value = result.get(col)
        row[col] = None if value is None or (isinstance(value, float) and pd.isna(value)) else value
    for c in classes:
        row[f"p_{c}"] = result.get(f"p_{c}")
    decoded = result.get("images_decoded", result.get("num_images"))
    error = done.error
    if error is None and not result:
        error = "no image of the retrieved instances could be read"
    row.update(
        {
            "pixel_prediction": result.get("pixel_prediction"),
            "feature_prediction": result.get("feature_prediction"),
            "instances": done.instances if done.instances else info.instances,
            "retrieved": len(done.files),
            "images_decoded": int(decoded) if decoded is not None and not pd.isna(decoded) else 0,
            "written": None,
            "error": error,
        }
    )
    return row


def _retrieve_batch(
    clients: Callable[[], Any],
    wado: Any,
    url: str,
    batch: list[SeriesInfo],
    folders: list[Path],
    per_series: int,
    retry: RetryPolicy,
    workers: int,
) -> list[Retrieved]:
    """Retrieve the sample of every series of ``batch`` into its folder, ``workers`` at once."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(retrieve_sample, clients, wado, url, info, dest, per_series, retry)
            for info, dest in zip(batch, folders, strict=True)
        ]
        return [f.result() for f in futures]


def _classes(table: pd.DataFrame) -> list[str]:
    return [c[2:] for c in table.columns if c.startswith("p_")]


def classes_of(rows: list[dict[str, Any]]) -> list[str]:
    """The classes of the ``p_<CLASS>`` columns of ``rows``, in their first order met."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update({k[2:]: None for k in row if k.startswith("p_")})
    return list(seen)


@dataclass(frozen=True)
class BatchJob:
    """What every batch of series shares: the server, the model and the options (picklable:
    a Ray task gets one)."""

    url: str
    checkpoint: Path | str | None
    options: dict[str, Any]
    per_series: int
    retry: RetryPolicy
    workers: int
    timeout_s: float

    def run(
        self,
        batch: list[SeriesInfo],
        first: int,
        scratch: Path | str | None = None,
        clients: Callable[[], Any] | None = None,
        wado: Any = None,
    ) -> dict[str, Any]:
        """Retrieve the sample of every series of ``batch`` (series ``first`` on of the query)
        into a private temporary folder under ``scratch``, classify it, delete it.

        Returns:
            ``rows`` (one per series, as in ``out``), ``instances_in_series``,
            ``instances_retrieved`` and ``bytes``.
        """
        from hypermodal.sources.fetch.wado import WadoClient

        clients = clients or thread_clients(self.url, self.timeout_s)
        wado = wado or WadoClient(self.url, self.timeout_s)
        tmp = Path(tempfile.mkdtemp(prefix="hypermodal-pacs-", dir=scratch))
        try:
            folder, work = tmp / "instances", tmp / "work"
            folder.mkdir()
            work.mkdir()
            by_folder = {f"s{first + i:07d}": s.series for i, s in enumerate(batch)}
            folders = [folder / name for name in by_folder]
            done = _retrieve_batch(
                clients, wado, self.url, batch, folders, self.per_series, self.retry, self.workers
            )
            results: dict[str, dict[str, Any]] = {}
            classes: list[str] = []
            if any(d.files for d in done):
                table = _predict_call(folder, work, self.checkpoint, self.options)
                classes = _classes(table)
                results = _result_rows(table, by_folder)
            return {
                "rows": [series_row(d, results.get(d.info.series), classes) for d in done],
                "instances_in_series": sum(d.instances for d in done),
                "instances_retrieved": sum(len(d.files) for d in done),
                "bytes": sum(d.bytes for d in done),
            }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
