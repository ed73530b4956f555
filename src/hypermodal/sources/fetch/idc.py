"""IDC (NCI Imaging Data Commons) series from its public buckets, without credentials.

IDC keeps one object per instance: ``s3://idc-open-data/<crdc_series_uuid>/<crdc_instance_uuid>.dcm``;
the IDC index's ``series_aws_url`` column reads ``s3://idc-open-data/<crdc_series_uuid>/*``. The
objects are read with unsigned requests (``botocore.UNSIGNED``); ``endpoint_url`` points at any
S3-compatible server (tests use moto on loopback). ETags of single-part uploads are the object's
MD5 and are checked; multi-part ETags (with a ``-``) are not MD5s and are skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypermodal.sources.fetch.base import (
    CHUNK,
    Download,
    FetchOptions,
    PermanentFetchError,
    PlanRow,
    stream_to_file,
    with_retries,
)
from hypermodal.sources.fetch.reach import connect_timeout

DEFAULT_REGION = "us-east-1"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/*`` → ``("bucket", "prefix/")``."""
    if not url.startswith("s3://"):
        raise PermanentFetchError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.rstrip("*")
    if not bucket or not prefix or ".." in prefix.split("/"):
        raise PermanentFetchError(f"IDC URL needs a bucket and a series prefix: {url!r}")
    if not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def s3_client(endpoint_url: str | None = None, timeout_s: float = 60.0, pool: int = 32) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        signature_version=UNSIGNED,
        connect_timeout=connect_timeout(timeout_s),
        read_timeout=timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},  # retries are ours
        max_pool_connections=pool,
    )
    return boto3.client("s3", region_name=DEFAULT_REGION, endpoint_url=endpoint_url, config=config)


class IDCSource:
    def __init__(self, opts: FetchOptions, client: Any = None):
        self.opts = opts
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = s3_client(self.opts.s3_endpoint, self.opts.timeout_s)
            return self._client

    def list_series(self, url: str) -> list[dict[str, Any]]:
        bucket, prefix = parse_s3_url(url)
        objects: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            objects.extend(page.get("Contents", []))
        return [o for o in objects if not o["Key"].endswith("/")]

    def download_series(
        self, row: PlanRow, staging: Path, on_bytes: Callable[[int], None]
    ) -> Download:
        bucket, _ = parse_s3_url(row.url)
        where = self.opts.s3_endpoint or row.url
        objects = with_retries(lambda: self.list_series(row.url), self.opts.retry, row.url, where)
        download = Download(server_count=len(objects))
        for i, obj in enumerate(objects):
            dest = staging / f"i{i:06d}.dcm"

            def get(obj: dict[str, Any] = obj, dest: Path = dest) -> int:
                r = self.client.get_object(Bucket=bucket, Key=obj["Key"])
                return stream_to_file(
                    r["Body"].iter_chunks(CHUNK),
                    dest,
                    on_bytes=on_bytes,
                    expected_size=int(r.get("ContentLength", obj["Size"])),
                )

            with_retries(get, self.opts.retry, f"s3://{bucket}/{obj['Key']}", where)
            download.files.append(dest)
            etag = str(obj.get("ETag", "")).strip('"')
            if len(etag) == 32 and "-" not in etag:
                download.md5[dest] = etag
        return download
