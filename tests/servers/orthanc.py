"""Start a real Orthanc (DICOMweb plugin) on loopback for a test, and load DICOM into it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.dicom_data import free_port

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass
class Orthanc:
    base: str  # http://127.0.0.1:PORT

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    def upload(self, path: Path) -> None:
        import requests

        r = requests.post(f"{self.base}/instances", data=path.read_bytes(), timeout=30)
        r.raise_for_status()


def orthanc_binary() -> str:
    binary = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )
    if binary is None:
        pytest.skip("Orthanc is not installed (apt: orthanc orthanc-dicomweb)")
    if not PLUGIN.exists():
        pytest.skip(f"Orthanc's DICOMweb plugin is missing ({PLUGIN}; apt: orthanc-dicomweb)")
    return binary


@contextmanager
def orthanc_server(workdir: Path, extra: dict | None = None) -> Iterator[Orthanc]:
    """A real Orthanc on a free loopback port; ``extra`` adds configuration keys."""
    import requests

    binary = orthanc_binary()
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "hypermodal-test",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpBindAddress": "127.0.0.1",
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "ConcurrentJobs": 1,
        **(extra or {}),
    }
    cfg = workdir / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = open(workdir / "orthanc.log", "wb")
    proc = subprocess.Popen([binary, str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                tail = (workdir / "orthanc.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{tail}")
            try:
                if requests.get(f"{base}/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer within 30 s")
            time.sleep(0.2)
        yield Orthanc(base)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
