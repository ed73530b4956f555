"""Every exception the package raises on purpose, under one base.

The CLI maps any :class:`HypermodalError` to a one-line ``error: …`` message and exit status 2
(a user mistake or a bad input, never a traceback). Each class also keeps the built-in base it
has always had (``ValueError``, ``RuntimeError``), so callers that catch those still work.
"""

from __future__ import annotations

from pathlib import Path


class HypermodalError(Exception):
    """Base of every error the package raises on purpose."""


# ------------------------------------------------------------------------------ inputs (io)
class ImageReadError(HypermodalError):
    """A file could not be read; ``reason`` is a short, human-readable cause."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class UnsupportedFileError(ImageReadError):
    """Not an image format any reader handles (or an image without pixel data)."""


class CorruptFileError(ImageReadError):
    """A file of a known format that is truncated, malformed, or cannot be decoded."""


# ------------------------------------------------------------------------------ sources
class SampleDownloadError(HypermodalError, RuntimeError):
    """``pip download`` failed or gave an unexpected wheel."""


class SpecError(HypermodalError, ValueError):
    """The corpus spec is malformed; the message says where."""


class IndexSourceError(HypermodalError, ValueError):
    """The index or local catalog is missing or lacks required columns."""


class FetchError(HypermodalError, RuntimeError):
    """A download or a check failed; worth retrying."""


class PermanentFetchError(FetchError):
    """A failure that retrying cannot fix (a malicious archive, a bad plan row)."""


class UnsafeArchiveError(PermanentFetchError):
    """A zip member would escape the target, is a link, or breaks the size limits."""


# ------------------------------------------------------------------------------ stages
class EngineError(HypermodalError, ValueError):
    """An engine was asked for that cannot be used (unknown name, Ray not installed, ...)."""


class SplitError(HypermodalError, ValueError):
    """The split file or request is inconsistent with the catalog."""


class StoreError(HypermodalError):
    """A store folder is missing, incomplete, or inconsistent."""


class ShardError(HypermodalError):
    """A shard set is incomplete, or a shard is missing or corrupt."""


class CheckpointError(HypermodalError, RuntimeError):
    """A checkpoint is missing, corrupt, or not a hypermodal checkpoint."""


class ResumeError(HypermodalError, RuntimeError):
    """A run cannot be resumed (different split, different recipe, or no run to resume)."""


class DeviceError(HypermodalError, ValueError):
    """A ``--device`` that is not a device name, or a device this machine does not have."""


class MissingDependencyError(HypermodalError, ImportError):
    """A command or model needs a package this install lacks (PyTorch in the light install);
    the message says how to add it."""


# ------------------------------------------------------------------------------ outputs
class OutputError(HypermodalError, ValueError):
    """An output location that cannot be written: read-only, a folder where a file is wanted
    (or the reverse), or a file name whose extension does not match what is written."""


class DiskFullError(HypermodalError, OSError):
    """The disk filled up (``ENOSPC``/``EDQUOT``) while writing ``path``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"disk full at {path}")
        self.path = str(path)

    def __str__(self) -> str:
        return f"disk full at {self.path}"


class LockedError(HypermodalError, FileExistsError):
    """Another run holds the exclusive lock of an output folder (fetch, build, store)."""
