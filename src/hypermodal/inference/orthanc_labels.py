"""Put a series' class on Orthanc itself, through its REST API: a label, or metadata.

Orthanc 1.12 and later have labels: ``PUT /series/{id}/labels/hypermodal-CT`` (the other
``hypermodal-*`` labels of the series are removed, so a rerun that changes its mind leaves one
answer). Older servers (Debian 12 ships 1.10) have no labels; the answer then goes into the
series' metadata, ``PUT /series/{id}/metadata/{key}``: ``key`` is a number from 1024 (any
Orthanc accepts those) or a name the server's ``UserMetadata`` configuration declares
(``"UserMetadata": {"hypermodal": 1024}``), and the value is JSON (class, confidence,
agreement, model). Orthanc's own id of a series is found with ``POST /tools/lookup``.

The REST root is the DICOMweb root without its ``/dicom-web`` (Orthanc's default), or given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hypermodal.common.errors import FetchError, PermanentFetchError
from hypermodal.sources.fetch.reach import (
    SourceUnreachableError,
    connect_timeout,
    describe_source,
    unreachable_reason,
)

__all__ = ["LABEL_PREFIX", "OrthancWriter", "label_for", "rest_root"]

LABEL_PREFIX = "hypermodal-"
#: Orthanc's first version with labels
LABELS_SINCE = (1, 12, 0)
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def label_for(prediction: str) -> str:
    """The Orthanc label of a class: ``hypermodal-CT`` (Orthanc allows ``A-Z a-z 0-9 _ -``)."""
    return LABEL_PREFIX + _LABEL_CHARS.sub("_", str(prediction))


def rest_root(dicomweb_url: str, orthanc_url: str | None = None) -> str:
    """Orthanc's REST root: ``orthanc_url`` when given, else ``dicomweb_url`` without its last
    ``/dicom-web``.

    Raises:
        ValueError: no ``orthanc_url`` and a DICOMweb URL that does not end in ``/dicom-web``.
    """
    if orthanc_url:
        return orthanc_url.rstrip("/")
    parts = urlsplit(dicomweb_url.rstrip("/"))
    if not parts.path.endswith("/dicom-web"):
        raise ValueError(
            f"cannot tell Orthanc's REST root from {dicomweb_url} (it does not end in "
            "/dicom-web): give the Orthanc URL"
        )
    path = parts.path[: -len("/dicom-web")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def _version(text: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums[:3]) if nums else (0,)


@dataclass
class OrthancWriter:
    """Writes series answers to one Orthanc server.

    Attributes:
        url: the REST root (``http://host:8042``).
        metadata_key: where answers go on servers without labels (a number ≥ 1024, or a
            ``UserMetadata`` name).
        timeout_s: read time-out of each request.
    """

    url: str
    metadata_key: str = "1024"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        import requests

        self.url = self.url.rstrip("/")
        self._session = requests.Session()
        self._timeout = (connect_timeout(self.timeout_s), self.timeout_s)
        key = str(self.metadata_key)
        if key.isdigit() and int(key) < 1024:
            raise ValueError(f"metadata key {key}: Orthanc keeps 0-1023 for itself; use 1024+")
        self.mode: str | None = None
        self.version: str | None = None

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._session.request(method, self.url + path, timeout=self._timeout, **kwargs)
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is not None:
                raise SourceUnreachableError(describe_source(self.url), reason) from exc
            raise FetchError(f"Orthanc {method} {path}: {exc}") from exc
        if r.status_code in (401, 403):
            raise PermanentFetchError(
                f"{self.url} answered HTTP {r.status_code}: it needs credentials"
            )
        return r

    def connect(self) -> str:
        """Check that ``url`` is an Orthanc and choose ``labels`` or ``metadata``; return it.

        Raises:
            SourceUnreachableError: the server does not accept connections.
            PermanentFetchError: the URL is not Orthanc's REST root.
        """
        r = self._request("GET", "/system")
        try:
            info = r.json() if r.ok else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or "Version" not in info:
            raise PermanentFetchError(
                f"{self.url} is not Orthanc's REST root (GET /system answered HTTP "
                f"{r.status_code}): labels go through Orthanc's REST API"
            )
        self.version = str(info["Version"])
        self.mode = "labels" if _version(self.version) >= LABELS_SINCE else "metadata"
        return self.mode

    def series_id(self, series_uid: str) -> str | None:
        """Orthanc's id of the series ``series_uid``, or None when the server has none."""
        r = self._request("POST", "/tools/lookup", data=series_uid)
        if not r.ok:
            raise FetchError(f"Orthanc /tools/lookup: HTTP {r.status_code}")
        for hit in r.json():
            if hit.get("Type") == "Series":
                return str(hit["ID"])
        return None

    def _put_label(self, sid: str, label: str) -> bool:
        """Set ``label`` and drop the other hypermodal labels; False if labels are missing."""
        r = self._request("PUT", f"/series/{sid}/labels/{label}")
        if r.status_code in (400, 404, 405):
            return False
        if not r.ok:
            raise FetchError(f"Orthanc label {label}: HTTP {r.status_code}")
        old = self._request("GET", f"/series/{sid}/labels")
        for other in old.json() if old.ok else []:
            if str(other).startswith(LABEL_PREFIX) and other != label:
                self._request("DELETE", f"/series/{sid}/labels/{other}")
        return True

    def write(self, series_uid: str, prediction: str, record: dict[str, Any]) -> str:
        """Put the answer for one series on the server; return what was written
        (``label hypermodal-CT`` or ``metadata 1024``).

        Raises:
            FetchError: the server has no such series, or refused the write.
        """
        if self.mode is None:
            self.connect()
        sid = self.series_id(series_uid)
        if sid is None:
            raise FetchError(f"Orthanc has no series {series_uid}")
        if self.mode == "labels":
            label = label_for(prediction)
            if self._put_label(sid, label):
                return f"label {label}"
            self.mode = "metadata"  # a server without the labels API after all
        value = json.dumps({"prediction": prediction, **record}, sort_keys=True, default=str)
        r = self._request("PUT", f"/series/{sid}/metadata/{self.metadata_key}", data=value)
        if not r.ok:
            raise FetchError(
                f"Orthanc metadata {self.metadata_key}: HTTP {r.status_code} (a name must be "
                "declared in the server's UserMetadata; numbers from 1024 always work)"
            )
        return f"metadata {self.metadata_key}"
