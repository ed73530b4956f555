"""Evaluate a checkpoint on one split of a store: metrics, tables and figures (paper §3).

Outputs in ``out_dir`` (every file written atomically)::

    predictions.parquet   row, dataset, label, prediction, correct, p_<CLASS>... per image
    metrics.json          accuracy, balanced accuracy, confusion matrix, per-class and
                          per-dataset tables, class counts, training time, speed, provenance
    confusion_matrix.csv  rows true class, columns predicted class (paper Fig. 7)
    confusion_matrix.png
    per_dataset.csv       dataset, label, n, correct, accuracy (paper Table 3)
    class_counts.png      images per class in train/validate/test (paper Fig. 3)
    curves.png            train/validation accuracy and loss per epoch (paper Fig. 4)
    training_time.png     time per epoch and cumulative (paper Fig. 5)
    report.md             see :mod:`hypermodal.evaluate.report`

Metrics are computed here with numpy (the tests check them against scikit-learn):

* accuracy = correct / images;
* balanced accuracy = mean recall over the classes *present in the true labels* (scikit-learn's
  ``balanced_accuracy_score``): a class with no images in the split (for example PET when no PET
  data exist) is left out and reported in ``missing_classes`` rather than counted as 0 or 1;
* confusion matrix: ``cm[i, j]`` = images of true class ``i`` predicted as class ``j``, in the
  checkpoint's class order.

Images are predicted through :func:`hypermodal.train.checkpoint.predict_proba`: eval mode, no
gradients, the training input path (uint8 → ``/255`` → resize to ``train_size``), softmax
probabilities.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.files import atomic_path, write_text_atomic
from hypermodal.store import SPLITS, SliceStore, images_per_class_per_split

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.parquet"
METRICS_FILE = "metrics.json"
FIGURES = ("confusion_matrix.png", "class_counts.png", "curves.png", "training_time.png")


# ---------------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of true class ``i`` predicted as ``j`` (int64, num_classes²).

    >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    if len(y_true) and (
        min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes
    ):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (NaN when there are none)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``y_true`` (NaN when ``y_true`` is empty).

    >>> balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), 4)
    0.5
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def per_class_table(cm: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Per class: true and predicted counts, correct, recall and precision (None if undefined)."""
    rows = []
    for i, name in enumerate(classes):
        n_true, n_pred, hit = int(cm[i].sum()), int(cm[:, i].sum()), int(cm[i, i])
        rows.append(
            {
                "class": name,
                "n_true": n_true,
                "n_predicted": n_pred,
                "correct": hit,
                "recall": hit / n_true if n_true else None,
                "precision": hit / n_pred if n_pred else None,
            }
        )
    return rows


def per_dataset_table(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Accuracy per (dataset, true class), like the paper's Table 3.

    Args:
        predictions: needs columns ``dataset``, ``label``, ``prediction``.
        classes: class order used to sort the rows (then dataset name).

    Returns:
        Columns ``dataset, label, n, correct, accuracy``.
    """
    cols = ["dataset", "label", "n", "correct", "accuracy"]
    if predictions.empty:
        return pd.DataFrame(columns=cols)
    frame = predictions.assign(correct=predictions["label"] == predictions["prediction"])
    table = (
        frame.groupby(["dataset", "label"], sort=False)["correct"]
        .agg(n="size", correct="sum")
        .reset_index()
    )
    table["correct"] = table["correct"].astype(int)
    table["accuracy"] = table["correct"] / table["n"]
    order = {c: i for i, c in enumerate(classes)}
    table["_k"] = table["label"].map(order).fillna(len(order))
    table = table.sort_values(["_k", "dataset"], kind="stable").drop(columns="_k")
    return table[cols].reset_index(drop=True)


def class_counts(store: SliceStore, classes: list[str]) -> dict[str, dict[str, int]]:
    """Usable images per split and class: ``{split: {class: n}}`` (zeros included)."""
    return images_per_class_per_split(store.table[store.table["ok"].astype(bool)], classes)


# ----------------------------------------------------------------------------------- history


def read_history(
    history_csv: Path | str | None, fallback: list[dict[str, Any]] | None = None
) -> pd.DataFrame:
    """The run's per-epoch history from ``history.csv``, else from a checkpoint's copy."""
    if history_csv is not None and Path(history_csv).is_file():
        frame = pd.read_csv(history_csv)
        if not frame.empty:
            return frame
    return pd.DataFrame(fallback or [])


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def training_summary(history: pd.DataFrame) -> dict[str, Any]:
    """Epochs, total seconds/hours, mean throughput and final accuracies from a history."""
    if history.empty:
        return {"epochs": 0, "seconds": None, "hours": None}
    seconds = (
        float(history["elapsed_seconds"].iloc[-1])
        if "elapsed_seconds" in history
        else float(history.get("seconds", pd.Series(dtype=float)).sum())
    )
    last = history.iloc[-1]
    return {
        "epochs": int(len(history)),
        "seconds": seconds,
        "hours": seconds / 3600.0,
        "mean_images_per_s": _finite(history["images_per_s"].mean())
        if "images_per_s" in history
        else None,
        "final_train_accuracy": _finite(last.get("train_accuracy")),
        "final_val_accuracy": _finite(last.get("val_accuracy")),
        "final_lr": _finite(last.get("lr")),
    }


# ----------------------------------------------------------------------------------- figures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_confusion_matrix(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Counts annotated; colour = fraction of the true class (row-normalised)."""
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.3 * k + 2.5, 1.1 * k + 2))
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape, dtype=float), where=support > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            colour = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(k), classes)
    ylabels = [f"{c} (n={int(n)})" for c, n in zip(classes, support[:, 0], strict=True)]
    ax.set_yticks(range(k), ylabels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    _save_figure(fig, path)


def plot_class_counts(counts: dict[str, dict[str, int]], path: Path) -> None:
    """One bar chart per split, each on its own scale (as the paper's Fig. 3)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(4 * len(SPLITS), 3.2))
    for ax, split in zip(np.atleast_1d(axes), SPLITS, strict=True):
        names = list(counts[split])
        values = [counts[split][c] for c in names]
        bars = ax.bar(names, values, color="#4c72b0")
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=8)
        ax.set_title(f"{split} ({sum(values):,} images)")
        ax.set_ylabel("images")
    fig.suptitle("Images per class per split")
    fig.tight_layout()
    _save_figure(fig, path)


def _empty_axes(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_curves(history: pd.DataFrame, path: Path, model: str) -> None:
    """Training and validation accuracy (left) and loss (right) per epoch."""
    plt = _pyplot()
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    if history.empty:
        _empty_axes(acc_ax, "no training history")
        _empty_axes(loss_ax, "no training history")
    else:
        ep = history["epoch"]
        for ax, key, label in ((acc_ax, "accuracy", "accuracy"), (loss_ax, "loss", "loss")):
            ax.plot(ep, history[f"train_{key}"], "o-", label="train")
            if history[f"val_{key}"].notna().any():
                ax.plot(ep, history[f"val_{key}"], "s-", label="validate")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        acc_ax.set_xticks(list(ep))
        loss_ax.set_xticks(list(ep))
    fig.suptitle(f"{model}: accuracy and loss at the end of each epoch")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_training_time(history: pd.DataFrame, path: Path, model: str) -> None:
    """Seconds per epoch (bars) and cumulative training time (line)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if history.empty:
        _empty_axes(ax, "no training history")
    else:
        total = float(history["elapsed_seconds"].iloc[-1])
        unit, scale = (
            ("hours", 3600.0)
            if total >= 7200
            else (("minutes", 60.0) if total >= 120 else ("seconds", 1.0))
        )
        ep = history["epoch"]
        ax.bar(ep, history["seconds"] / scale, color="#9ecae1", label=f"per epoch ({unit})")
        ax.plot(ep, history["elapsed_seconds"] / scale, "o-", color="#08519c", label="cumulative")
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.set_xticks(list(ep))
        ax.legend()
        ax.set_title(f"{model}: {total / scale:.2f} {unit} for {len(history)} epochs")
    _save_figure(fig, path)


# -------------------------------------------------------------------------------- evaluation


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_safe(value: Any) -> Any:
    """NaN/inf → None, numpy → Python, recursively (metrics.json must be valid JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
        hypermodal.train.CheckpointError: unusable checkpoint.
        ValueError: unknown split.
    """
    from hypermodal.common.progress import progress_bar
    from hypermodal.common.versions import package_versions
    from hypermodal.train.checkpoint import load_model, predict_proba
    from hypermodal.train.data import BatchFeeder, resolve_workers

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    checkpoint_path = Path(checkpoint_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(checkpoint_path, device=device)
    store = SliceStore.open(store_path)
    meta = loaded.meta
    notes: list[str] = []

    model_classes = list(loaded.classes)
    rows = store.rows(split)
    table = store.table.iloc[rows]
    true_labels = table["label"].astype(str).to_numpy()
    extra = sorted(set(true_labels) - set(model_classes))
    classes = model_classes + extra
    if extra:
        notes.append(
            f"the {split} split holds classes the model cannot predict: {', '.join(extra)} "
            "(counted as errors; appended to the confusion matrix)"
        )
        log.warning(notes[-1])
    if store.preprocess.size != loaded.preprocess.size:
        raise ValueError(
            f"store images are {store.preprocess.size}² but the model expects "
            f"{loaded.preprocess.size}² inputs; rebuild the store with the model's preprocessing"
        )
    if store.preprocess != loaded.preprocess:
        notes.append(
            f"store preprocessing {store.preprocess.to_dict()} differs from the model's "
            f"{loaded.preprocess.to_dict()}"
        )
        log.warning(notes[-1])
    if store.split_hash != meta.get("split_hash"):
        notes.append(
            f"store split hash {store.split_hash!r} differs from the checkpoint's "
            f"{meta.get('split_hash')!r}: the {split} images may overlap the training data"
        )
        log.warning(notes[-1])

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
    probs = np.zeros((len(rows), len(model_classes)), dtype=np.float32)
    t0 = time.perf_counter()
    for x_u8, _y, r in feed.epoch(0):
        probs[np.searchsorted(rows, r.numpy())] = predict_proba(loaded, x_u8, amp=amp)
        bar.update(1)
    seconds = time.perf_counter() - t0
    bar.close()
    pred_idx = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[c] for c in true_labels], dtype=np.int64)
    y_pred = pred_idx.astype(np.int64)
    predicted = np.array(model_classes, dtype=object)[y_pred] if len(y_pred) else []

    pred_frame = pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "dataset": table["dataset"].astype(str).to_numpy(),
            "label": true_labels,
            "prediction": np.asarray(predicted, dtype=str),
            "correct": y_true == y_pred,
        }
    )
    for i, c in enumerate(model_classes):
        pred_frame[f"p_{c}"] = probs[:, i].astype(np.float32)
    with atomic_path(out_dir / PREDICTIONS_FILE) as tmp:
        pred_frame.to_parquet(tmp, index=False)

    n_cls = len(classes)
    cm = confusion_matrix(y_true, y_pred, n_cls)
    per_class = per_class_table(cm, classes)
    missing = [row["class"] for row in per_class if row["n_true"] == 0]
    if missing:  # reported through metrics["missing_classes"] (and the report)
        log.warning("no %s images of %s: left out of balanced accuracy", split, ", ".join(missing))
    if not len(rows):
        notes.append(f"the {split} split has no usable images: no metrics")
        log.warning(notes[-1])
    per_dataset = per_dataset_table(pred_frame, classes)
    counts = class_counts(store, classes)

    cm_frame = pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes)
    write_text_atomic(out_dir / "confusion_matrix.csv", cm_frame.to_csv())
    write_text_atomic(out_dir / "per_dataset.csv", per_dataset.to_csv(index=False))

    if history_csv is None and checkpoint_path.resolve().parent.name == "checkpoints":
        history_csv = checkpoint_path.resolve().parent.parent / "history.csv"
    history = read_history(history_csv, meta.get("history"))
    model_name = str(meta.get("model_name"))
    acc = accuracy(y_true, y_pred)
    bal = balanced_accuracy(y_true, y_pred, n_cls)
    plot_confusion_matrix(
        cm, classes, out_dir / "confusion_matrix.png", f"{model_name} on {split}: acc {acc:.2%}"
    )
    plot_class_counts(counts, out_dir / "class_counts.png")
    plot_curves(history, out_dir / "curves.png", model_name)
    plot_training_time(history, out_dir / "training_time.png", model_name)

    resolved = meta.get("resolved_config") or {}
    metrics: dict[str, Any] = {
        "split": split,
        "num_images": int(len(rows)),
        "accuracy": acc,
        "balanced_accuracy": bal,
        "classes": classes,
        "model_classes": model_classes,
        "missing_classes": missing,
        "labels_not_in_model": extra,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "per_dataset": per_dataset.to_dict(orient="records"),
        "class_counts": counts,
        "corpus_images": int(sum(sum(v.values()) for v in counts.values())),
        "model": model_name,
        "train_size": loaded.train_size,
        "preprocess": loaded.preprocess.to_dict(),
        "checkpoint": str(checkpoint_path),
        "checkpoint_sha256": _sha256(checkpoint_path),
        "checkpoint_epoch": meta.get("epoch"),
        "best": meta.get("best"),
        "split_hash": meta.get("split_hash"),
        "store_split_hash": store.split_hash,
        "store_path": str(Path(store_path).resolve()),
        "training_store_path": meta.get("store_path"),
        "config": meta.get("config"),
        "resolved_config": resolved,
        "seed": (meta.get("config") or {}).get("seed"),
        "training": {**training_summary(history), "device": resolved.get("device")},
        "history": history.to_dict(orient="records"),
        "history_csv": str(history_csv) if history_csv else None,
        "prediction": {
            "seconds": seconds,
            "images_per_s": len(rows) / seconds if seconds > 0 and len(rows) else None,
            "device": str(loaded.device),
            "batch_size": batch_size,
            "amp": amp,
            "timed": "store read + transfer + forward + softmax + copy back, all batches",
        },
        "versions": package_versions(),
        "training_versions": meta.get("versions"),
        "notes": notes,
        "files": {
            "predictions": PREDICTIONS_FILE,
            "confusion_matrix_csv": "confusion_matrix.csv",
            "per_dataset_csv": "per_dataset.csv",
            **{f.removesuffix(".png"): f for f in FIGURES},
        },
    }
    metrics = _json_safe(metrics)
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2, default=str))
    log.info(
        "%s on %s: %d images, accuracy %s, balanced accuracy %s",
        model_name,
        split,
        len(rows),
        f"{acc:.4f}" if len(rows) else "n/a",
        f"{bal:.4f}" if len(rows) else "n/a",
    )
    if write_report_md:
        from hypermodal.evaluate.report import write_report

        write_report(out_dir, metrics, history_csv if history_csv else None)
    return metrics
