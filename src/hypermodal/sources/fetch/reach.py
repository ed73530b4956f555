"""Telling "the server cannot be reached" from a failure worth retrying.

A refused connection, a host name that does not resolve, an unreachable network and a connect
time-out say that the source itself is not there: retrying each of thousands of series with
backoff would only turn one clear answer into hours of waiting. :func:`unreachable_reason`
recognises them in the exception chains of ``requests``/``urllib3`` (TCIA, DICOMweb) and
``botocore`` (IDC), and :class:`SourceUnreachableError` carries the one line a user sees.

Connections are opened with a short time-out (:data:`CONNECT_TIMEOUT_S`): a server that is up
accepts a connection in milliseconds; the read time-out stays as long as the user asked.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from hypermodal.common.errors import PermanentFetchError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "SourceUnreachableError",
    "connect_timeout",
    "describe_source",
    "unreachable_reason",
]

#: seconds to wait for a connection to open (a reachable server answers in milliseconds)
CONNECT_TIMEOUT_S = 5.0

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}


class SourceUnreachableError(PermanentFetchError):
    """The server of a source does not accept connections (refused, unknown host, no network,
    connect time-out): not retried, and the whole fetch stops with this one line."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"cannot reach {where}: {reason}")
        self.where = where
        self.reason = reason


def connect_timeout(timeout_s: float) -> float:
    """The connect time-out to use with a read time-out of ``timeout_s`` seconds."""
    return min(float(timeout_s), CONNECT_TIMEOUT_S)


def describe_source(url: str) -> str:
    """A short name of where ``url`` points: ``scheme://host:port`` (the whole URL when it has
    no host)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return url


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps: causes, contexts, and the ``reason`` that urllib3 and
    requests keep (a ``MaxRetryError`` holds the ``NewConnectionError``)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen) or len(seen) > 32:
            continue
        seen.append(e)
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return seen


def _is_connect_timeout(e: BaseException) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    if "NewConnectionError" in names:  # urllib3 derives it from ConnectTimeoutError
        return False
    # requests.ConnectTimeout, urllib3.ConnectTimeoutError, botocore.ConnectTimeoutError
    return bool(names & {"ConnectTimeout", "ConnectTimeoutError"})


def _refused_or_unknown(e: BaseException) -> str | None:
    if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
        return "host name not found"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNOS:
        return _UNREACHABLE_ERRNOS[e.errno]
    text = str(e)
    if "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return "host name not found"
    if "Connection refused" in text:
        return "connection refused"
    return None


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the server behind ``exc`` cannot be reached, or None when ``exc`` is anything else
    (an HTTP error, a read time-out, a connection cut mid-body: those are worth retrying)."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, SourceUnreachableError):
            return e.reason
    for e in chain:
        reason = _refused_or_unknown(e)
        if reason is not None:
            return reason
    for e in chain:
        if _is_connect_timeout(e):
            return "no answer (connect time-out)"
        if type(e).__name__ == "EndpointConnectionError":  # botocore: refused or unknown host
            return "cannot connect to the endpoint"
    return None
