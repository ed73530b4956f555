"""``hypermodal shard``: export a finished slice store into shards for object storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def shard(
    store: Annotated[Path, typer.Argument(help="A finished store folder (`hypermodal store`).")],
    out: Annotated[str, typer.Option("--out", help="Output folder or s3://bucket/prefix.")],
    shard_mb: Annotated[
        float, typer.Option("--shard-mb", help="Shard size in MiB (256 → 5,349 images at 224²).")
    ] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the export-time shuffle of each split.")] = 0,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Cut a store into raw uint8 shards + a Parquet index, locally or on S3 (train from them
    with hypermodal.store.shards.ShardFeeder)."""
    from hypermodal.store.shards import ShardError, export_shards

    try:
        summary = export_shards(
            store, out, shard_mb=shard_mb, seed=seed, endpoint_url=endpoint_url, progress=progress
        )
    except ShardError as exc:
        raise ValueError(str(exc)) from None
    typer.echo(json.dumps(summary.to_dict(), indent=2))


COMMANDS = {"shard": shard}
