"""Commands that turn images into training data: ``catalog``, ``split``, ``store``, ``shard``,
``synth``, and ``info``, which describes any of their outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hypermodal.cli._common import (
    EngineOption,
    MemoryLimitOption,
    NonNegative,
    Positive,
    ProgressOption,
    RayAddressOption,
    TimeoutOption,
    above,
    at_least,
    echo_json,
    output_file,
    output_folders,
    parse_caps,
    parse_ratios,
)

CatalogArgument = Annotated[Path, typer.Argument(metavar="CATALOG", help="Catalog Parquet.")]
WorkersOption = Annotated[
    int | None,
    typer.Option(metavar="N", help="Processes (default: all cores).", callback=Positive),
]
#: the smallest side a store's images may have
MIN_SIZE = 8
SizeOption = Annotated[
    int,
    typer.Option(
        metavar="PIXELS", help="Side of the stored square images.", callback=at_least(MIN_SIZE)
    ),
]
SeedOption = Annotated[
    int, typer.Option(metavar="N", help="Seed of the automatic split.", callback=NonNegative)
]


def catalog(
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", help="Folders (one sub-folder per dataset) or files."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE", help="Catalog Parquet file to write.")
    ],
    classes: Annotated[
        str | None, typer.Option(metavar="CLASSES", help="Class order, e.g. CT,MR,PT,XR,OTHER.")
    ] = None,
    other: Annotated[
        str | None, typer.Option(metavar="CLASS", help="Class for modalities outside the map.")
    ] = None,
    workers: WorkersOption = None,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    timeout: TimeoutOption = None,
    memory_limit: MemoryLimitOption = None,
    progress: ProgressOption = True,
) -> None:
    """Build the catalog (one row per 2D image) from headers only."""
    from hypermodal.catalog import build_catalog, errors_path
    from hypermodal.common.isolation import DecodeLimits
    from hypermodal.labels import ClassVocabulary

    limits = DecodeLimits.from_options(timeout, memory_limit)

    output_file(out, ".parquet", what="the catalog")
    vocab = ClassVocabulary.from_options(classes=classes, other=other)
    summary = build_catalog(
        inputs,
        out,
        vocabulary=vocab,
        workers=workers,
        progress=progress,
        engine=engine,
        ray_address=ray_address,
        limits=limits,
    )
    echo_json({**summary.to_dict(), "catalog": str(out), "errors": str(errors_path(out))})


def split(
    catalog_path: CatalogArgument,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE", help="Split file to write (JSON).")
    ],
    split_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Explicit dataset→split file (JSON/YAML/CSV)."),
    ] = None,
    ratios: Annotated[
        str, typer.Option(metavar="TRAIN,VAL,TEST", help="Target train,validate,test shares.")
    ] = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    cap: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CLASS=N", help="Per-dataset cap CLASS=N (default CT=50000 MR=100000)."
        ),
    ] = None,
    no_caps: Annotated[bool, typer.Option("--no-caps", help="Keep every image.")] = False,
    keep_localizers: Annotated[bool, typer.Option(help="Keep CT/MR scout images.")] = False,
    cap_order: Annotated[
        str,
        typer.Option(
            metavar="ORDER", help="Which images a cap keeps: catalog (first, the paper) | spread."
        ),
    ] = "catalog",
    force: Annotated[bool, typer.Option(help="Replace an existing split file.")] = False,
) -> None:
    """Assign every dataset to exactly one split (written once, then reused)."""
    from hypermodal.catalog import read_catalog
    from hypermodal.split import split_or_reuse

    output_file(out, ".json", what="the split file")
    shares, caps = parse_ratios(ratios), parse_caps(cap, no_caps)
    df = read_catalog(catalog_path)
    plan, reused = split_or_reuse(
        df,
        out,
        split_file=split_file,
        force=force,
        ratios=shares,
        seed=seed,
        caps=caps,
        exclude_localizers=not keep_localizers,
        cap_order=cap_order,
    )
    typer.echo(f"{'reused' if reused else 'wrote'} split {out} (hash {plan.hash})", err=True)
    if plan.synthetic_datasets:
        typer.echo(f"{plan.synthetic_datasets} synthetic dataset(s) kept in train", err=True)
    echo_json(plan.quality)


def store(
    catalog_path: CatalogArgument,
    split_path: Annotated[
        Path, typer.Option("--split", metavar="FILE", help="Split file from `hypermodal split`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Store folder.")],
    size: SizeOption = 224,
    workers: WorkersOption = None,
    force: Annotated[bool, typer.Option(help="Rebuild a finished store.")] = False,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    timeout: TimeoutOption = None,
    memory_limit: MemoryLimitOption = None,
    progress: ProgressOption = True,
) -> None:
    """Preprocess the selected slices (224×224, per-image min-max, uint8) into the store."""
    from hypermodal.catalog import catalog_vocabulary, read_catalog
    from hypermodal.common.isolation import DecodeLimits
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.split import SplitPlan, apply_split
    from hypermodal.store import META_FILE, build_store

    if (out / META_FILE).exists() and not force:
        typer.echo(f"{out} is already a finished store (use --force to rebuild)", err=True)
        return
    output_folders(out)
    limits = DecodeLimits.from_options(timeout, memory_limit)
    plan = SplitPlan.load(split_path)
    selected = apply_split(read_catalog(catalog_path), plan)
    summary = build_store(
        selected,
        out,
        vocabulary=catalog_vocabulary(catalog_path),
        preprocess=PreprocessConfig(size=size),
        split_hash=plan.hash,
        workers=workers,
        progress=progress,
        extra_meta={"catalog": str(catalog_path), "split_file": str(split_path)},
        engine=engine,
        ray_address=ray_address,
        replace=force,
        limits=limits,
    )
    echo_json(summary.__dict__)


def shard(
    store: Annotated[
        Path,
        typer.Argument(metavar="STORE", help="A finished store folder (`hypermodal store`)."),
    ],
    out: Annotated[
        str, typer.Option("--out", metavar="DEST", help="Output folder or s3://bucket/prefix.")
    ],
    shard_mb: Annotated[
        float,
        typer.Option(
            "--shard-mb",
            metavar="MIB",
            help="Shard size in MiB (256 → 5,349 images at 224²).",
            callback=above(0),
        ),
    ] = 256,
    seed: Annotated[
        int,
        typer.Option(
            metavar="N", help="Seed of the export-time shuffle of each split.", callback=NonNegative
        ),
    ] = 0,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url",
            metavar="URL",
            help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS).",
        ),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Cut a store into raw uint8 shards + a Parquet index, locally or on S3 (train from them
    with hypermodal.store.shards.ShardFeeder)."""
    from hypermodal.store.shards import export_shards

    if "://" not in out:
        output_folders(Path(out))
    summary = export_shards(
        store, out, shard_mb=shard_mb, seed=seed, endpoint_url=endpoint_url, progress=progress
    )
    echo_json(summary.to_dict())


def synth(
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="Folder to write into (one sub-folder per class)."),
    ],
    n: Annotated[
        int, typer.Option("--n", metavar="N", help="Files per class.", callback=Positive)
    ] = 100,
    classes: Annotated[
        str,
        typer.Option(
            "--classes", metavar="CLASSES", help="Comma-separated classes: CT, MR, PT, XR."
        ),
    ] = "CT,MR,PT,XR",
    compress: Annotated[
        str,
        typer.Option(metavar="CODEC", help="none, rle, jpeg2000 or jpegls (lossless encoders)."),
    ] = "none",
    frames: Annotated[
        int,
        typer.Option(metavar="N", help="Slices per file (multi-frame if > 1).", callback=Positive),
    ] = 1,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Same seed, same files.", callback=NonNegative)
    ] = 0,
    progress: ProgressOption = True,
) -> None:
    """Write synthetic CT/MR/PET/X-ray-like DICOM files. Never use them for accuracy claims."""
    from hypermodal.sources.synthetic import write_synthetic

    output_folders(out)
    names = [c for c in (x.strip() for x in classes.split(",")) if c]
    paths = write_synthetic(
        out, n, names, seed=seed, compress=compress, frames=frames, progress=progress
    )
    echo_json(
        {
            "out": str(out),
            "files": len(paths),
            "slices": len(paths) * frames,
            "bytes": sum(p.stat().st_size for p in paths),
            "compress": compress,
        }
    )


def info(
    path: Annotated[
        Path,
        typer.Argument(metavar="PATH", help="A catalog, split file, store or checkpoint."),
    ],
) -> None:
    """Describe a catalog, split file, store folder or checkpoint."""
    if path.is_dir():
        from hypermodal.store import SliceStore

        st = SliceStore.open(path)
        echo_json({k: v for k, v in st.meta.items()})
    elif path.suffix == ".parquet":
        from hypermodal.catalog import read_catalog

        df = read_catalog(path)
        echo_json(
            {
                "images": len(df),
                "datasets": int(df["dataset"].nunique()),
                "per_class": df["label"].value_counts().to_dict(),
            }
        )
    elif path.suffix in (".pt", ".zip"):  # a checkpoint, or an ONNX bundle (.onnx.zip)
        from hypermodal.inference import load_model

        loaded = load_model(path)
        echo_json({"classes": list(loaded.vocabulary.classes), **loaded.meta})
    elif path.suffix == ".json":
        echo_json(json.loads(path.read_text()))
    else:
        raise ValueError(f"don't know how to describe {path}")
