"""Evaluate a checkpoint on one split of a store: metrics, tables and figures (paper §3).

Outputs in ``out_dir`` (every file written atomically)::

    predictions.parquet   row, dataset, label, prediction, correct, p_<CLASS>..., then
                          pixel_prediction, feature_prediction, header_label, agreement,
                          confidence per image
    metrics.json          balanced accuracy, accuracy, confusion matrix, per-class and
                          per-dataset tables, evidence_modes, paper_comparison, the simulated
                          share of training, class counts, training time, speed, provenance
    confusion_matrix.csv  rows true class, columns predicted class (paper Fig. 7)
    confusion_matrix.png
    per_dataset.csv       dataset, label, n, correct, accuracy (paper Table 3)
    class_counts.png      images per class in train/validate/test (paper Fig. 3)
    curves.png            train/validation accuracy and loss per epoch (paper Fig. 4)
    training_time.png     time per epoch and cumulative (paper Fig. 5)
    report.md             see :mod:`hypermodal.evaluate.report`

The metrics are defined in :mod:`hypermodal.evaluate.metrics`; a class with no images in the
split is left out of balanced accuracy and reported in ``missing_classes``.

Images are predicted through :func:`hypermodal.inference.predict_proba`: eval mode, no
gradients, the training input path (uint8 → ``/255`` → resize to ``train_size``), softmax
probabilities. A checkpoint with evidence (``train --evidence all``) then decides with it
(:mod:`hypermodal.evaluate.evidence`): ``prediction`` and ``p_<CLASS>`` are the fused decision
(``UNKNOWN`` below the fusion's threshold: a column of its own in the confusion matrix, counted
as wrong), and ``evidence_modes`` scores the pixels, features, header and fused predictions
apart. Without evidence the CNN decides, as in the paper.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.files import atomic_path, file_digest, write_text_atomic
from hypermodal.evaluate.evidence import Decision, decide, evidence_metrics
from hypermodal.evaluate.figures import write_figures
from hypermodal.evaluate.history import read_history, training_summary
from hypermodal.evaluate.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    json_safe,
    per_class_table,
    per_dataset_table,
)
from hypermodal.evidence import UNKNOWN
from hypermodal.store import SPLITS, SliceStore, images_per_class_per_split

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.parquet"
METRICS_FILE = "metrics.json"
FIGURES = ("confusion_matrix.png", "class_counts.png", "curves.png", "training_time.png")
#: ``metrics["files"]``: the outputs next to ``metrics.json``.
OUTPUT_FILES = {
    "predictions": PREDICTIONS_FILE,
    "confusion_matrix_csv": "confusion_matrix.csv",
    "per_dataset_csv": "per_dataset.csv",
    **{f.removesuffix(".png"): f for f in FIGURES},
}


def _note(notes: list[str], text: str) -> None:
    notes.append(text)
    log.warning(text)


def _input_notes(loaded: Any, store: SliceStore, split: str, extra: list[str]) -> list[str]:
    """Warnings about what the model and the store disagree on; refuses a different image size."""
    notes: list[str] = []
    if extra:
        _note(
            notes,
            f"the {split} split holds classes the model cannot predict: {', '.join(extra)} "
            "(counted as errors; appended to the confusion matrix)",
        )
    if store.preprocess.size != loaded.preprocess.size:
        raise ValueError(
            f"store images are {store.preprocess.size}² but the model expects "
            f"{loaded.preprocess.size}² inputs; rebuild the store with the model's preprocessing"
        )
    if store.preprocess != loaded.preprocess:
        _note(
            notes,
            f"store preprocessing {store.preprocess.to_dict()} differs from the model's "
            f"{loaded.preprocess.to_dict()}",
        )
    split_hash = loaded.meta.get("split_hash")
    if store.split_hash != split_hash:
        _note(
            notes,
            f"store split hash {store.split_hash!r} differs from the checkpoint's "
            f"{split_hash!r}: the {split} images may overlap the training data",
        )
    return notes


def _predict(
    loaded: Any,
    store: SliceStore,
    rows: np.ndarray,
    split: str,
    batch_size: int,
    workers: int | None,
    amp: bool,
    progress: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Softmax probabilities of ``rows`` (in row order), and how long predicting them took
    (``metrics["prediction"]``)."""
    from hypermodal.common.progress import progress_bar
    from hypermodal.inference import predict_proba
    from hypermodal.store.loader import BatchFeeder, resolve_workers

    feed = BatchFeeder(
        store.images,
        store.labels(),
        rows,
        batch_size,
        shuffle=False,
        device=loaded.device,
        workers=resolve_workers(workers, loaded.device),
    )
    bar = progress_bar(len(feed), progress, desc=f"evaluate {split}", unit="batch")
    probs = np.zeros((len(rows), len(loaded.classes)), dtype=np.float32)
    t0 = time.perf_counter()
    for x_u8, _y, r in feed.epoch(0):
        probs[np.searchsorted(rows, r.numpy())] = predict_proba(loaded, x_u8, amp=amp)
        bar.update(1)
    seconds = time.perf_counter() - t0
    bar.close()
    return probs, {
        "seconds": seconds,
        "images_per_s": len(rows) / seconds if seconds > 0 and len(rows) else None,
        "device": str(loaded.device),
        "batch_size": batch_size,
        "amp": amp,
        "timed": "store read + transfer + forward + softmax + copy back, all batches",
    }


def _prediction_frame(
    rows: np.ndarray, table: pd.DataFrame, decision: Decision, classes: list[str]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """The predictions table (``predictions.parquet``), the true and predicted indices into the
    confusion labels, and those labels (``classes``, then ``UNKNOWN`` when predicted)."""
    true_labels = table["label"].astype(str).to_numpy()
    predicted = np.asarray(decision.prediction, dtype=object).astype(str)
    labels = list(classes) + ([UNKNOWN] if (predicted == UNKNOWN).any() else [])
    index = {c: i for i, c in enumerate(labels)}
    y_true = np.array([index[c] for c in true_labels], dtype=np.int64)
    y_pred = np.array([index[c] for c in predicted], dtype=np.int64)
    frame = pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "dataset": table["dataset"].astype(str).to_numpy(),
            "label": true_labels,
            "prediction": predicted,
            "correct": y_true == y_pred,
        }
    )
    for i, c in enumerate(classes[: decision.probs.shape[1]]):
        frame[f"p_{c}"] = decision.probs[:, i].astype(np.float32)
    frame = pd.concat([frame, decision.columns.reset_index(drop=True)], axis=1)
    return frame, y_true, y_pred, labels


def _score(
    out_dir: Path,
    split: str,
    pred_frame: pd.DataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: list[str],
    model_classes: list[str],
    store: SliceStore,
    labels: list[str],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The confusion matrix (over ``labels``: the classes, then ``UNKNOWN`` when predicted), and
    the scores and tables that open ``metrics.json``; writes ``confusion_matrix.csv`` and
    ``per_dataset.csv``."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    per_class = per_class_table(y_true, y_pred, labels)
    missing = [row["class"] for row in per_class if row["n_true"] == 0 and row["class"] in classes]
    if missing:  # reported through metrics["missing_classes"] (and the report)
        log.warning("no %s images of %s: left out of balanced accuracy", split, ", ".join(missing))
    per_dataset = per_dataset_table(pred_frame, classes)
    counts = images_per_class_per_split(store.table[store.table["ok"].astype(bool)], classes)
    cm_frame = pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=labels)
    write_text_atomic(out_dir / "confusion_matrix.csv", cm_frame.to_csv())
    write_text_atomic(out_dir / "per_dataset.csv", per_dataset.to_csv(index=False))
    return cm, {
        "split": split,
        "num_images": int(len(y_true)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, len(labels)),
        "accuracy": accuracy(y_true, y_pred),
        "classes": classes,
        "model_classes": model_classes,
        "missing_classes": missing,
        "labels_not_in_model": classes[len(model_classes) :],
        "confusion_labels": labels,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "per_dataset": per_dataset.to_dict(orient="records"),
        "class_counts": counts,
        "corpus_images": int(sum(sum(v.values()) for v in counts.values())),
    }


def _provenance(
    loaded: Any, checkpoint_path: Path, store: SliceStore, store_path: Path | str
) -> dict[str, Any]:
    """Which model, checkpoint, store and configuration the metrics come from."""
    meta = loaded.meta
    return {
        "model": str(meta.get("model_name")),
        "train_size": loaded.train_size,
        "preprocess": loaded.preprocess.to_dict(),
        "checkpoint": str(checkpoint_path),
        "checkpoint_sha256": file_digest(checkpoint_path),
        "checkpoint_epoch": meta.get("epoch"),
        "best": meta.get("best"),
        "split_hash": meta.get("split_hash"),
        "store_split_hash": store.split_hash,
        "store_path": str(Path(store_path).resolve()),
        "training_store_path": meta.get("store_path"),
        "config": meta.get("config"),
        "resolved_config": meta.get("resolved_config") or {},
        "seed": (meta.get("config") or {}).get("seed"),
    }


def _history(
    history_csv: Path | str | None, checkpoint_path: Path, loaded: Any
) -> tuple[Path | str | None, pd.DataFrame]:
    """The run's ``history.csv`` (default: beside ``<run>/checkpoints/``) and its rows (else
    the history saved in the checkpoint)."""
    if history_csv is None and checkpoint_path.resolve().parent.name == "checkpoints":
        history_csv = checkpoint_path.resolve().parent.parent / "history.csv"
    return history_csv, read_history(history_csv, loaded.meta.get("history"))


def _log_headline(model_name: str, split: str, metrics: dict[str, Any]) -> None:
    """Balanced accuracy first, and the caveat when the split is too small for the paper."""
    bal, acc = metrics["balanced_accuracy"], metrics["accuracy"]
    shown = (f"{bal:.4f}", f"{acc:.4f}") if metrics["num_images"] else ("n/a", "n/a")
    reason = metrics["paper_comparison"]["reason"]
    log.info(
        "%s on %s: %d images, balanced accuracy %s, accuracy %s%s",
        model_name, split, metrics["num_images"], *shown, f" ({reason})" if reason else "",
    )  # fmt: skip


def evaluate(
    checkpoint_path: Path | str,
    store_path: Path | str,
    out_dir: Path | str,
    split: str = "test",
    batch_size: int = 256,
    *,
    device: str = "auto",
    workers: int | None = None,
    amp: bool = False,
    history_csv: Path | str | None = None,
    write_report_md: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every usable image of one split and write metrics, tables, figures and report.

    Args:
        checkpoint_path: a checkpoint written by :func:`hypermodal.train.train`.
        store_path: the slice store holding the split.
        out_dir: folder for the outputs (created).
        split: ``"train"``, ``"validate"`` or ``"test"``.
        batch_size: images per inference batch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        workers: loader worker processes (``None``: auto, as in training).
        amp: bf16/fp16 autocast on CUDA (faster; off by default for exact probabilities).
        history_csv: the run's ``history.csv``; default: ``<run>/history.csv`` when the
            checkpoint sits in ``<run>/checkpoints/``, else the history saved in the checkpoint.
        write_report_md: also write ``report.md`` (:func:`hypermodal.evaluate.report.write_report`).
        progress: progress bar when stderr is a terminal.

    Returns:
        The metrics dict that is written to ``metrics.json`` (JSON-safe: NaN → None).

    Raises:
        hypermodal.common.errors.CheckpointError: unusable checkpoint.
        ValueError: unknown split, or store images of another size than the model's input.
    """
    from hypermodal.common.versions import package_versions
    from hypermodal.inference import load_model

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    checkpoint_path = Path(checkpoint_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(checkpoint_path, device=device)
    store = SliceStore.open(store_path)
    rows = store.rows(split)
    table = store.table.iloc[rows]
    model_classes = list(loaded.classes)
    extra = sorted(set(table["label"].astype(str)) - set(model_classes))
    classes = model_classes + extra
    notes = _input_notes(loaded, store, split, extra)

    probs, timing = _predict(loaded, store, rows, split, batch_size, workers, amp, progress)
    decision = decide(loaded, table, probs, notes)
    pred_frame, y_true, y_pred, labels = _prediction_frame(rows, table, decision, classes)
    with atomic_path(out_dir / PREDICTIONS_FILE) as tmp:
        pred_frame.to_parquet(tmp, index=False)

    cm, scores = _score(
        out_dir, split, pred_frame, y_true, y_pred, classes, model_classes, store, labels
    )
    evidence = evidence_metrics(loaded, decision, table, classes, probs, split)
    if not len(rows):
        _note(notes, f"the {split} split has no usable images: no metrics")
    history_csv, history = _history(history_csv, checkpoint_path, loaded)
    provenance = _provenance(loaded, checkpoint_path, store, store_path)
    model_name = provenance["model"]
    acc, bal = scores["accuracy"], scores["balanced_accuracy"]
    title = f"{model_name} on {split}: bal. acc {bal:.2%}, acc {acc:.2%}"
    write_figures(out_dir, cm, labels, scores["class_counts"], history, title, model_name)

    metrics: dict[str, Any] = {
        **scores,
        **evidence,
        **provenance,
        "training": {
            **training_summary(history),
            "device": provenance["resolved_config"].get("device"),
        },
        "history": history.to_dict(orient="records"),
        "history_csv": str(history_csv) if history_csv else None,
        "prediction": timing,
        "versions": package_versions(),
        "training_versions": loaded.meta.get("versions"),
        "notes": notes,
        "files": dict(OUTPUT_FILES),
    }
    metrics = json_safe(metrics)
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2, default=str))
    _log_headline(model_name, split, metrics)
    if write_report_md:
        from hypermodal.evaluate.report import write_report

        write_report(out_dir, metrics, history_csv if history_csv else None)
    return metrics
