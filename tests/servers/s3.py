"""An S3-compatible server on loopback (moto in server mode) laid out like IDC's buckets.

``s3://idc-open-data/<crdc_series_uuid>/<crdc_instance_uuid>.dcm``, one object per instance; the
plan's ``url`` is then ``s3://idc-open-data/<crdc_series_uuid>/*`` as in IDC's ``series_aws_url``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.servers.dicom_data import Series, free_port

BUCKET = "idc-open-data"


@dataclass
class S3Server:
    endpoint: str
    client: Any  # a signed client for setting up

    def upload_series(self, series: Series, bucket: str = BUCKET) -> str:
        """Upload one series IDC-style, replacing any earlier upload; return its
        ``series_aws_url``."""
        crdc_series = str(uuid.uuid5(uuid.NAMESPACE_OID, series.series))
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=f"{crdc_series}/")
        for obj in listed.get("Contents", []):
            self.client.delete_object(Bucket=bucket, Key=obj["Key"])
        for path, sop in zip(series.files, series.sops, strict=True):
            key = f"{crdc_series}/{uuid.uuid5(uuid.NAMESPACE_OID, sop)}.dcm"
            self.client.put_object(
                Bucket=bucket, Key=key, Body=path.read_bytes(), ACL="public-read"
            )
        return f"s3://{bucket}/{crdc_series}/*"


@contextmanager
def s3_server() -> Iterator[S3Server]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # moto keeps its buckets in process-wide memory: start every server empty
        import requests

        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=BUCKET, ACL="public-read")
        yield S3Server(endpoint, client)
    finally:
        server.stop()
