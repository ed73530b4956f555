"""Inputs that are objects in a bucket: listed from ``s3://bucket/prefix``, read where they are
decoded, never kept on disk.

``predict s3://idc-open-data/<series uuid>/`` lists the objects under the prefix (boto3,
anonymous by default, as IDC's public buckets want; ``AWS_ENDPOINT_URL`` or
:attr:`RemoteOptions.endpoint_url` points at any S3-compatible store), and each worker reads the
bytes of the objects it is given. The bytes are decoded by the project's own readers
(:mod:`hypermodal.io`), so an object gives exactly what the same file gives on disk: they are
put in an anonymous in-memory file (``memfd_create``, opened as ``/proc/self/fd/N``; an
unlinked temporary file where the system has no memfd), closed as soon as the file is read.

The header pass reads only the first :attr:`RemoteOptions.head_bytes` of an object: the memory
file is given the object's full size (the rest is a hole that costs no memory), so the header
reader sees the file as it is and stops at the pixel data. An object whose header does not fit,
or whose pixel data must be checked (encapsulated fragments), is read whole on a second try.
Only the sampled instances are then read in full: the bytes that cross the network are the
headers plus the sample.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypermodal.common.errors import HypermodalError

__all__ = [
    "ObjectStoreError",
    "RemoteOptions",
    "is_remote",
    "list_inputs",
    "list_objects",
    "memory_file",
    "normalise",
    "read_object",
    "remote_decode",
    "remote_header_info",
]

S3_SCHEME = "s3://"
#: bytes read for a header (IDC's CT/MR headers are 1-6 KB; a few carry long private blocks)
HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class RemoteOptions:
    """How workers reach the objects.

    Attributes:
        endpoint_url: An S3-compatible endpoint (default: ``AWS_ENDPOINT_URL``, else AWS).
        signed: Sign requests with the credentials boto3 finds (default: anonymous requests,
            which IDC's public buckets take).
        timeout_s: Connect and read timeout of one request.
        head_bytes: Bytes read for the header pass.
    """

    endpoint_url: str | None = None
    signed: bool = False
    timeout_s: float = 60.0
    head_bytes: int = HEAD_BYTES

    @classmethod
    def from_environment(cls) -> RemoteOptions:
        """Options with the endpoint of ``AWS_ENDPOINT_URL`` (read in the driver, so workers
        started before it was set still use it)."""
        return cls(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def normalise(location: str | os.PathLike[str]) -> str:
    """A location as text, ``s3:/bucket/key`` (a URL that went through ``pathlib``) mended to
    ``s3://bucket/key``."""
    text = os.fspath(location)
    if text.startswith("s3:/") and not text.startswith(S3_SCHEME):
        text = S3_SCHEME + text[len("s3:/") :]
    return text


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an ``s3://`` URL (also as ``pathlib`` wrote it)."""
    return normalise(location).startswith(S3_SCHEME)


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ``("bucket", "some/key")`` (a trailing ``*`` is dropped).

    Raises:
        ValueError: No bucket.
    """
    bucket, _, key = normalise(url)[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r}: expected s3://bucket/prefix")
    return bucket, key.rstrip("*")


class ObjectStoreError(HypermodalError, OSError):
    """The object store refused a request or cannot be reached."""


_clients: dict[tuple[str | None, bool, float], Any] = {}
_clients_lock = threading.Lock()


def s3_client(opts: RemoteOptions) -> Any:
    """A boto3 S3 client for ``opts``, one per process and options (clients are thread-safe)."""
    key = (opts.endpoint_url, opts.signed, opts.timeout_s)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            config = Config(
                signature_version=None if opts.signed else UNSIGNED,
                connect_timeout=min(opts.timeout_s, 10.0),
                read_timeout=opts.timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=16,
            )
            client = boto3.client(
                "s3", region_name="us-east-1", endpoint_url=opts.endpoint_url, config=config
            )
            _clients[key] = client
    return client


def _reach_error(url: str, exc: Exception) -> OSError:
    """A one-line error for a bucket that cannot be listed or read."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            return FileNotFoundError(f"input {url} does not exist ({code})")
        return ObjectStoreError(f"{url}: {code or 'error'}: {err.get('Message', exc)}")
    return ObjectStoreError(f"{url}: cannot reach the object store: {exc}")


def list_objects(url: str, opts: RemoteOptions) -> list[tuple[str, int]]:
    """The objects under ``url`` as ``(s3 URL, size in bytes)``, sorted by key.

    ``url`` is a prefix (``s3://bucket/prefix/`` or IDC's ``s3://bucket/prefix/*``) or one
    object's key.

    Raises:
        FileNotFoundError: Nothing is stored under ``url``.
        ObjectStoreError: The store refused the listing or cannot be reached.
    """
    bucket, key = split_s3(url)
    client = s3_client(opts)
    found: list[tuple[str, int]] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"]
                exact = name == key
                below = not key or key.endswith("/") or name[len(key) :].startswith("/")
                if (exact or below) and not name.endswith("/"):
                    found.append((f"{S3_SCHEME}{bucket}/{name}", int(obj["Size"])))
    except Exception as exc:  # noqa: BLE001 - botocore's errors: one line for the user
        raise _reach_error(url, exc) from None
    if not found:
        raise FileNotFoundError(f"input {normalise(url)} does not exist (no objects under it)")
    return sorted(found)


def list_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    opts: RemoteOptions,
    skip: Iterable[Path | str] = (),
) -> tuple[list[str], dict[str, int]]:
    """Every input as text: local files and folders expanded as
    :func:`~hypermodal.inference.inputs.expand_inputs` does, ``s3://`` prefixes listed.

    Returns:
        The locations in input order, and the size of each object listed.
    """
    from hypermodal.inference.inputs import expand_inputs

    files: list[str] = []
    sizes: dict[str, int] = {}
    for item in inputs:
        if is_remote(item):
            listed = list_objects(normalise(item), opts)
            files += [u for u, _ in listed]
            sizes.update(listed)
        else:
            files += [str(p) for p in expand_inputs([item], skip)]
    return files, sizes


def read_object(url: str, opts: RemoteOptions, length: int | None = None) -> bytes:
    """An object's bytes (its first ``length`` bytes when given).

    Raises:
        FileNotFoundError, ObjectStoreError: as :func:`list_objects`.
    """
    bucket, key = split_s3(url)
    extra = {"Range": f"bytes=0-{length - 1}"} if length else {}
    try:
        body = s3_client(opts).get_object(Bucket=bucket, Key=key, **extra)["Body"]
        try:
            return body.read()
        finally:
            body.close()
    except Exception as exc:  # noqa: BLE001 - botocore's errors: one line for the reason
        raise _reach_error(url, exc) from None


@contextlib.contextmanager
def memory_file(data: bytes, size: int | None = None) -> Iterator[str]:
    """A path that reads as ``data`` (padded with a hole to ``size`` bytes), in memory.

    Yields:
        ``/proc/self/fd/N`` of an anonymous memory file (an unlinked temporary file where
        ``memfd_create`` is missing); closed on exit.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("hypermodal-object", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        fd, name = tempfile.mkstemp(prefix=".hypermodal-object-")
        os.unlink(name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if size is not None and size > len(data):
            os.ftruncate(fd, size)
        os.lseek(fd, 0, os.SEEK_SET)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _named(record: dict[str, Any], url: str, alias: str) -> dict[str, Any]:
    """``record`` naming the object by its URL instead of the memory file's path."""
    for key, value in record.items():
        if isinstance(value, str) and alias in value:
            record[key] = value.replace(alias, url)
        elif isinstance(value, dict):
            _named(value, url, alias)
    return record


def remote_header_info(item: tuple[str, int | None, RemoteOptions]) -> dict[str, Any]:
    """Worker: :func:`~hypermodal.inference.sampling.header_info` of an object or a local file.

    ``item`` is ``(location, size or None, options)``; an object's header is read from its first
    ``head_bytes`` (the whole object when that is not enough).
    """
    from hypermodal.inference.sampling import header_info

    location, size, opts = item
    if not is_remote(location):
        return header_info(location)
    try:
        partial = size is not None and size > opts.head_bytes
        data = read_object(location, opts, opts.head_bytes if partial else None)
        with memory_file(data, size) as alias:
            record = _named(header_info(alias), location, alias)
        if partial and "error" in record:  # the header, or a check, needs more than the head
            data = read_object(location, opts)
            with memory_file(data) as alias:
                record = _named(header_info(alias), location, alias)
    except OSError as exc:
        return {"path": location, "error": str(exc)}
    return record


def remote_decode(item: tuple[str, list[int] | None, dict, RemoteOptions]) -> dict[str, Any]:
    """Worker: :func:`~hypermodal.inference.decoding.decode_file` of an object (read whole, in
    memory) or a local file; ``item`` is ``(location, image numbers or None, preprocess
    config as a dict, options)``."""
    from hypermodal.inference.decoding import decode_file

    location, wanted, pre, opts = item
    if not is_remote(location):
        return decode_file((location, wanted, pre))
    try:
        data = read_object(location, opts)
    except OSError as exc:
        return {"path": location, "error": str(exc)}
    with memory_file(data) as alias:
        return _named(decode_file((alias, wanted, pre)), location, alias)
