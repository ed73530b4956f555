"""WADO-RS retrieval as raw bytes: a series or single instances, streamed, one part at a time.

``dicomweb-client`` parses every part with ``pydicom.dcmread`` without ``force``, which fails
on an instance stored without a file meta header. Here the ``multipart/related`` body is split
by :func:`iter_parts` while it streams in (memory: one instance plus one chunk), and each part
is handed over as bytes for :func:`~hypermodal.sources.fetch.instance.write_instance` to check
and write. Instances are asked for in their stored transfer syntax
(``transfer-syntax=*``: the server does not transcode).

HTTP errors become :class:`~hypermodal.common.errors.FetchError` (worth retrying: a busy server
answers 503); 404 says the series or instance is not on the server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from hypermodal.common.errors import FetchError
from hypermodal.sources.fetch.reach import connect_timeout

__all__ = ["ACCEPT", "WadoClient", "boundary_of", "iter_parts"]

#: every instance in its stored transfer syntax, as parts of a multipart/related body
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CHUNK = 1 << 20


def boundary_of(content_type: str) -> bytes | None:
    """The ``boundary`` parameter of a ``multipart/related`` Content-Type, or None."""
    media, *params = [p.strip() for p in content_type.split(";")]
    if media.lower() != "multipart/related":
        return None
    for p in params:
        key, _, value = p.partition("=")
        if key.strip().lower() == "boundary":
            return value.strip().strip('"').encode()
    return None


def iter_parts(chunks: Iterable[bytes], boundary: bytes) -> Iterator[bytes]:
    """The bodies of the parts of a multipart message that arrives as ``chunks``.

    Raises:
        FetchError: the body has no boundary, or ends before its closing boundary.
    """
    delim = b"\r\n--" + boundary
    it = iter(chunks)
    buf = bytearray(b"\r\n")  # the first boundary may open the body

    def fill() -> bool:
        for chunk in it:
            if chunk:
                buf.extend(chunk)
                return True
        return False

    start = 0
    while (i := buf.find(delim, start)) < 0:
        start = max(0, len(buf) - len(delim) + 1)
        if not fill():
            raise FetchError("the multipart answer has no boundary")
    del buf[: i + len(delim)]
    while True:
        while len(buf) < 2:
            if not fill():
                raise FetchError("the multipart answer ends before its closing boundary")
        if buf[:2] == b"--":
            return
        start = 0
        while (h := buf.find(b"\r\n\r\n", start)) < 0:
            start = max(0, len(buf) - 3)
            if not fill():
                raise FetchError("the multipart answer ends inside a part's headers")
        del buf[: h + 4]
        start = 0
        while (j := buf.find(delim, start)) < 0:
            start = max(0, len(buf) - len(delim) + 1)
            if not fill():
                raise FetchError("the multipart answer ends inside a part")
        yield bytes(buf[:j])
        del buf[: j + len(delim)]


class WadoClient:
    """WADO-RS GETs below a DICOMweb root, one ``requests`` session per thread."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = (connect_timeout(timeout_s), timeout_s)
        self._local = threading.local()

    @property
    def session(self) -> Any:
        if getattr(self._local, "session", None) is None:
            import requests

            self._local.session = requests.Session()
        return self._local.session

    def _path(self, study: str, series: str, sop: str | None) -> str:
        path = f"{self.url}/studies/{quote(study)}/series/{quote(series)}"
        return f"{path}/instances/{quote(sop)}" if sop else path

    def retrieve(self, study: str, series: str, sop: str | None = None) -> Iterator[bytes]:
        """The instances of a series (or the one instance ``sop``), each as the bytes the
        server sent, streamed.

        Raises:
            FetchError: an HTTP error, or a body that is not a whole multipart message.
        """
        url = self._path(study, series, sop)
        what = f"instance {sop}" if sop else f"series {series}"
        with self.session.get(
            url, headers={"Accept": ACCEPT}, timeout=self.timeout, stream=True
        ) as r:
            if r.status_code == 404:
                raise FetchError(f"{what} is not on {self.url} (HTTP 404)")
            if r.status_code >= 400:
                raise FetchError(f"WADO-RS {what}: HTTP {r.status_code} from {self.url}")
            ctype = r.headers.get("Content-Type", "")
            boundary = boundary_of(ctype)
            if boundary is None:
                if not ctype.lower().startswith("application/dicom"):
                    raise FetchError(f"WADO-RS {what}: unexpected Content-Type {ctype!r}")
                yield r.content  # a server that sends one instance without the multipart wrap
                return
            yield from iter_parts(r.iter_content(CHUNK), boundary)
