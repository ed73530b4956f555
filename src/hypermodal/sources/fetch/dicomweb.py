"""Any DICOMweb server: QIDO-RS (through ``dicomweb-client``) to list, WADO-RS to retrieve.

* :func:`query_server` asks ``/series`` for the series a
  :class:`~hypermodal.sources.fetch.query.SeriesQuery` selects; a server that cannot be reached
  or a URL that is not a DICOMweb root fails at once with one line (no retries), and
  :func:`list_series` turns the answer into plan rows: ``hypermodal fetch --dicomweb URL``.
* :class:`DICOMwebSource` finds the study and instance count (one series-level QIDO-RS, skipped
  when the plan has both), then retrieves the series in one streamed WADO-RS request in its
  stored transfer syntax (:mod:`~hypermodal.sources.fetch.wado`), writing one instance at a
  time: memory holds one instance per worker. Instances stored without a DICOM file meta header
  are accepted (:mod:`~hypermodal.sources.fetch.instance`) and written with one. DICOMweb gives
  no checksums; the count must match the plan's or QIDO-RS's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypermodal.sources.fetch.base import (
    Download,
    FetchError,
    FetchOptions,
    PermanentFetchError,
    PlanRow,
    RetryPolicy,
    with_retries,
)
from hypermodal.sources.fetch.instance import write_instance
from hypermodal.sources.fetch.plan_rows import plan_rows
from hypermodal.sources.fetch.query import PAGE, SeriesInfo, SeriesQuery, search_series, tag_value
from hypermodal.sources.fetch.reach import connect_timeout, describe_source
from hypermodal.sources.fetch.wado import WadoClient

__all__ = [
    "DICOMwebSource",
    "NOT_DICOMWEB_HINT",
    "list_series",
    "make_client",
    "qido_call",
    "query_server",
]

#: what a user is told when a URL answers, but not as a DICOMweb root
NOT_DICOMWEB_HINT = "is it the DICOMweb root (Orthanc: http://HOST:8042/dicom-web)?"


def make_client(url: str, timeout_s: float = 60.0) -> Any:
    """A ``DICOMwebClient`` for ``url`` with a short connect time-out and without its own
    retries (retrying is :func:`~hypermodal.sources.fetch.base.with_retries`' job; the
    library's default retries every error five times with backoff)."""
    from dicomweb_client.api import DICOMwebClient

    # the library logs every request at INFO and each failed try with a traceback: quiet
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
    logging.getLogger("retrying").setLevel(logging.CRITICAL)
    client = DICOMwebClient(url=url.rstrip("/"), timeout=(connect_timeout(timeout_s), timeout_s))
    client.set_http_retry_params(retry=False)
    return client


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def qido_call(client: Any, url: str, what: Callable[[], Any]) -> Any:
    """Run a QIDO-RS call, turning the answers of a server that is no DICOMweb root (or that
    wants credentials) into one :class:`PermanentFetchError` line; other errors pass."""
    import requests

    try:
        return what()
    except requests.HTTPError as exc:
        code = _status(exc)
        if code in (400, 404, 405):
            raise PermanentFetchError(
                f"{url} answered HTTP {code} to a QIDO-RS search: {NOT_DICOMWEB_HINT}"
            ) from None
        if code in (401, 403):
            raise PermanentFetchError(f"{url} answered HTTP {code}: it needs credentials") from None
        raise
    except (TypeError, ValueError) as exc:  # HTML, Orthanc's REST list of ids, broken JSON
        if isinstance(exc, PermanentFetchError):
            raise
        raise PermanentFetchError(
            f"{url} does not answer /series with QIDO-RS JSON: {NOT_DICOMWEB_HINT}"
        ) from None


def query_server(
    url: str,
    query: SeriesQuery | None = None,
    client: Any = None,
    timeout_s: float = 60.0,
    retry: RetryPolicy | None = None,
) -> list[SeriesInfo]:
    """The series of the DICOMweb server at ``url`` that ``query`` selects.

    Raises:
        SourceUnreachableError: the server does not accept connections (not retried).
        PermanentFetchError: ``url`` answers, but not as a DICOMweb root (HTTP 400/404, or not
            QIDO-RS JSON), or wants credentials.
        FetchError: the server kept failing (HTTP 5xx) after ``retry``'s attempts.
    """
    client = client or make_client(url, timeout_s)
    query = query or SeriesQuery()
    return with_retries(
        lambda: qido_call(client, url, lambda: search_series(client, query)),
        retry or RetryPolicy(attempts=2, backoff_s=0.5),
        f"QIDO-RS {url}",
        describe_source(url),
    )


def list_series(
    url: str,
    dataset: str = "dicomweb",
    client: Any = None,
    timeout_s: float = 60.0,
    page: int = PAGE,
    query: SeriesQuery | None = None,
) -> list[PlanRow]:
    """The series of a DICOMweb server that ``query`` selects (default: all), as plan rows."""
    query = query or SeriesQuery()
    if page != query.page:
        from dataclasses import replace

        query = replace(query, page=page)
    found = query_server(url, query, client=client, timeout_s=timeout_s)
    return plan_rows(
        {
            "dataset": dataset,
            "series": s.series,
            "study": s.study,
            "patient": s.patient,
            "images": s.instances,
            "source": "dicomweb",
            "url": url,
        }
        for s in found
    )


class DICOMwebSource:
    """Downloads one planned series from a DICOMweb server (QIDO-RS, then WADO-RS)."""

    def __init__(self, opts: FetchOptions):
        self.opts = opts
        self._clients: dict[str, Any] = {}
        self._wado: dict[str, WadoClient] = {}
        self._lock = threading.Lock()

    def client(self, url: str) -> Any:
        # one client per thread and server: requests sessions are not guaranteed thread-safe
        key = f"{threading.get_ident()} {url}"
        with self._lock:
            if key not in self._clients:
                self._clients[key] = make_client(url, self.opts.timeout_s)
            return self._clients[key]

    def wado(self, url: str) -> WadoClient:
        with self._lock:
            if url not in self._wado:
                self._wado[url] = WadoClient(url, self.opts.timeout_s)
            return self._wado[url]

    def _locate(self, client: Any, row: PlanRow) -> tuple[str, int | None]:
        """(StudyInstanceUID, the server's instance count) through one series-level QIDO-RS."""
        found = qido_call(
            client,
            row.url,
            lambda: client.search_for_series(
                search_filters={"SeriesInstanceUID": row.series},
                fields=["NumberOfSeriesRelatedInstances"],
            ),
        )
        if not found:
            raise FetchError(f"series {row.series} is not on {row.url}")
        n = tag_value(found[0], "00201209")
        return str(tag_value(found[0], "0020000D")), int(n) if n is not None else None

    def download_series(
        self, row: PlanRow, staging: Path, on_bytes: Callable[[int], None]
    ) -> Download:
        if row.study and row.images is not None:
            study, count = row.study, None  # the plan's count is checked; no query needed
        else:
            client = self.client(row.url)
            study, count = with_retries(
                lambda: self._locate(client, row),
                self.opts.retry,
                row.key,
                describe_source(row.url),
            )
        staging.mkdir(parents=True, exist_ok=True)
        download = Download(server_count=count)
        # one streamed WADO-RS request per series, in the stored transfer syntax (no transcoding)
        for i, part in enumerate(self.wado(row.url).retrieve(study, row.series)):
            dest = staging / f"i{i:06d}.dcm"
            write_instance(part, dest, f"instance {i + 1} of series {row.series}")
            on_bytes(dest.stat().st_size)
            download.files.append(dest)
        return download
