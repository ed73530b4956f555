"""``hypermodal crossval``: every real dataset of a corpus predicted by models that never saw it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hypermodal.cli._common import (
    NonNegative,
    Positive,
    ProgressOption,
    echo_json,
    fail,
    output_file,
    output_folders,
)


def _folds(value: str) -> str | int:
    if value == "dataset":
        return value
    try:
        k = int(value)
    except ValueError:
        raise fail(f"folds must be 'dataset' or an integer >= 2, got {value!r}") from None
    if k < 2:
        raise fail(f"folds must be 'dataset' or an integer >= 2, got {value!r}")
    return k


def crossval(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")],
    samples_dir: Annotated[
        Path | None,
        typer.Option(
            "--samples", metavar="DIR", help="Corpus folder (default: the bundled samples)."
        ),
    ] = None,
    folds: Annotated[
        str,
        typer.Option(
            metavar="DATASET|K",
            help="Folds of the feature model: dataset (one per dataset) or a number.",
        ),
    ] = "dataset",
    pixel_folds: Annotated[
        str,
        typer.Option(metavar="DATASET|K|NONE", help="Folds of the CNN ('none': no CNN)."),
    ] = "6",
    simulate: Annotated[
        bool, typer.Option(help="Add simulated X-ray/PET and exports to training.")
    ] = True,
    size: Annotated[int, typer.Option(metavar="PIXELS", help="Store and CNN image size.")] = 96,
    pixel_steps: Annotated[int, typer.Option(metavar="N", help="CNN batches per fold.")] = 300,
    seed: Annotated[
        int,
        typer.Option(metavar="N", help="Seed of folds, models, simulation.", callback=NonNegative),
    ] = 0,
    save_model: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Also train the final model on everything, here."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Decoding processes.", callback=Positive)
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Leave-one-dataset-out evaluation of every evidence mode (pixels, features, header, fused)."""
    from hypermodal.crossval import run_crossval
    from hypermodal.crossval.run import HEADLINE_KEYS

    if samples_dir is not None and not samples_dir.is_dir():
        raise fail(f"corpus folder {samples_dir} does not exist")
    if size < 32 or pixel_steps < 1:
        raise fail("--size must be at least 32 and --pixel-steps at least 1")
    output_folders(out)
    if save_model is not None:
        output_file(save_model, ".pt", what="the model")
    metrics = run_crossval(
        out,
        samples_dir,
        simulate=simulate,
        folds=_folds(folds),
        pixel_folds=None if pixel_folds == "none" else _folds(pixel_folds),
        size=size,
        pixel_steps=pixel_steps,
        seed=seed,
        workers=workers,
        progress=progress,
        save_model=save_model,
    )
    typer.echo(f"report: {out / 'report.md'}", err=True)
    echo_json(
        {
            "modes": {m: {k: s.get(k) for k in HEADLINE_KEYS} for m, s in metrics["modes"].items()},
            "notes": metrics["notes"],
            "simulated_share_of_training": metrics["simulated_share_of_training"],
            "model": metrics.get("model"),
        }
    )
