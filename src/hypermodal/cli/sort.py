"""The ``sort`` command: an archive laid out by class, patient, study and series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hypermodal.cli._common import (
    MemoryLimitOption,
    Positive,
    ProgressOption,
    TimeoutOption,
    device_option,
    echo_json,
    fail,
    output_file,
    output_folders,
)

#: the ways ``sort`` places a file (``hypermodal.sort.place.MODES``; here so ``--help`` is fast)
MODES = ("symlink", "hardlink", "copy")
#: plan lines a dry run prints on stderr (the manifest holds them all)
SHOWN = 20
#: images ``predict`` decodes per series (``hypermodal.inference.DEFAULT_SLICES``)
DEFAULT_SLICES = 8


def _mode(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    if value not in MODES:
        raise fail(f"--mode must be one of {', '.join(MODES)}, got {value!r}")
    return value


def sort(
    sources: Annotated[
        list[Path], typer.Argument(metavar="SRC", help="Files and folders to sort.")
    ],
    to: Annotated[Path, typer.Option("--to", metavar="DST", help="Root of the sorted tree.")],
    mode: Annotated[
        str,
        typer.Option(metavar="MODE", help="symlink | hardlink | copy.", callback=_mode),
    ] = "symlink",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; create nothing.")
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", metavar="FILE", help="Checkpoint (default: bundled)."),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Reuse a series table from `hypermodal predict` instead of predicting.",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Manifest of source -> target (.csv or .parquet; default DST/sort-manifest.csv).",
        ),
    ] = None,
    slices: Annotated[
        int, typer.Option(metavar="N", help="Images decoded per series.", callback=Positive)
    ] = DEFAULT_SLICES,
    all_slices: Annotated[
        bool, typer.Option("--all-slices", help="Decode every image of every series.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Decoding processes.", callback=Positive)
    ] = None,
    device: Annotated[
        str, typer.Option(metavar="DEVICE", help="auto | cpu | cuda.", callback=device_option)
    ] = "auto",
    timeout: TimeoutOption = None,
    memory_limit: MemoryLimitOption = None,
    progress: ProgressOption = True,
) -> None:
    """Lay files out as DST/CLASS/PATIENT/STUDY/SERIES/FILE by the decision of their series.

    Never overwrites: a name taken by another file gets a numbered name, a file already in
    place is skipped, so a rerun (also after a kill) only adds what is missing. Unreadable files
    are listed in the manifest, not placed.
    """
    if predictions is not None and not predictions.is_file():
        raise fail(f"--predictions {predictions}: no such file")
    if not dry_run:
        output_folders(to)
    if manifest is not None:
        output_file(manifest, ".csv", ".parquet", what="the manifest")
    from hypermodal.common.isolation import DecodeLimits

    limits = DecodeLimits.from_options(timeout, memory_limit)
    from hypermodal.sort import sort_archive, summary_text

    summary = sort_archive(
        sources,
        to,
        mode=mode,  # type: ignore[arg-type]
        dry_run=dry_run,
        model=model,
        predictions=predictions,
        manifest=manifest,
        slices=None if all_slices else slices,
        workers=workers,
        device=device,
        progress=progress,
        limits=limits,
    )
    shown = summary.plan.head(SHOWN) if dry_run and summary.plan is not None else None
    typer.echo(summary_text(summary, shown), err=True)
    echo_json(summary.to_dict())
