"""TCIA through the NBIA REST API v4 (public collections, no login).

Endpoints used (all ``GET`` below the base URL):

* ``getCollectionValues`` → ``[{"Collection": ...}]``
* ``getSeries?Collection=&PatientID=&StudyInstanceUID=&Modality=`` → one JSON object per series
  (``SeriesInstanceUID``, ``StudyInstanceUID``, ``PatientID``, ``Modality``, ``ImageCount``,
  ``FileSize``, …)
* ``getImage?SeriesInstanceUID=`` → a zip of the series' DICOM files
* ``getImageWithMD5Hash?SeriesInstanceUID=`` → the same zip plus ``md5hashes.csv``
  (a header line, then ``file name,md5`` per instance)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypermodal.sources.fetch.archive import safe_extract_zip
from hypermodal.sources.fetch.base import (
    CHUNK,
    TCIA_DEFAULT_URL,
    Download,
    FetchError,
    FetchOptions,
    PlanRow,
    stream_to_file,
)
from hypermodal.sources.fetch.reach import connect_timeout

DEFAULT_BASE_URL = TCIA_DEFAULT_URL
MD5_MEMBER = "md5hashes.csv"
MAX_MD5_CSV_BYTES = 16 << 20


class NBIAClient:
    """A small client of the NBIA v4 API; one ``requests.Session`` (thread-safe for GETs)."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, timeout_s: float = 60.0, session=None):
        import requests

        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout(timeout_s), timeout_s)
        self.session = session or requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _get_json(self, endpoint: str, **params: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        r = self.session.get(f"{self.base_url}/{endpoint}", params=params, timeout=self.timeout)
        if r.status_code == 204 or not r.content:
            return []
        r.raise_for_status()
        data = r.json()
        return data if isinstance(data, list) else [data]

    def collections(self) -> list[str]:
        return [d["Collection"] for d in self._get_json("getCollectionValues")]

    def series(
        self,
        collection: str | None = None,
        patient_id: str | None = None,
        study_uid: str | None = None,
        modality: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._get_json(
            "getSeries",
            Collection=collection,
            PatientID=patient_id,
            StudyInstanceUID=study_uid,
            Modality=modality,
        )

    def download_zip(
        self,
        series_uid: str,
        dest: Path,
        md5: bool = True,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Stream the series zip to ``dest``; raise on HTTP errors and short bodies."""
        endpoint = "getImageWithMD5Hash" if md5 else "getImage"
        with self.session.get(
            f"{self.base_url}/{endpoint}",
            params={"SeriesInstanceUID": series_uid},
            timeout=self.timeout,
            stream=True,
        ) as r:
            if r.status_code >= 400:
                raise FetchError(f"{endpoint} {series_uid}: HTTP {r.status_code}")
            length = r.headers.get("Content-Length")
            return stream_to_file(
                r.iter_content(CHUNK),
                dest,
                on_bytes=on_bytes,
                expected_size=int(length) if length and length.isdigit() else None,
            )


def parse_md5_csv(text: str) -> dict[str, str]:
    """``md5hashes.csv`` → ``{member name: md5}`` (the header line is optional)."""
    out: dict[str, str] = {}
    for rec in csv.reader(io.StringIO(text)):
        if len(rec) < 2:
            continue
        name, digest = rec[0].strip(), rec[1].strip().lower()
        if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest):
            out[name] = digest
    return out


class TCIASource:
    """Fetch one series from an NBIA v4 server as a zip, extract it safely, collect MD5s."""

    def __init__(self, opts: FetchOptions):
        self.opts = opts
        self._clients: dict[str, NBIAClient] = {}

    def client(self, base_url: str) -> NBIAClient:
        if base_url not in self._clients:
            self._clients[base_url] = NBIAClient(base_url or DEFAULT_BASE_URL, self.opts.timeout_s)
        return self._clients[base_url]

    def download_series(
        self, row: PlanRow, staging: Path, on_bytes: Callable[[int], None]
    ) -> Download:
        client = self.client(row.url)
        archive = staging / "series.zip"
        client.download_zip(row.series, archive, md5=self.opts.tcia_md5, on_bytes=on_bytes)
        members = safe_extract_zip(archive, staging / "files", self.opts.zip_limits)
        archive.unlink()
        md5: dict[Path, str] = {}
        manifest = members.pop(MD5_MEMBER, None)
        if manifest is not None:
            if manifest.stat().st_size > MAX_MD5_CSV_BYTES:
                raise FetchError(f"{MD5_MEMBER} is implausibly large")
            hashes = parse_md5_csv(manifest.read_text(errors="replace"))
            manifest.unlink()
            for name, path in members.items():
                digest = hashes.get(name) or hashes.get(Path(name).name)
                if digest is None:
                    raise FetchError(f"{MD5_MEMBER} has no hash for {name}")
                md5[path] = digest
            if len(hashes) != len(members):
                raise FetchError(f"{MD5_MEMBER} lists {len(hashes)} files, zip has {len(members)}")
        elif self.opts.tcia_md5:
            raise FetchError(f"getImageWithMD5Hash returned no {MD5_MEMBER}")
        return Download(files=list(members.values()), md5=md5, server_count=None)
