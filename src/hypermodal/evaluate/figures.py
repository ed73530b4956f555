"""The evaluation's figures (matplotlib, Agg backend), each saved atomically as a PNG.

``confusion_matrix.png`` (paper Fig. 7), ``class_counts.png`` (Fig. 3), ``curves.png`` (Fig. 4)
and ``training_time.png`` (Fig. 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.files import atomic_path
from hypermodal.store import SPLITS


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


def _empty_axes(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


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


def write_figures(
    out_dir: Path,
    cm: np.ndarray,
    labels: list[str],
    counts: dict[str, dict[str, int]],
    history: pd.DataFrame,
    title: str,
    model_name: str,
) -> None:
    """Every figure of an evaluation into ``out_dir`` (``labels``: the confusion matrix's)."""
    plot_confusion_matrix(cm, labels, out_dir / "confusion_matrix.png", title)
    plot_class_counts(counts, out_dir / "class_counts.png")
    plot_curves(history, out_dir / "curves.png", model_name)
    plot_training_time(history, out_dir / "training_time.png", model_name)
