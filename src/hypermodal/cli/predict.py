"""``hypermodal predict``: classify files and folders, or a DICOMweb server in place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hypermodal.cli._common import (
    EngineOption,
    MemoryLimitOption,
    Positive,
    ProgressOption,
    RayAddressOption,
    TimeoutOption,
    device_option,
    echo_json,
    output_file,
)
from hypermodal.cli._series_query import (
    LimitOption,
    ModalityOption,
    PatientOption,
    SampleOption,
    SampleSeedOption,
    StudyDateOption,
    StudyOption,
    series_query,
)

TABLE_SUFFIXES = (".csv", ".parquet")
#: images decoded per series unless told otherwise (the value of ``inference.DEFAULT_SLICES``,
#: kept here so that ``--help`` needs no import of the model code)
DEFAULT_SLICES = 8


def predict(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="FILE", help="Per-series table (.csv or .parquet)."),
    ],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="PATH", help="Files and folders to classify."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            metavar="FILE",
            help="A checkpoint (.pt) from `hypermodal train` or an ONNX bundle (.onnx.zip) from "
            "`hypermodal export` (default: the bundled model).",
        ),
    ] = None,
    images_out: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Also a per-image table (.csv or .parquet)."),
    ] = None,
    series_out: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="A second copy of the series table (older name)."),
    ] = None,
    slices: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Images decoded per series, spread through it, the middle one included.",
            callback=Positive,
        ),
    ] = DEFAULT_SLICES,
    all_slices: Annotated[
        bool, typer.Option("--all-slices", help="Decode every image of every series.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Also write the archive report here: index.html (counts, thumbnails of every "
            "conflict and UNKNOWN, a contact sheet per class, the confidence histogram) and the "
            "tables.",
        ),
    ] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Classify the series of this DICOMweb server in place (instead of PATHs): a "
            "few instances per series through WADO-RS, nothing kept.",
        ),
    ] = None,
    modality: ModalityOption = None,
    study_date: StudyDateOption = None,
    patient: PatientOption = None,
    study: StudyOption = None,
    limit: LimitOption = None,
    sample: SampleOption = "first",
    sample_seed: SampleSeedOption = 0,
    per_series: Annotated[
        int,
        typer.Option(
            metavar="N", help="DICOMweb: instances retrieved per series.", callback=Positive
        ),
    ] = 3,
    write_labels: Annotated[
        bool,
        typer.Option(
            "--write-labels",
            help="DICOMweb (Orthanc): put each answer on the server as a series label "
            "(hypermodal-<CLASS>), or as series metadata where labels are not supported.",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(metavar="N", help="Images per model call.", callback=Positive)
    ] = 64,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Decoding processes.", callback=Positive)
    ] = None,
    device: Annotated[
        str, typer.Option(metavar="DEVICE", help="auto | cpu | cuda.", callback=device_option)
    ] = "auto",
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    timeout: TimeoutOption = None,
    memory_limit: MemoryLimitOption = None,
    progress: ProgressOption = True,
) -> None:
    """Classify DICOM, NIfTI, NRRD and PNG/JPEG/TIFF files: one row per series or volume.

    Files are grouped into series from their headers and each series is decided from a few of
    its images (--slices). A summary goes to stderr, the counts as JSON to stdout. Inputs that
    hold no file at all are an error (exit 2); files none of which is an image give empty tables
    and a warning (exit 0).
    """
    output_file(out, *TABLE_SUFFIXES, what="the prediction table")
    if dicomweb is not None:
        if inputs:
            raise typer.BadParameter("give PATHs or --dicomweb URL, not both")
        if report is not None or images_out is not None:
            raise typer.BadParameter("--report and --images-out are for PATHs, not --dicomweb")
        query = series_query(modality, study_date, patient, study, limit, sample, sample_seed)
        from hypermodal.inference.pacs import classify_dicomweb

        pacs = classify_dicomweb(
            dicomweb,
            query,
            model,
            out,
            per_series=per_series,
            write_labels=write_labels,
            decode_workers=workers,
            device=device,
            slices=None if all_slices else slices,
            progress=progress,
            engine=engine,
            ray_address=ray_address,
            ray_workers=workers,
        )
        echo_json(pacs.to_dict())
        return
    if not inputs:
        raise typer.BadParameter("give the files or folders to classify, or --dicomweb URL")
    if write_labels or modality or study_date or patient or study or limit:
        raise typer.BadParameter("--write-labels and the DICOMweb filters need --dicomweb URL")
    for extra, what in ((images_out, "the image table"), (series_out, "the series table")):
        if extra is not None:
            output_file(extra, *TABLE_SUFFIXES, what=what)
    from hypermodal.common.isolation import DecodeLimits

    limits = DecodeLimits.from_options(timeout, memory_limit)
    from hypermodal.inference import predict as run_predict
    from hypermodal.inference import summary_dict, summary_text

    summary = run_predict(
        inputs,
        model,
        out,
        images_out=images_out,
        series_out=series_out,
        slices=None if all_slices else slices,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        engine=engine,
        ray_address=ray_address,
        limits=limits,
        report=report,
    )
    typer.echo(summary_text(summary, conflicts=_conflicts(out)), err=True)
    echo_json(summary_dict(summary))


def _conflicts(table: Path) -> Any:
    """The conflicting rows of a series table just written (for the summary on stderr)."""
    import pandas as pd

    cols = ["path", "header_label", "pixel_prediction", "feature_prediction", "prediction"]
    cols.append("agreement")
    csv = table.suffix.lower() == ".csv"
    df = pd.read_csv(table, usecols=cols) if csv else pd.read_parquet(table, columns=cols)
    return df[df["agreement"] == "conflict"]
