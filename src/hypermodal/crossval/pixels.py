"""The pixel evidence of one fold: the paper's CNN trained on the fold's training images only.

The network and its input are those of ``hypermodal train`` (a one-channel ResNet-18 from
:mod:`hypermodal.models`, uint8 store images through
:func:`hypermodal.inference.to_model_input`, the same flips/turns/crop augmentation), on a short
schedule fit for a fold: SGD with momentum, cosine learning rate, ``epochs`` passes. Batches are
drawn with replacement so that every class, and every dataset within a class, is seen equally
often — on a corpus where one atlas holds more slices than ten small datasets together, the
network would otherwise learn the atlas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hypermodal.evidence.fusion import balanced_weights
from hypermodal.inference.model import to_model_input
from hypermodal.models import build_model
from hypermodal.train.steps import augment_batch


@dataclass
class PixelConfig:
    """The fold CNN's schedule (``steps`` batches of ``batch_size``; ``train_size`` px)."""

    model: str = "resnet18"
    train_size: int = 96
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    #: Simulated datasets (by name prefix) the CNN does not train on: CT exports are pseudo-CT
    #: made from MR anatomy, which after min-max scaling looks like the MR it came from — they
    #: teach the intensity-scale features, and would teach the CNN that MR-shaped heads are CT.
    skip_prefixes: tuple[str, ...] = ("sim-ct.",)

    def trains_on(self, datasets: np.ndarray) -> np.ndarray:
        """Rows (by dataset name) this CNN may train on."""
        names = np.asarray(datasets, dtype=object).astype(str)
        skip = np.zeros(len(names), dtype=bool)
        for prefix in self.skip_prefixes:
            skip |= np.char.startswith(names.astype(str), prefix)
        return ~skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skip_prefixes": list(self.skip_prefixes)}


def fit_pixels(
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    config: PixelConfig,
    device: torch.device | None = None,
) -> nn.Module:
    """Train the CNN on uint8 ``images`` (N × S × S) with class indices ``labels``.

    ``groups`` (dataset per image) balance the sampling with the class weights.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model(config.model, num_classes, 1).to(device)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps))
    )
    weights = balanced_weights(np.asarray(labels), np.asarray(groups, dtype=object))
    weights = weights / weights.sum()
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    model.train()
    for _ in range(config.steps):
        idx = np.sort(rng.choice(len(images), size=config.batch_size, p=weights))
        x = to_model_input(np.asarray(images[idx]), device, config.train_size)
        x = augment_batch(x)
        loss = F.cross_entropy(model(x), y_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


def model_outputs(model: nn.Module) -> int:
    """Number of classes a network predicts (its last layer's outputs)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return int(last.out_features)


def pixel_probs(
    model: nn.Module,
    images: np.ndarray,
    train_size: int,
    batch_size: int = 128,
    device: torch.device | None = None,
) -> np.ndarray:
    """Softmax probabilities of ``model`` for uint8 ``images`` (N × S × S)."""
    device = device or torch.device("cpu")
    out = []
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            x = to_model_input(np.asarray(images[lo : lo + batch_size]), device, train_size)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, model_outputs(model)), dtype=np.float32)
    return np.concatenate(out)
