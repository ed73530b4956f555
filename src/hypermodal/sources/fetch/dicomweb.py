"""Any DICOMweb server (QIDO-RS to list, WADO-RS to retrieve) through ``dicomweb-client``.

* :func:`list_series` pages through ``/series`` (QIDO-RS) and returns plan rows, which is how
  ``hypermodal fetch --dicomweb URL`` takes everything a server holds.
* :class:`DICOMwebSource` finds the study and instance count (one series-level QIDO-RS, skipped
  when the plan has both), then retrieves the series in one
  streamed WADO-RS request in its stored transfer syntax (``application/dicom; transfer-syntax=*``,
  so the server does not transcode), writing one instance at a time: memory holds one instance
  per worker. DICOMweb gives no checksums; the count must match the plan's or QIDO-RS's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypermodal.sources.fetch.base import (
    Download,
    FetchError,
    FetchOptions,
    PlanRow,
    with_retries,
)
from hypermodal.sources.fetch.plan_rows import plan_rows

PAGE = 500
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
SERIES_FIELDS = (
    "StudyInstanceUID",
    "PatientID",
    "Modality",
    "NumberOfSeriesRelatedInstances",
)


def _value(item: dict[str, Any], tag: str) -> Any:
    vals = item.get(tag, {}).get("Value") or [None]
    return vals[0]


def make_client(url: str, timeout_s: float = 60.0) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"), timeout=(min(timeout_s, 30.0), timeout_s))


def list_series(
    url: str,
    dataset: str = "dicomweb",
    client: Any = None,
    timeout_s: float = 60.0,
    page: int = PAGE,
) -> list[PlanRow]:
    """Every series a DICOMweb server holds, as plan rows (paged QIDO-RS ``/series``)."""
    client = client or make_client(url, timeout_s)
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        items = client.search_for_series(offset=offset, limit=page, fields=list(SERIES_FIELDS))
        for it in items:
            n = _value(it, "00201209")
            records.append(
                {
                    "dataset": dataset,
                    "series": _value(it, "0020000E"),
                    "study": _value(it, "0020000D"),
                    "patient": _value(it, "00100020"),
                    "images": int(n) if n is not None else None,
                    "source": "dicomweb",
                    "url": url,
                }
            )
        if len(items) < page:
            break
        offset += len(items)
    return plan_rows(records)


class DICOMwebSource:
    def __init__(self, opts: FetchOptions):
        self.opts = opts
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, url: str) -> Any:
        # one client per thread and server: requests sessions are not guaranteed thread-safe
        key = f"{threading.get_ident()} {url}"
        with self._lock:
            if key not in self._clients:
                self._clients[key] = make_client(url, self.opts.timeout_s)
            return self._clients[key]

    def _locate(self, client: Any, row: PlanRow) -> tuple[str, int | None]:
        """(StudyInstanceUID, the server's instance count) through one series-level QIDO-RS."""
        found = client.search_for_series(
            search_filters={"SeriesInstanceUID": row.series},
            fields=["NumberOfSeriesRelatedInstances"],
        )
        if not found:
            raise FetchError(f"series {row.series} is not on {row.url}")
        n = _value(found[0], "00201209")
        return str(_value(found[0], "0020000D")), int(n) if n is not None else None

    def download_series(
        self, row: PlanRow, staging: Path, on_bytes: Callable[[int], None]
    ) -> Download:
        client = self.client(row.url)
        if row.study and row.images is not None:
            study, count = row.study, None  # the plan's count is checked; no query needed
        else:
            study, count = with_retries(lambda: self._locate(client, row), self.opts.retry, row.key)
        staging.mkdir(parents=True, exist_ok=True)
        download = Download(server_count=count)
        # one streamed WADO-RS request per series, in the stored transfer syntax (no transcoding)
        for i, ds in enumerate(
            client.iter_series(study, row.series, media_types=ANY_TRANSFER_SYNTAX)
        ):
            dest = staging / f"i{i:06d}.dcm"
            tmp = dest.with_name(f".{dest.name}.part")
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(dest)
            on_bytes(dest.stat().st_size)
            download.files.append(dest)
        return download
