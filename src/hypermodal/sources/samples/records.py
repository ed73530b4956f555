"""What the inspection of a wheel member gives: a kept :class:`Image`, or a :class:`Verdict`.

Also the small matching and wording helpers every stage of :mod:`hypermodal.sources.samples`
shares.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Longest reason text written to ``samples.json``.
MAX_REASON = 300


@dataclass
class Candidate:
    """A wheel member (or a member of a tar archive in the wheel) that may be DICOM."""

    package: str
    source_path: str
    data: bytes


@dataclass
class Verdict:
    """A file not taken: ``kind`` is ``rejected`` (broken) or ``excluded`` (not an image)."""

    kind: str
    package: str
    source_path: str
    reason: str
    modality: str | None = None
    sop: str | None = None
    study: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row written to ``samples.json`` (``rejected`` or ``excluded``)."""
        out: dict[str, Any] = {
            "package": self.package,
            "source_path": self.source_path,
            "reason": self.reason,
        }
        if self.modality:
            out["modality"] = self.modality
        return out


@dataclass
class Image:
    """One kept file: a decoded DICOM, or a curated volume."""

    package: str
    source_path: str
    data: bytes  #: bytes written to the corpus
    name: str  #: file name in the dataset folder
    fmt: str  #: "dicom" | "nifti"
    images: int  #: 2D images (frames, or axial slices of the first volume)
    rows: int
    columns: int
    pixel_sha256: str
    modality: str | None = None
    sop: str | None = None
    study: str | None = None
    patient: str | None = None
    body_part: str | None = None
    transfer_syntax: str | None = None
    lossy: bool = False
    compressed: bool = False
    forced: bool = False
    unpacked: str | None = None
    thumb: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def key(self) -> str:
        """``package:source_path``: the file's name across all packages."""
        return f"{self.package}:{self.source_path}"

    @property
    def parent(self) -> str:
        """Name of the folder holding the file (inside its tar archive, if any)."""
        path = self.source_path.split("!")[-1]
        return path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""


def short_reason(exc: BaseException | str) -> str:
    """A one-line reason (at most :data:`MAX_REASON` characters) for an error or a message."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {text}"
    return text[:MAX_REASON]


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` matches any fnmatch pattern (case-sensitive, ``*`` spans folders)."""
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def first_match(path: str, rules: Iterable[tuple[str, str]]) -> str | None:
    """The reason of the first ``(pattern, reason)`` rule that ``path`` matches, else ``None``."""
    for pattern, reason in rules:
        if fnmatch.fnmatchcase(path, pattern):
            return reason
    return None
