"""The ``simulate`` command: X-ray, PET and export images simulated from a samples folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hypermodal.cli._common import NonNegative, ProgressOption, above, echo_json, output_folders


def simulate(
    samples: Annotated[
        Path,
        typer.Argument(metavar="SAMPLES", help="Samples folder (`hypermodal samples DIR`)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for the simulated datasets.")
    ],
    seed: Annotated[
        int, typer.Option(metavar="N", help="Same seed, same files.", callback=NonNegative)
    ] = 0,
    scale: Annotated[
        float,
        typer.Option(metavar="X", help="How many images (1.0: about 600-1200).", callback=above(0)),
    ] = 1.0,
    progress: ProgressOption = True,
) -> None:
    """Simulate radiographs and PET from the real volumes, and PNG/JPEG exports of every
    dataset (training images only, never evidence of accuracy); prints the summary."""
    from hypermodal.sources.simulate import simulate_corpus

    output_folders(out)
    summary = simulate_corpus(samples, out, seed=seed, scale=scale, progress=progress)
    echo_json({**summary, "out": str(out)})
