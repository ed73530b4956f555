"""The training run's per-epoch history, as the evaluation and the report read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.evaluate.metrics import finite_or_none


def read_history(
    history_csv: Path | str | None, fallback: list[dict[str, Any]] | None = None
) -> pd.DataFrame:
    """The run's per-epoch history from ``history.csv``, else from ``fallback`` (the copy saved
    in a checkpoint or in ``metrics.json``); empty when neither has rows."""
    if history_csv is not None and Path(history_csv).is_file():
        frame = pd.read_csv(history_csv)
        if not frame.empty:
            return frame
    return pd.DataFrame(fallback or [])


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
        "mean_images_per_s": finite_or_none(history["images_per_s"].mean())
        if "images_per_s" in history
        else None,
        "final_train_accuracy": finite_or_none(last.get("train_accuracy")),
        "final_val_accuracy": finite_or_none(last.get("val_accuracy")),
        "final_lr": finite_or_none(last.get("lr")),
    }
