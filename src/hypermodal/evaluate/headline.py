"""The report's headline beside the paper, and its table of evidence modes.

Balanced accuracy comes first in every headline (the split's classes are rarely balanced, and
plain accuracy then mostly measures the largest class). A headline that sets a figure beside the
paper's says so when the split is too small for the comparison
(:func:`hypermodal.evaluate.evidence.paper_comparison`), and the headline states how much of the
training data was simulated.
"""

from __future__ import annotations

from typing import Any

from hypermodal.evaluate.evidence import MODES
from hypermodal.evaluate.markdown import pct, table

#: The paper's test-set results (Table 2): model → (accuracy, balanced accuracy).
PAPER_RESULTS: dict[str, tuple[float, float]] = {
    "resnet18": (0.9600, 0.8617),
    "resnet50": (0.9560, 0.8565),
    "vgg16": (0.9458, 0.8108),
}
PAPER_LABELS = {"resnet18": "ResNet18", "resnet50": "ResNet50", "vgg16": "VGG16"}

#: How each evidence mode is named in the report.
MODE_LABELS = {
    "pixels": "pixels only (the CNN)",
    "features": "features only (intensity statistics and geometry)",
    "header": "header only (DICOM Modality and SOP class)",
    "fused": "fused (the model's decision)",
}


def comparison_line(metrics: dict[str, Any]) -> str | None:
    """The warning a headline beside the paper carries for a degenerate split (None: none)."""
    reason = (metrics.get("paper_comparison") or {}).get("reason")
    return f"**{reason}.**" if reason else None


def simulated_line(metrics: dict[str, Any]) -> str:
    """The sentence that states the simulated share of the training images (and how many
    simulated images the evaluated split holds: none, when the split kept them in train)."""
    share = metrics.get("simulated_share_of_training")
    split = metrics.get("split", "test")
    held = int(metrics.get("simulated_images_in_split") or 0)
    in_split = (
        f"the {split} split holds {held:,} simulated images"
        if held
        else f"the {split} split holds none: every figure here is measured on real images"
    )
    if share is None:
        return (
            f"Simulated share of the training images: not recorded by this checkpoint; {in_split}."
        )
    return f"Simulated share of the training images: {pct(share)}; {in_split}."


def headline_section(metrics: dict[str, Any], split: str) -> list[str]:
    """``## Headline``: this run (and, with evidence, its CNN alone) beside the paper's Table 2."""
    model = str(metrics.get("model") or "?")
    name = PAPER_LABELS.get(model, model)
    images = f"{int(metrics.get('num_images') or 0):,}"
    evidence = (metrics.get("evidence") or {}).get("decides") == "fused evidence"
    what = f"{name} + evidence, fused" if evidence else name
    rows: list[list[Any]] = [
        [
            f"**this run: {what}** ({split})",
            f"**{pct(metrics.get('balanced_accuracy'))}**",
            f"**{pct(metrics.get('accuracy'))}**",
            images,
        ]
    ]
    pixels = (metrics.get("evidence_modes") or {}).get("pixels") or {}
    if evidence and pixels.get("available"):
        rows.append(
            [
                f"this run: {name}, pixels only ({split})",
                pct(pixels.get("balanced_accuracy")),
                pct(pixels.get("accuracy")),
                images,
            ]
        )
    for key, (acc, bal) in PAPER_RESULTS.items():
        mark = " ← same architecture" if key == model else ""
        rows.append(
            [f"paper: {PAPER_LABELS[key]} (test){mark}", pct(bal), pct(acc), "~4.5 M corpus"]
        )
    parts = ["## Headline\n"]
    warning = comparison_line(metrics)
    if warning:
        parts.append(warning + "\n")
    parts += [
        table(["model", "balanced accuracy", "accuracy", "images"], rows, "lrrr"),
        "\nBalanced accuracy is the mean recall over the classes present in the true labels "
        "(scikit-learn's definition). The paper's figures are from its Table 2 (10 epochs, "
        "test set of its 4.5-million-image corpus).\n",
        simulated_line(metrics) + "\n",
    ]
    return parts


def _fusion_line(evidence: dict[str, Any]) -> str:
    fitted = evidence.get("fusion") or {}
    if not fitted.get("fitted"):
        reason = fitted.get("reason") or "not fitted"
        return f"The fusion is **neutral** (the evidence pooled with equal weights): {reason}."
    datasets = fitted.get("groups")
    return (
        f"The fusion was fitted on {int(fitted.get('rows') or 0):,} held-out images"
        + (f" of {int(datasets)} datasets" if datasets else "")
        + f" (classes {', '.join(fitted.get('classes_seen') or []) or 'n/a'})."
    )


def evidence_section(metrics: dict[str, Any]) -> list[str]:
    """``## Evidence modes``: one row per mode, or the statement that the model is pixels only."""
    parts = ["## Evidence modes\n"]
    evidence = metrics.get("evidence") or {}
    if evidence.get("decides") != "fused evidence":
        return [
            *parts,
            "This model is **pixels only**: its checkpoint carries no feature forest and no "
            "fusion, so the CNN alone decides (train with `--evidence all` to add them). The "
            "header is only compared with the CNN (`agreement` in `predictions.parquet`).\n",
        ]
    modes = metrics.get("evidence_modes") or {}
    classes = list(metrics.get("classes") or [])
    rows = []
    for mode in MODES:
        m = modes.get(mode) or {}
        if not m.get("available"):
            rows.append(
                [
                    MODE_LABELS[mode],
                    f"n/a ({m.get('reason', 'absent')})",
                    "",
                    "",
                    *[""] * len(classes),
                ]
            )
            continue
        recall = m.get("recall") or {}
        rows.append(
            [
                MODE_LABELS[mode],
                pct(m.get("balanced_accuracy")),
                pct(m.get("accuracy")),
                pct(m.get("coverage")),
                *[pct(recall.get(c)) for c in classes],
            ]
        )
    header = [
        "mode",
        "balanced accuracy",
        "accuracy",
        "coverage",
        *[f"recall {c}" for c in classes],
    ]
    agreement = evidence.get("agreement") or {}
    parts += [
        table(header, rows, "l" + "r" * (len(header) - 1)),
        "\nCoverage is the share of images the mode names a class for (header: images whose "
        "header claims one; fused: images not reported as UNKNOWN). A row without a claim, "
        "or UNKNOWN, counts as wrong.\n",
        _fusion_line(evidence),
        f"\n{int(evidence.get('unknown') or 0):,} images were UNKNOWN (fused confidence below "
        f"{evidence.get('unknown_below', 'n/a')}); header against image: "
        + (", ".join(f"{k} {v:,}" for k, v in agreement.items()) or "n/a")
        + ".\n",
    ]
    return parts
