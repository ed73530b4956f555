"""``hypermodal fetch``: resumable, verified downloads from IDC, TCIA and DICOMweb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def fetch(
    to: Annotated[Path, typer.Option("--to", help="Target folder: DIR/<dataset>/<series>/.")],
    plan: Annotated[
        Path | None,
        typer.Argument(help="Plan Parquet from `hypermodal plan` (one row per series)."),
    ] = None,
    dicomweb: Annotated[
        str | None, typer.Option(help="Take every series of this DICOMweb server (no plan).")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="Dataset folder name for --dicomweb series.")
    ] = "dicomweb",
    workers: Annotated[int, typer.Option(help="Series downloaded at once.")] = 4,
    retries: Annotated[int, typer.Option(help="Attempts per series and per request.")] = 4,
    backoff: Annotated[float, typer.Option(help="First retry delay in seconds (doubles).")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Per-request time-out in seconds.")] = 60.0,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint for IDC (default: AWS).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be fetched and its size.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Retry series an earlier run marked failed.")
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars (series and bytes).")] = True,
) -> None:
    """Download planned series (or a whole DICOMweb server) into --to, verified and resumable."""
    from hypermodal.sources.fetch import (
        FetchOptions,
        fetch_plan,
        read_plan,
    )
    from hypermodal.sources.fetch import (
        dry_run as plan_dry_run,
    )

    if (plan is None) == (dicomweb is None):
        raise ValueError("give either a PLAN file or --dicomweb URL (not both)")
    opts = FetchOptions.from_cli(
        workers,
        retries,
        backoff,
        timeout,
        s3_endpoint,
        progress=progress,
        retry_failed=retry_failed,
    )
    if dicomweb is not None:
        from hypermodal.sources.fetch.dicomweb import list_series

        rows = list_series(dicomweb, dataset=dataset, timeout_s=timeout)
    else:
        assert plan is not None
        skipped: list[dict] = []
        rows = read_plan(plan, skipped)
        if skipped:
            typer.echo(f"{len(skipped)} plan rows have no fetchable source; skipped", err=True)
    if dry_run:
        report = plan_dry_run(rows, to)
        for r in report.pop("rows"):
            size = f"{r['size_MB']:.1f} MB" if r["size_MB"] is not None else "size unknown"
            images = r["images"] if r["images"] is not None else "?"
            typer.echo(f"{r['source']}\t{r['dataset']}/{r['series']}\t{images} images\t{size}")
        typer.echo(json.dumps(report, indent=2))
        return
    summary = fetch_plan(rows, to, opts)
    typer.echo(json.dumps(summary.to_dict(), indent=2))
    if summary.failed:
        typer.secho(
            f"{summary.failed} series failed (see {to}/.fetch/journal.sqlite); rerun to retry",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(code=1)


COMMANDS = {"fetch": fetch}
