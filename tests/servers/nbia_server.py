"""A loopback server that speaks the NBIA v4 endpoints with real zips of real DICOM files.

Endpoints: ``getCollectionValues``, ``getSeries?Collection=``, ``getImage?SeriesInstanceUID=``,
``getImageWithMD5Hash?SeriesInstanceUID=`` (zip + ``md5hashes.csv``, as NBIA writes it).

Faults are injected per series: ``server.faults[uid] = ["500", "reset", ...]`` are used up one per
image request, in order; ``server.always[uid] = "evil"`` applies to every request. Kinds:

* ``500``       HTTP 500 with a short body
* ``reset``     full ``Content-Length``, half the body, then a TCP reset
* ``truncate``  a zip cut short, with a matching ``Content-Length`` (HTTP looks fine)
* ``badmd5``    ``md5hashes.csv`` carries a wrong hash for one file
* ``missing``   one instance left out of the zip (and out of the MD5 list)
* ``slow``      no answer for ``slow_s`` seconds (longer than the client's time-out)
* ``evil``      a zip whose members try ``../`` and absolute paths
* ``symlink``   a zip with a symbolic-link member

``delay_s`` delays every image response; ``throttle_bps`` paces every image body.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import stat
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.servers.dicom_data import Series


def _zip(members: list[tuple[str, bytes]], symlinks: list[tuple[str, str]] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


class NBIAServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, series: list[Series], collection: str = "DEMO"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.series = {s.series: s for s in series}
        self.collection = collection
        self.faults: dict[str, list[str]] = {}
        self.always: dict[str, str] = {}
        self.delay_s = 0.0
        self.throttle_bps: float | None = None
        self.slow_s = 3.0
        self.requests: list[tuple[str, str, str | None]] = []  # (endpoint, series, fault)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/nbia-api/services/v4"

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hang up on purpose
            super().handle_error(request, client_address)

    def take_fault(self, uid: str) -> str | None:
        with self.lock:
            if uid in self.always:
                return self.always[uid]
            queue = self.faults.get(uid)
            return queue.pop(0) if queue else None

    def zip_for(self, uid: str, md5: bool, fault: str | None) -> bytes:
        s = self.series[uid]
        members = [(f"1-{i + 1:03d}.dcm", p.read_bytes()) for i, p in enumerate(s.files)]
        if fault == "missing":
            members = members[:-1]
        if fault == "evil":
            return _zip([("../../evil.dcm", members[0][1]), ("/tmp/evil-abs.dcm", b"x")])
        if fault == "symlink":
            return _zip(members, symlinks=[("link.dcm", "/etc/passwd")])
        if md5:
            lines = ["filename,md5hash"]
            for i, (name, data) in enumerate(members):
                digest = hashlib.md5(data).hexdigest()
                if fault == "badmd5" and i == 0:
                    digest = "0" * 32
                lines.append(f"{name},{digest}")
            members.append(("md5hashes.csv", ("\n".join(lines) + "\n").encode()))
        body = _zip(members)
        if fault == "truncate":
            body = body[: len(body) * 2 // 3]
        return body


class _Handler(BaseHTTPRequestHandler):
    server: NBIAServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        endpoint = url.path.rsplit("/", 1)[-1]
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        srv = self.server
        if endpoint == "getCollectionValues":
            self._send(
                200, json.dumps([{"Collection": srv.collection}]).encode(), "application/json"
            )
        elif endpoint == "getSeries":
            if q.get("Collection") not in (None, srv.collection):
                self._send(200, b"[]", "application/json")
                return
            rows = [
                {
                    "SeriesInstanceUID": s.series,
                    "StudyInstanceUID": s.study,
                    "PatientID": s.patient,
                    "Collection": srv.collection,
                    "ImageCount": len(s.files),
                    "FileSize": sum(p.stat().st_size for p in s.files),
                }
                for s in srv.series.values()
            ]
            self._send(200, json.dumps(rows).encode(), "application/json")
        elif endpoint in ("getImage", "getImageWithMD5Hash"):
            uid = q.get("SeriesInstanceUID", "")
            if uid not in srv.series:
                self._send(404, b"no such series", "text/plain")
                return
            fault = srv.take_fault(uid)
            with srv.lock:
                srv.requests.append((endpoint, uid, fault))
            if srv.delay_s:
                time.sleep(srv.delay_s)
            if fault == "500":
                self._send(500, b"internal error", "text/plain")
                return
            if fault == "slow":
                time.sleep(srv.slow_s)
            body = srv.zip_for(uid, endpoint == "getImageWithMD5Hash", fault)
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault == "reset":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                return
            self._write_paced(body)
        else:
            self._send(404, b"unknown endpoint", "text/plain")

    def _write_paced(self, body: bytes) -> None:
        bps = self.server.throttle_bps
        if not bps:
            self.wfile.write(body)
            return
        step = max(1024, int(bps / 20))
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            self.wfile.flush()
            time.sleep(step / bps)


@contextmanager
def nbia_server(series: list[Series]) -> Iterator[NBIAServer]:
    srv = NBIAServer(series)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
