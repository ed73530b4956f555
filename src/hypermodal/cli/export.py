"""``hypermodal export``: a model as an ONNX bundle that predicts without PyTorch (fp32 or int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hypermodal.cli._common import (
    NonNegative,
    Positive,
    ProgressOption,
    echo_json,
    output_file,
)
from hypermodal.common.errors import OutputError

#: what a bundle's file name ends in
BUNDLE_SUFFIX = ".onnx.zip"


def export(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="A checkpoint (.pt) from train or crossval, or an fp32 ONNX bundle (.onnx.zip).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="FILE", help="The bundle to write (.onnx.zip)."),
    ],
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Quantise to int8 (static, calibrated on real images)."),
    ] = False,
    calibration: Annotated[
        list[Path] | None,
        typer.Option(
            "--calibration",
            metavar="PATH",
            help="Files or folders of real images that calibrate --int8 (repeatable; default: "
            "the bundled sample corpus).",
        ),
    ] = None,
    calibration_images: Annotated[
        int,
        typer.Option(metavar="N", help="Calibration images at most.", callback=Positive),
    ] = 256,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Which images calibrate.", callback=NonNegative)
    ] = 0,
    progress: ProgressOption = True,
) -> None:
    """Write MODEL as an ONNX bundle that `predict --model` runs on ONNX Runtime.

    From a .pt checkpoint this needs PyTorch (the train extra); an fp32 bundle (the bundled
    default model included) can be quantised with --int8 in the light install. The JSON on
    stdout gives the bundle's size and digest and, for --int8, its agreement with fp32 on the
    calibration images.
    """
    output_file(out, ".zip", what="the ONNX bundle")
    if not out.name.lower().endswith(BUNDLE_SUFFIX):
        raise OutputError(f"{out}: the ONNX bundle is written as {BUNDLE_SUFFIX}")
    if not model.is_file():
        raise FileNotFoundError(f"model {model} does not exist")
    if calibration and not int8:
        raise ValueError("--calibration is only used with --int8")
    for path in calibration or []:
        if not path.exists():
            raise FileNotFoundError(f"calibration input {path} does not exist")
    from hypermodal.inference.onnx_export import export_onnx

    summary = export_onnx(
        model,
        out,
        int8=int8,
        calibration=list(calibration) if calibration else None,
        calibration_images=calibration_images,
        seed=seed,
        progress=progress,
    )
    typer.echo(f"wrote {out} ({summary['bytes'] / 1e6:.1f} MB, {summary['precision']})", err=True)
    echo_json(summary)
