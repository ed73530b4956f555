"""The default model: the crossval corpus's final CNN, forest and fusion in one checkpoint.

After cross-validation has measured every evidence mode on unseen datasets, the final model is
trained on everything: the CNN and the feature forest on every image (real and simulated), the
fusion on all the out-of-fold evidence of the real datasets (the only honest data to fit it
on). The checkpoint has the format of ``hypermodal train``'s (so ``predict --model``,
``evaluate`` and ``info`` read it) plus the ``evidence`` key; its weights are stored in float16
to keep the file small and are widened to float32 when loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypermodal.common.versions import package_versions
from hypermodal.crossval.pixels import PixelConfig, fit_pixels
from hypermodal.evidence import EvidenceModel
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
) -> dict[str, Any]:
    """Train the final CNN on store ``rows`` and write the checkpoint to ``path``."""
    model = fit_pixels(store.images[rows], y, groups, vocab.num_classes, config)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
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
    torch.set_num_threads(torch.get_num_threads())
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest}
