"""The default model: the crossval corpus's final CNN, forest and fusion in one checkpoint.

After cross-validation has measured every evidence mode on unseen datasets, the final model is
trained on everything: the CNN and the feature forest on every image (real and simulated), the
fusion on all the out-of-fold evidence of the real datasets (the only honest data to fit it
on). The checkpoint has the format of ``hypermodal train``'s (so ``predict --model``,
``evaluate`` and ``info`` read it) plus the ``evidence`` key; its weights are stored in float16
to keep the file small and are widened to float32 when loaded. Beside it goes its ONNX form
(``<name>.onnx.zip``, :func:`hypermodal.inference.onnx_export.export_onnx`): the bundle that
ships as the default model and predicts without PyTorch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypermodal.common.files import atomic_path
from hypermodal.common.versions import package_versions
from hypermodal.crossval.pixels import PixelConfig, fit_pixels
from hypermodal.evidence import EvidenceModel
from hypermodal.inference.onnx_export import export_onnx
from hypermodal.labels import ClassVocabulary
from hypermodal.train.checkpoint import save_checkpoint


def save_default_model(
    path: Path,
    store: Any,
    rows: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    evidence: EvidenceModel,
    config: PixelConfig,
    vocab: ClassVocabulary,
    metrics: dict[str, Any],
    cache: Path | None = None,
) -> dict[str, Any]:
    """Train the final CNN on store ``rows`` (or reuse its weights from ``cache``) and write the
    checkpoint to ``path``."""
    if cache is not None and cache.exists():
        state = torch.load(cache, map_location="cpu", weights_only=True)
    else:
        keep = config.trains_on(groups)
        model = fit_pixels(
            store.images[rows[keep]], y[keep], groups[keep], vocab.num_classes, config
        )
        state = {
            k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()
        }
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                torch.save(state, tmp)
    trained_classes = sorted({vocab.classes[i] for i in np.unique(y)})
    real_classes = sorted(
        {c for c, s in metrics["modes"]["fused"]["recall"].items() if s is not None}
    )
    evidence.info.update(
        {
            "trained_classes": trained_classes,
            "real_classes": real_classes,
            "simulated_share_of_training": metrics["simulated_share_of_training"],
            "simulated_per_class": metrics["simulated_per_class"],
        }
    )
    payload = {
        "model_name": config.model,
        "num_classes": vocab.num_classes,
        "in_chans": 1,
        "model_state": state,
        "vocabulary": vocab.to_dict(),
        "preprocess": store.meta["preprocess"],
        "train_size": config.train_size,
        "config": {"recipe": "crossval-final", **config.to_dict()},
        "store_path": str(store.path) if hasattr(store, "path") else None,
        "split_hash": "",
        "versions": package_versions(),
        "epoch": 0,
        "history": [],
        "best": {},
        "evidence": evidence.to_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, payload)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    onnx = export_onnx(path, onnx_path(path))
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": digest,
        "onnx": {k: onnx[k] for k in ("path", "bytes", "sha256", "precision")},
    }


def onnx_path(checkpoint: Path) -> Path:
    """Where the ONNX form of ``checkpoint`` goes: ``name.pt`` → ``name.onnx.zip``."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".pt") + ".onnx.zip")


def write_model_card(card: Path, metrics: dict[str, Any], report: str, datasets: Any) -> None:
    """``MODEL_CARD.md``: what the model is, what it was trained on, how it scored on unseen
    datasets (the crossval report), and its known limits."""
    from hypermodal.common.files import write_text_atomic

    model = metrics.get("model") or {}
    per_class = datasets.groupby("label")["dataset"].nunique().to_dict()
    real = ", ".join(f"{c}: {n}" for c, n in sorted(per_class.items()))
    simulated = ", ".join(f"{c}: {n}" for c, n in sorted(metrics["simulated_per_class"].items()))
    absent = metrics["classes_without_real_data"]
    limits = [
        f"No real {c} image was available to train or test: {c} is learnt from simulations only "
        "and its accuracy on real images is unmeasured."
        for c in absent
    ]
    limits += [
        f"{note[0].upper()}{note[1:]}." for note in metrics["notes"] if "no real" not in note
    ]
    for mode, scores in metrics["modes"].items():
        value = scores.get("balanced_accuracy_datasets")
        if mode != "header" and value is not None and value < 0.6:
            limits.append(
                f"The {mode} evidence alone scores {100 * value:.1f} % balanced accuracy "
                "(datasets) on unseen datasets: it does not generalise from this corpus, and the "
                "fitted fusion gives it the weight that earns."
            )
    wrong = datasets[datasets["fused"] < 0.5] if "fused" in datasets else datasets.iloc[:0]
    if len(wrong):
        names = ", ".join(
            f"{r.dataset} ({r.label} as {r.fused_prediction})" for r in wrong.itertuples()
        )
        limits.append(f"Real datasets the fused model gets mostly wrong when unseen: {names}.")
    limits.append(
        "The corpus is a few thousand images from a few dozen acquisitions in PyPI packages, "
        "mostly heads; anatomy, scanners and export pipelines outside it may fail."
    )
    pc = metrics.get("pixel_config") or {}
    onnx = model.get("onnx") or {}
    lines = [
        "# hypermodal default model",
        "",
        f"- File: `{Path(onnx.get('path', 'hypermodal-default.onnx.zip')).name}`, "
        f"{onnx.get('bytes', 0) / 1e6:.1f} MB, sha256 `{onnx.get('sha256', '')}`: the ONNX "
        "bundle that ships (ONNX Runtime, no PyTorch needed), exported from the PyTorch "
        f"checkpoint `{Path(model.get('path', 'hypermodal-default.pt')).name}` "
        f"({model.get('bytes', 0) / 1e6:.1f} MB, sha256 `{model.get('sha256', '')}`, not "
        'shipped; `load_model(..., backend="torch")` rebuilds it from the bundle).',
        f"- Classes: {', '.join(metrics['classes'])} (US, NM, SEG, SR, secondary captures and "
        "other modalities are OTHER; a confidence below "
        f"{metrics['unknown_below']} is UNKNOWN).",
        f"- Evidence: CNN `{pc.get('model', 'resnet18')}` at {pc.get('train_size')} px on the "
        "paper's min-max preprocessing; random forests (per image and per series) on intensity "
        "statistics, the depth contrast (whether the brighter tissue lies inside the object or "
        "at its edge) and header geometry; the DICOM header with a stated trust; fused by "
        "weighted log-linear pooling fitted on out-of-fold predictions of the real datasets.",
        "- Trained by: `make default-model` (`hypermodal crossval --out runs/default "
        "--save-model runs/default/model/hypermodal-default.pt`, which also writes the bundle, "
        f"then copied here), seed {metrics['seed']}.",
        f"- Real datasets per class: {real}. Simulated training images per class: {simulated} "
        f"({100 * metrics['simulated_share_of_training']:.1f} % of the training images).",
        "",
        "## Known limits",
        "",
        *[f"- {item}" for item in limits],
        "",
        report.replace("# Cross-validation by dataset", "## Cross-validation by dataset", 1),
    ]
    write_text_atomic(card, "\n".join(lines))
