"""``hypermodal synth``: write a synthetic DICOM workload (throughput and memory tests only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write into (one sub-folder per class).")],
    n: Annotated[int, typer.Option("--n", help="Files per class.")] = 100,
    classes: Annotated[
        str, typer.Option("--classes", help="Comma-separated classes: CT, MR, PT, XR.")
    ] = "CT,MR,PT,XR",
    compress: Annotated[
        str, typer.Option(help="none, rle, jpeg2000 or jpegls (lossless encoders).")
    ] = "none",
    frames: Annotated[int, typer.Option(help="Slices per file (multi-frame when > 1).")] = 1,
    seed: Annotated[int, typer.Option(help="Same seed, same files.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Write synthetic CT/MR/PET/X-ray-like DICOM files. Never use them for accuracy claims."""
    from hypermodal.sources.synthetic import write_synthetic

    names = [c for c in (x.strip() for x in classes.split(",")) if c]
    paths = write_synthetic(
        out, n, names, seed=seed, compress=compress, frames=frames, progress=progress
    )
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "files": len(paths),
                "slices": len(paths) * frames,
                "bytes": sum(p.stat().st_size for p in paths),
                "compress": compress,
            },
            indent=2,
        )
    )


COMMANDS = {"synth": synth}
