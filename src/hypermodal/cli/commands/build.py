"""``hypermodal build``: plan → fetch → decode → store → delete, one batch of series at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def build(
    plan: Annotated[Path, typer.Argument(help="Plan Parquet from `hypermodal plan`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store folder to build.")],
    scratch: Annotated[
        Path | None,
        typer.Option(help="Folder for one batch of DICOM (default: OUT.scratch beside OUT)."),
    ] = None,
    batch_series: Annotated[
        int, typer.Option(help="Series fetched and stored per batch (scratch peak: one batch).")
    ] = 16,
    workers: Annotated[int, typer.Option(help="Series downloaded at once; decode processes.")] = 4,
    size: Annotated[int, typer.Option(help="Side of the stored square images.")] = 224,
    keep_dicom: Annotated[
        bool, typer.Option("--keep-dicom", help="Keep the fetched DICOM in SCRATCH/fetch.")
    ] = False,
    prefetch: Annotated[
        bool,
        typer.Option(
            "--prefetch", help="Download the next batch while one decodes (scratch: 2 batches)."
        ),
    ] = False,
    default_split: Annotated[
        str | None, typer.Option(help="Split for series the plan gives none.")
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Class vocabulary, e.g. CT,MR,PT,XR (default).")
    ] = None,
    retries: Annotated[int, typer.Option(help="Attempts per series and per request.")] = 4,
    backoff: Annotated[float, typer.Option(help="First retry delay in seconds (doubles).")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Per-request time-out in seconds.")] = 60.0,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint for IDC (default: AWS).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build a store straight from a plan, holding at most one batch of DICOM on disk.

    Resumable: rerun the same command after an interruption.

    Series that cannot be fetched are reported (exit code 1); the rest is stored.
    """
    from hypermodal.labels import ClassVocabulary
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.sources.fetch import FetchOptions
    from hypermodal.store import META_FILE
    from hypermodal.store.stream import stream_build

    if (out / META_FILE).exists():
        typer.echo(f"{out} is already a finished store", err=True)
        return
    opts = FetchOptions.from_cli(workers, retries, backoff, timeout, s3_endpoint, progress=False)
    summary = stream_build(
        plan,
        out,
        scratch=scratch,
        batch_series=batch_series,
        workers=workers,
        preprocess=PreprocessConfig(size=size),
        vocabulary=ClassVocabulary.from_options(classes) if classes else None,
        fetch_options=opts,
        keep_dicom=keep_dicom,
        default_split=default_split,
        prefetch=prefetch,
        progress=progress,
    )
    typer.echo(json.dumps(summary.to_dict(), indent=2))
    if summary.series_failed:
        typer.secho(
            f"{summary.series_failed} series could not be fetched (see {out}/errors.jsonl)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(code=1)


COMMANDS = {"build": build}
