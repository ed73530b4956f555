"""Where a shard set lives: a local folder or an ``s3://bucket/prefix``, through :mod:`pyarrow.fs`.

Both kinds go through one :class:`pyarrow.fs.FileSystem`. Local objects are read as memory maps
(zero-copy from the page cache) and written atomically (temporary name, ``fsync``, rename); S3
objects are read whole and uploaded as they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from hypermodal.common.errors import ShardError
from hypermodal.common.files import write_bytes_atomic

__all__ = ["ShardStorage", "is_s3_url", "s3_filesystem"]

S3_RETRIES = 5
UPLOAD_BLOCK = 1 << 24


def is_s3_url(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def s3_filesystem(endpoint_url: str | None = None, bucket: str | None = None) -> pafs.S3FileSystem:
    """An S3 file system with the credentials any AWS client finds (environment, profile, role).

    Args:
        endpoint_url: an S3-compatible store such as ``http://127.0.0.1:9000`` (default:
            ``AWS_ENDPOINT_URL``, else AWS itself).
        bucket: on AWS, the bucket whose region the file system is made for.
    """
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    options: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_RETRIES)}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    elif bucket:
        with contextlib.suppress(OSError):  # no answer: the region of the environment
            options["region"] = pafs.resolve_s3_region(bucket)
    return pafs.S3FileSystem(**options)


class ShardStorage:
    """Named objects (``shards/train-00000.u8``, ``shards.json``, ...) under one location.

    Args:
        location: a local folder or ``s3://bucket/prefix``.
        filesystem: the file system to use (default: the local one, or :func:`s3_filesystem`).
        endpoint_url: S3-compatible endpoint when no file system is given.
    """

    def __init__(
        self,
        location: str | Path,
        filesystem: pafs.FileSystem | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.url = str(location).rstrip("/")
        self.s3 = is_s3_url(location)
        if self.s3:
            bucket, _, prefix = self.url[len("s3://") :].partition("/")
            if not bucket:
                raise ValueError(f"{location!r}: expected s3://bucket/prefix")
            self.root = f"{bucket}/{prefix.strip('/')}".rstrip("/")
            self.fs = filesystem or s3_filesystem(endpoint_url, bucket)
        else:
            self.root = os.path.abspath(location)
            self.fs = filesystem or pafs.LocalFileSystem(use_mmap=True)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def where(self, name: str) -> str:
        """The object's address as the user gave the location (for messages)."""
        return f"{self.url}/{name}"

    def path(self, name: str) -> str:
        """The object's path in :attr:`fs`."""
        return f"{self.root}/{name}"

    def read(self, name: str) -> pa.Buffer:
        """The whole object (a memory map when local); :class:`ShardError` when it is missing."""
        try:
            with self.fs.open_input_file(self.path(name)) as fh:
                return fh.read_buffer()
        except FileNotFoundError:
            raise ShardError(f"{self.where(name)} is missing") from None
        except OSError as exc:
            raise ShardError(f"{self.where(name)}: {exc}") from exc

    def exists(self, name: str) -> bool:
        try:
            return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound
        except OSError:
            return False

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(name))

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A local folder for objects being written, removed afterwards: inside the location
        when it is local (so :meth:`put_file` is a rename), else a system temporary folder."""
        if self.local:
            self.fs.create_dir(self.root, recursive=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=self.root if self.local else None))
        try:
            yield tmpdir
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def put_file(self, name: str, path: Path) -> None:
        """Move a finished local file into place (rename locally, upload to S3)."""
        if self.local:
            self.fs.create_dir(os.path.dirname(self.path(name)), recursive=True)
            self.fs.move(str(path), self.path(name))
            return
        with open(path, "rb") as src, self.fs.open_output_stream(self.path(name), None) as dst:
            shutil.copyfileobj(src, dst, UPLOAD_BLOCK)
        path.unlink()

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write a whole object (atomically when local)."""
        if self.local:
            write_bytes_atomic(self.path(name), data)
            return
        with self.fs.open_output_stream(self.path(name), None) as dst:
            dst.write(data)
