"""What every fetch source shares: options, retrying, streamed writes, and the source protocol.

A *source* (:mod:`~hypermodal.sources.fetch.idc`, :mod:`~hypermodal.sources.fetch.tcia`,
:mod:`~hypermodal.sources.fetch.dicomweb`) downloads one planned series into a staging folder and
returns a :class:`Download`: the files it wrote and the checks the server offered (MD5s, an
instance count). :mod:`~hypermodal.sources.fetch.run` verifies and publishes them. Sources import
this module (and :mod:`~hypermodal.sources.fetch.archive`), never the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hypermodal.common.errors import FetchError, PermanentFetchError, UnsafeArchiveError
from hypermodal.sources.fetch.plan_rows import TCIA_DEFAULT_URL, PlanRow
from hypermodal.sources.fetch.reach import (
    SourceUnreachableError,
    describe_source,
    unreachable_reason,
)

__all__ = [
    "CHUNK",
    "Download",
    "FetchError",
    "FetchOptions",
    "PermanentFetchError",
    "PlanRow",
    "RetryPolicy",
    "Source",
    "SourceUnreachableError",
    "TCIA_DEFAULT_URL",
    "UnsafeArchiveError",
    "ZipLimits",
    "md5_file",
    "stream_to_file",
    "with_retries",
]

log = logging.getLogger(__name__)

#: Bytes read or written at a time (downloads, hashing, zip extraction).
CHUNK = 1 << 20


# ---------------------------------------------------------------------------------- retrying
@dataclass
class RetryPolicy:
    """How often to try a request and how long to wait between tries (exponential backoff)."""

    attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), with jitter."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


def with_retries(
    func: Callable[[], Any], policy: RetryPolicy, what: str, where: str | None = None
) -> Any:
    """Call ``func`` until it succeeds, retrying on anything but :class:`PermanentFetchError`.

    A server that cannot be reached at all (connection refused, unknown host, no route, connect
    time-out: :func:`~hypermodal.sources.fetch.reach.unreachable_reason`) is not retried: it
    raises :class:`~hypermodal.sources.fetch.reach.SourceUnreachableError` naming ``where``
    (default: the server part of ``what``) at once.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return func()
        except PermanentFetchError:
            raise
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is not None:
                raise SourceUnreachableError(where or describe_source(what), reason) from exc
            if attempt >= policy.attempts:
                raise
            wait = policy.delay(attempt)
            log.info("%s: attempt %d failed (%s); retrying in %.1fs", what, attempt, exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------- file helpers
def md5_file(path: Path) -> str:
    """The MD5 of a file as lower-case hex, read :data:`CHUNK` bytes at a time."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def stream_to_file(
    chunks: Iterable[bytes],
    dest: Path,
    on_bytes: Callable[[int], None] | None = None,
    expected_size: int | None = None,
    max_bytes: int | None = None,
) -> int:
    """Write ``chunks`` to ``dest`` through a temporary name; return the byte count.

    Memory stays bounded by one chunk. Raises :class:`FetchError` when the body is shorter or
    longer than ``expected_size`` (a connection cut mid-body), :class:`PermanentFetchError` when
    it passes ``max_bytes``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    n = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                if not chunk:
                    continue
                fh.write(chunk)
                n += len(chunk)
                if max_bytes is not None and n > max_bytes:
                    raise PermanentFetchError(f"{dest.name}: more than {max_bytes} bytes")
                if on_bytes:
                    on_bytes(len(chunk))
        if expected_size is not None and n != expected_size:
            raise FetchError(f"{dest.name}: got {n} bytes, expected {expected_size}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return n


# ---------------------------------------------------------------------------- sources, options
@dataclass
class Download:
    """What a source put in the staging folder: files, plus checks the server offered."""

    files: list[Path] = field(default_factory=list)
    md5: dict[Path, str] = field(default_factory=dict)  # file → expected MD5 (hex)
    server_count: int | None = None  # instance count the server reported


class Source(Protocol):
    """Anything that can download one planned series into ``staging``."""

    def download_series(
        self, row: PlanRow, staging: Path, on_bytes: Callable[[int], None]
    ) -> Download: ...


@dataclass
class ZipLimits:
    """Bounds on an archive a server sends (see :func:`~hypermodal.sources.fetch.archive.
    safe_extract_zip`)."""

    max_members: int = 100_000
    max_member_bytes: int = 4 << 30
    max_total_bytes: int = 64 << 30
    max_ratio: float = 200.0  # uncompressed / compressed, per member (zip bombs)


@dataclass
class FetchOptions:
    """Settings of one fetch: parallelism, retries, time-outs and per-source switches."""

    workers: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0  # connect/read time-out of each request
    s3_endpoint: str | None = None  # IDC: S3-compatible endpoint (tests, mirrors)
    tcia_md5: bool = True  # use getImageWithMD5Hash
    zip_limits: ZipLimits = field(default_factory=ZipLimits)
    progress: bool = True
    retry_failed: bool = True  # also retry series a previous run marked failed

    @classmethod
    def from_cli(
        cls,
        workers: int,
        retries: int,
        backoff: float,
        timeout: float,
        s3_endpoint: str | None,
        **rest: Any,
    ) -> FetchOptions:
        """Options from the command-line flags shared by ``fetch`` and ``build``."""
        return cls(
            workers=workers,
            retry=RetryPolicy(attempts=max(1, retries), backoff_s=backoff),
            timeout_s=timeout,
            s3_endpoint=s3_endpoint,
            **rest,
        )
