"""Commands that train and use a model: ``train``, ``evaluate`` and ``demo``
(``predict``: :mod:`hypermodal.cli.predict`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hypermodal.cli._common import (
    NonNegative,
    Positive,
    above,
    at_least,
    device_option,
    echo_json,
    output_folders,
)

#: where ``hypermodal demo`` writes unless told otherwise
DEMO_OUT = Path("demo-out")
StoreArgument = Annotated[Path, typer.Argument(metavar="STORE", help="Store folder.")]
#: the smallest side a network is trained at (``TrainConfig.train_size``)
MIN_TRAIN_SIZE = 32


def train(
    store_path: StoreArgument,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Run folder (logs, checkpoints)."),
    ],
    config: Annotated[
        Path | None, typer.Option(metavar="FILE", help="YAML/JSON config; flags override it.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(metavar="NAME", help="resnet18 | resnet50 | vgg16.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(metavar="N", help="Epochs (paper: 10).", callback=Positive)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(metavar="N", help="Batch size (paper: 128).", callback=Positive)
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(metavar="RATE", help="Learning rate (paper: 0.1).", callback=above(0)),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Random seed.", callback=NonNegative)
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(metavar="DEVICE", help="auto | cpu | cuda | cuda:N.", callback=device_option),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help="Data-loader workers (0: none).", callback=NonNegative),
    ] = None,
    balance: Annotated[
        bool | None, typer.Option("--balance/--no-balance", help="Class-balanced sampling.")
    ] = None,
    max_images_per_epoch: Annotated[
        int | None, typer.Option(metavar="N", help="Cap per epoch.", callback=Positive)
    ] = None,
    train_size: Annotated[
        int | None,
        typer.Option(
            metavar="PIXELS",
            help="Train at this side (≤ store size).",
            callback=at_least(MIN_TRAIN_SIZE),
        ),
    ] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Flips, turns, crops.")
    ] = None,
    checkpoint_every_steps: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Also write last.pt every N steps (resume mid-epoch).",
            callback=Positive,
        ),
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option(
            metavar="MODE",
            help="pixels (the CNN alone, the paper) | all (also fit the feature forest on "
            "train and the fusion on validate, saved in the checkpoints).",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a classifier on the store's train split, validating on its validate split."""
    output_folders(out)
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
        evidence=evidence,
    )
    saved = out / "config.json"
    if resume and config is None and all(v is None for v in overrides.values()):
        cfg = None  # continue with the recipe saved in last.pt
    else:
        base = saved if resume and config is None and saved.exists() else config
        cfg = _load_train_config(base, **overrides)
    summary = run_training(store_path, out, cfg, resume=resume, progress=progress)
    if summary.get("rank", 0) == 0:  # under torchrun every rank returns; one prints
        echo_json(summary)


def _load_train_config(path: Path | None, **overrides: Any) -> Any:
    """The recipe from ``path`` (YAML/JSON, or a run folder's ``config.json``) plus overrides.

    Raises:
        ValueError: The file holds no mapping, or names options :class:`TrainConfig` lacks.
    """
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


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint (.pt).")],
    store_path: StoreArgument,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for metrics and report.")
    ],
    split_name: Annotated[
        str, typer.Option("--split", metavar="SPLIT", help="train | validate | test.")
    ] = "test",
    history: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="history.csv of the run (default: beside the checkpoint)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(metavar="N", help="Inference batch size.", callback=Positive)
    ] = 256,
) -> None:
    """Accuracy, balanced accuracy, confusion matrix, per-dataset table, figures and report."""
    output_folders(out)
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
    reason = metrics["paper_comparison"]["reason"]
    if reason:
        typer.echo(f"note: {reason}", err=True)
    keys = ("balanced_accuracy", "accuracy", "classes", "num_images", "paper_comparison")
    echo_json({k: metrics[k] for k in keys})


def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")
    ] = DEMO_OUT,
    samples_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where the sample corpus goes (default OUT/samples)."),
    ] = None,
    model: Annotated[
        str, typer.Option(metavar="NAME", help="resnet18 | resnet50 | vgg16.")
    ] = "resnet18",
    epochs: Annotated[
        int, typer.Option(metavar="N", help="Training epochs.", callback=Positive)
    ] = 12,
    train_size: Annotated[
        int,
        typer.Option(
            metavar="PIXELS",
            help="Training resolution (store stays 224).",
            callback=at_least(MIN_TRAIN_SIZE),
        ),
    ] = 112,
    max_images_per_epoch: Annotated[
        int, typer.Option(metavar="N", help="Images per epoch.", callback=Positive)
    ] = 1024,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed for split and training.", callback=NonNegative)
    ] = 0,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help="Processes for catalog/store.", callback=Positive),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run samples → catalog → split → store → train → evaluate → report on real images."""
    output_folders(out, samples_dir)
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
    echo_json(result)
