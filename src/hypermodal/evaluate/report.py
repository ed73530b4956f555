"""A Markdown report of one evaluation, next to the paper's numbers.

:func:`write_report` turns the ``metrics`` dict of :func:`hypermodal.evaluate.run.evaluate` into
``report.md``: headline balanced accuracy and accuracy beside the paper's Table 2
(:mod:`hypermodal.evaluate.headline`, with the warning a degenerate split needs and the simulated
share of training), the evidence modes (pixels, features, header, fused), the confusion
matrix, per-class and per-dataset tables (Table 3), images per class per split (Fig. 3), the
figures (linked relatively, so the folder can be moved), training time (Fig. 5), and a
reproducibility section. It says plainly when a class has no data and when the corpus is far too
small to compare with the paper's 4.5 million images.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.files import write_text_atomic
from hypermodal.evaluate.headline import evidence_section, headline_section
from hypermodal.evaluate.history import read_history
from hypermodal.evaluate.markdown import duration as _duration
from hypermodal.evaluate.markdown import num as _num
from hypermodal.evaluate.markdown import pct as _pct
from hypermodal.evaluate.markdown import table as _table

REPORT_FILE = "report.md"

#: Images the paper trained/evaluated on (§2.2: 4.5 million after curation).
PAPER_CORPUS_IMAGES = 4_500_000
#: Below this many images in the whole store, results are flagged as not comparable.
SMALL_CORPUS = 100_000


def honesty_notes(metrics: dict[str, Any]) -> list[str]:
    """Caveats a reader must see before the numbers (missing classes, corpus size...)."""
    notes: list[str] = []
    split = metrics.get("split", "test")
    counts: dict[str, dict[str, int]] = metrics.get("class_counts") or {}
    classes = list(metrics.get("model_classes") or metrics.get("classes") or [])
    no_data = [c for c in classes if counts and not any(counts[s].get(c, 0) for s in counts)]
    if no_data:
        notes.append(
            f"**No data at all for {', '.join(no_data)}** in this store (no training, validation "
            "or test images): the model has never seen these classes, and they are left out of "
            "balanced accuracy. The paper's four-class numbers are therefore not comparable."
        )
    no_train = [
        c for c in classes if c not in no_data and counts and not counts.get("train", {}).get(c, 0)
    ]
    if no_train:
        notes.append(f"No training images of {', '.join(no_train)}.")
    missing_test = [c for c in metrics.get("missing_classes") or [] if c not in no_data]
    if missing_test:
        notes.append(
            f"No {split} images of {', '.join(missing_test)}: these classes are left out of "
            "balanced accuracy (mean recall over the classes present)."
        )
    total = int(metrics.get("corpus_images") or 0)
    if total < SMALL_CORPUS:
        notes.append(
            f"**Tiny corpus**: {total:,} images in the whole store "
            f"({int(metrics.get('num_images') or 0):,} in the {split} split) against the "
            f"paper's ~{PAPER_CORPUS_IMAGES / 1e6:.1f} million. "
            "These numbers exercise the pipeline; they are not comparable with the paper's and "
            "say little about performance on an archive."
        )
    if split != "test":
        notes.append(f"Evaluated on the **{split}** split, not the held-out test split.")
    for extra in metrics.get("notes") or []:
        notes.append(str(extra))
    demo = metrics.get("demo") or {}
    if isinstance(demo, dict) and demo.get("note"):
        notes.append(str(demo["note"]))
    return notes


def _confusion(metrics: dict[str, Any], classes: list[str]) -> list[str]:
    parts = ["## Confusion matrix\n"]
    cm = metrics.get("confusion_matrix") or []
    if cm:
        cm_rows = []
        for i, name in enumerate(classes):
            n = sum(cm[i])
            recall = _pct(cm[i][i] / n) if n else "n/a (no images)"
            cm_rows.append([f"**{name}**", *[f"{v:,}" for v in cm[i]], f"{n:,}", recall])
        header = ["true \\ predicted", *classes, "total", "recall"]
        parts.append(_table(header, cm_rows, "l" + "r" * (len(classes) + 2)))
    parts.append("\n![Confusion matrix](confusion_matrix.png)\n")
    per_class = metrics.get("per_class") or []
    if per_class:
        rows = [
            [
                r["class"],
                f"{r['n_true']:,}",
                f"{r['n_predicted']:,}",
                f"{r['correct']:,}",
                _pct(r.get("recall")),
                _pct(r.get("precision")),
            ]
            for r in per_class
        ]
        header = ["class", "true images", "predicted", "correct", "recall", "precision"]
        parts += ["### Per class\n", _table(header, rows, "lrrrrr") + "\n"]
    return parts


def _per_dataset(metrics: dict[str, Any], split: str) -> list[str]:
    parts = ["## Accuracy per dataset (paper Table 3)\n"]
    per_dataset = metrics.get("per_dataset") or []
    if not per_dataset:
        return [*parts, f"No {split} images.\n"]
    rows = [
        [r["dataset"], r["label"], f"{r['n']:,}", f"{r['correct']:,}", _pct(r["accuracy"])]
        for r in per_dataset
    ]
    header = ["dataset", "true class", "images", "correct", "accuracy"]
    return [*parts, _table(header, rows, "llrrr") + "\n"]


def _class_counts(metrics: dict[str, Any]) -> list[str]:
    parts = ["## Images per class per split (paper Fig. 3)\n"]
    counts: dict[str, dict[str, int]] = metrics.get("class_counts") or {}
    if counts:
        splits = list(counts)
        names = list(next(iter(counts.values())).keys())
        count_rows = [[c, *[f"{counts[s].get(c, 0):,}" for s in splits]] for c in names]
        count_rows.append(["**total**", *[f"**{sum(counts[s].values()):,}**" for s in splits]])
        parts.append(_table(["class", *splits], count_rows, "l" + "r" * len(splits)))
    parts.append("\n![Images per class per split](class_counts.png)\n")
    return parts


#: History columns shown in the report: column, heading, format.
_HISTORY_COLUMNS = (
    ("epoch", "epoch", lambda v: str(int(v))),
    ("train_loss", "train loss", lambda v: _num(v, 4)),
    ("train_accuracy", "train acc", _pct),
    ("val_loss", "val loss", lambda v: _num(v, 4)),
    ("val_accuracy", "val acc", _pct),
    ("lr", "lr", lambda v: f"{float(v):.3g}"),
    ("seconds", "seconds", lambda v: _num(v, 1)),
    ("images_per_s", "images/s", lambda v: _num(v, 1)),
)


def _curves(history: pd.DataFrame) -> list[str]:
    parts = ["## Training curves (paper Fig. 4)\n", "![Accuracy and loss per epoch](curves.png)\n"]
    if history.empty:
        return parts
    present = [c for c in _HISTORY_COLUMNS if c[0] in history]
    rows = [[fmt(r[key]) for key, _, fmt in present] for _, r in history.iterrows()]
    parts.append(_table([c[1] for c in present], rows, "r" * len(present)) + "\n")
    if history.get("val_loss") is not None and history["val_loss"].isna().all():
        parts.append(
            "The validation split was empty: the learning-rate scheduler and the best "
            "checkpoint used the training loss.\n"
        )
    return parts


def _timing(metrics: dict[str, Any]) -> list[str]:
    training = metrics.get("training") or {}
    row = [
        training.get("epochs", "n/a"),
        _duration(training.get("seconds")),
        _num(training.get("mean_images_per_s")),
        training.get("device") or "n/a",
    ]
    header = ["epochs", "total training time", "mean images/s", "device"]
    parts = [
        "## Training time (paper Fig. 5)\n",
        _table(header, [row], "rrrl"),
        "\nTraining time counts the training and validation passes of every epoch (checkpoint "
        "writing excluded); the paper reports hours on two GTX 1080 Ti.\n",
        "![Training time](training_time.png)\n",
    ]
    pred = metrics.get("prediction") or {}
    if pred:
        parts.append(
            f"Prediction: {int(metrics.get('num_images') or 0):,} images in "
            f"{_duration(pred.get('seconds'))} = {_num(pred.get('images_per_s'))} images/s on "
            f"{pred.get('device', 'n/a')} (batch {pred.get('batch_size', 'n/a')}; timed: "
            f"{pred.get('timed', 'n/a')}).\n"
        )
    demo = metrics.get("demo") or {}
    stages = demo.get("stage_seconds") if isinstance(demo, dict) else None
    if stages:
        rows = [[name, f"{float(sec):.1f}"] for name, sec in stages.items()]
        rows.append(["**total**", f"**{sum(float(v) for v in stages.values()):.1f}**"])
        parts += ["## Pipeline stages\n", _table(["stage", "seconds"], rows, "lr")]
        if demo.get("store_images_per_second"):
            rate = float(demo["store_images_per_second"])
            parts.append(f"\nStore build rate: {rate:,.0f} images/s.\n")
    return parts


def _reproducibility(metrics: dict[str, Any]) -> list[str]:
    config = metrics.get("resolved_config") or metrics.get("config") or {}
    repro = [
        ["seed", metrics.get("seed", config.get("seed", "n/a"))],
        ["split hash (training)", f"`{metrics.get('split_hash')}`"],
        ["split hash (evaluated store)", f"`{metrics.get('store_split_hash')}`"],
        ["store", f"`{metrics.get('store_path')}`"],
        ["checkpoint", f"`{metrics.get('checkpoint')}` (epoch {metrics.get('checkpoint_epoch')})"],
        ["checkpoint sha256", f"`{metrics.get('checkpoint_sha256')}`"],
        [
            "input",
            f"{metrics.get('train_size')} px, preprocessing "
            f"`{json.dumps(metrics.get('preprocess'))}`",
        ],
    ]
    parts = [
        "## Reproducibility\n",
        _table(["", ""], repro),
        "\nTraining config (resolved):\n",
        "```json\n" + json.dumps(config, indent=2, default=str) + "\n```\n",
    ]
    versions = metrics.get("training_versions") or metrics.get("versions") or {}
    if versions:
        parts.append("Package versions (training run):\n")
        parts.append(_table(["package", "version"], [[k, v] for k, v in versions.items()]) + "\n")
    eval_versions = metrics.get("versions") or {}
    if eval_versions and eval_versions != versions:
        changed = {
            k: (versions.get(k), v) for k, v in eval_versions.items() if versions.get(k) != v
        }
        if changed:
            rows = [[k, a, b] for k, (a, b) in changed.items()]
            parts.append("Versions that differ at evaluation time:\n")
            parts.append(_table(["package", "training", "evaluation"], rows) + "\n")
    return parts


def write_report(
    out_dir: Path | str,
    metrics: dict[str, Any],
    history_csv: Path | str | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Write ``out_dir/report.md`` from an evaluation's metrics.

    Args:
        out_dir: the evaluation folder (figures are linked relative to it).
        metrics: the dict returned by :func:`hypermodal.evaluate.run.evaluate` (or read back from
            ``metrics.json``).
        history_csv: the run's ``history.csv``; default: the history inside ``metrics``.
        title: report heading.

    Returns:
        Path of the report.
    """
    out_dir = Path(out_dir)
    model = str(metrics.get("model") or "?")
    split = str(metrics.get("split") or "test")
    classes: list[str] = list(metrics.get("classes") or [])
    parts = [
        f"# {title or f'Modality classification: {model} on the {split} split'}\n",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by hypermodal "
        f"{(metrics.get('versions') or {}).get('hypermodal', '')}. "
        f"{int(metrics.get('num_images') or 0):,} {split} images, classes "
        f"{', '.join(classes) or 'n/a'}.\n",
    ]
    notes = honesty_notes(metrics)
    if notes:
        parts += ["## Read this first\n", "\n".join(f"- {n}" for n in notes) + "\n"]
    parts += headline_section(metrics, split)
    parts += evidence_section(metrics)
    parts += _confusion(metrics, list(metrics.get("confusion_labels") or classes))
    parts += _per_dataset(metrics, split)
    parts += _class_counts(metrics)
    parts += _curves(read_history(history_csv, metrics.get("history")))
    parts += _timing(metrics)
    parts += _reproducibility(metrics)
    path = out_dir / REPORT_FILE
    write_text_atomic(path, "\n".join(parts).rstrip() + "\n")
    return path
