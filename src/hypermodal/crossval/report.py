"""The crossval report: balanced accuracy first, one column per evidence mode, honest notes."""

from __future__ import annotations

from typing import Any

import pandas as pd

from hypermodal.common.files import write_text_atomic
from hypermodal.crossval.scoring import MODE_TITLES, MODES


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def render(metrics: dict[str, Any], table: pd.DataFrame) -> str:
    """Markdown for ``metrics`` (from :func:`~hypermodal.crossval.run.run_crossval`)."""
    modes = metrics["modes"]
    lines = [
        "# Cross-validation by dataset",
        "",
        f"Every one of the {metrics['real_datasets']} real datasets "
        f"({metrics['real_images']} real images) was predicted by models that never saw it "
        f"(features: folds = {metrics['folds']['features']}, CNN: folds = "
        f"{metrics['folds']['pixels']}, fusion: fitted without the dataset it scores). "
        f"Simulated images: {metrics['simulated_images']} "
        f"({100 * metrics['simulated_share_of_training']:.1f} % of the training images; "
        "training only, never scored).",
        "",
        "| evidence | balanced accuracy (images) | balanced accuracy (datasets) | "
        "dataset-mean accuracy | image accuracy |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        if mode in modes:
            s = modes[mode]
            lines.append(
                f"| {MODE_TITLES[mode]} | **{_pct(s['balanced_accuracy'])}** | "
                f"**{_pct(s.get('balanced_accuracy_datasets'))}** | "
                f"{_pct(s['dataset_mean_accuracy'])} | {_pct(s['accuracy'])} |"
            )
    lines += [
        "",
        "Balanced accuracy (images) is the paper's measure: mean recall per class, counted in "
        "images. Here a few template volumes hold most images of their class (see the "
        "per-dataset table), so balanced accuracy (datasets) — each dataset counting once within "
        "its class — is given beside it.",
        "",
        "The paper reports 86.2 % balanced / 96.0 % accuracy on its unseen datasets (4.5 million "
        "images from 102 datasets); the figures above come from a corpus hundreds of times "
        "smaller and are not comparable with them.",
        "",
    ]
    for note in metrics["notes"]:
        lines.append(f"- {note}")
    lines += ["", "## Recall per class (images; in brackets: mean over the class's datasets)", ""]
    classes = [c for c in metrics["classes"] if c not in metrics["classes_without_real_data"]]
    lines.append("| evidence | " + " | ".join(classes) + " |")
    lines.append("|---|" + "---|" * len(classes))
    for mode in MODES:
        if mode in modes:
            r, rd = modes[mode]["recall"], modes[mode].get("dataset_mean_recall", {})
            cells = [f"{_pct(r.get(c))} ({_pct(rd.get(c))})" for c in classes]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", "## Per dataset (the paper's Table 3, one column per evidence mode)", ""]
    cols = [c for c in ["dataset", "label", "images", *MODES, "fused_prediction"] if c in table]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for _, row in table[cols].iterrows():
        cells = [_pct(row[c]) if c in MODES else str(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    fused = modes.get("fused")
    if fused:
        cm = fused["confusion"]
        lines += ["", "## Confusion matrix (fused; rows: true class)", ""]
        lines.append("| true \\ predicted | " + " | ".join(cm["classes"]) + " |")
        lines.append("|---|" + "---|" * len(cm["classes"]))
        for name, row in zip(metrics["classes"], cm["matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += [
        "",
        f"Calibration error of the fused confidence (ECE, 10 bins): "
        f"{metrics.get('calibration_error_fused', float('nan')):.3f}.",
        f"Seed {metrics['seed']}; versions in metrics.json.",
        "",
    ]
    return "\n".join(lines)


def write_report(path: Any, metrics: dict[str, Any], table: pd.DataFrame) -> None:
    write_text_atomic(path, render(metrics, table))
