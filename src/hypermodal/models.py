"""The networks of the paper (§2.4): ResNet-18, ResNet-50 and VGG16 with a one-channel stem.

Why torchvision and not timm: the paper's code copied torchvision's model definitions and only
changed the input layer from three channels to one. torchvision's builders give exactly those
architectures (same layers, same initialisation) with ``weights=None``, so nothing is fetched
from a hub. timm's ``resnet18``/``resnet50`` are equivalent, but its ``vgg16`` replaces the
4096-4096 fully connected head with a convolutional "pre-logits" block, which is not the
network the paper trained.

``vgg16`` here is VGG16 *with batch normalisation* (torchvision's ``vgg16_bn``): that is what the
paper's code trained (``_vgg("vgg16", "D", batch_norm=True)``), and plain VGG16 from random
initialisation does not train at the paper's learning rate of 0.1.

All weights are randomly initialised (seed the global torch RNG before calling for a
reproducible start). Inputs are float tensors ``(B, in_chans, H, W)`` in [0, 1]; the models
take any ``H, W ≥ 32``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models as tvm

#: Valid model names, default first.
MODEL_NAMES: tuple[str, ...] = ("resnet18", "resnet50", "vgg16")

DEFAULT_MODEL = MODEL_NAMES[0]


def _init_conv(conv: nn.Conv2d) -> None:
    """torchvision's initialisation for convolutions (He normal, fan-out)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _resnet(builder: Callable[..., tvm.ResNet], num_classes: int, in_chans: int) -> nn.Module:
    model = builder(weights=None, num_classes=num_classes)
    old = model.conv1
    model.conv1 = nn.Conv2d(
        in_chans,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=False,
    )
    _init_conv(model.conv1)
    return model


def _vgg16(num_classes: int, in_chans: int) -> nn.Module:
    model = tvm.vgg16_bn(weights=None, num_classes=num_classes)
    old = model.features[0]
    model.features[0] = nn.Conv2d(
        in_chans, old.out_channels, kernel_size=old.kernel_size, padding=old.padding
    )
    _init_conv(model.features[0])
    return model


def build_model(name: str, num_classes: int, in_chans: int = 1) -> nn.Module:
    """Build a randomly initialised classifier.

    Args:
        name: one of :data:`MODEL_NAMES` (case-insensitive).
        num_classes: number of output logits (the vocabulary size).
        in_chans: input channels; 1 for the grayscale slices of the store.

    Returns:
        A torchvision model in training mode whose forward maps ``(B, in_chans, H, W)`` to
        logits ``(B, num_classes)``.

    Raises:
        ValueError: unknown name, or non-positive ``num_classes``/``in_chans``.

    >>> import torch
    >>> m = build_model("resnet18", num_classes=4)
    >>> m(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 4])
    """
    key = str(name).strip().lower()
    if key not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be ≥ 1, got {in_chans}")
    if key == "resnet18":
        return _resnet(tvm.resnet18, num_classes, in_chans)
    if key == "resnet50":
        return _resnet(tvm.resnet50, num_classes, in_chans)
    return _vgg16(num_classes, in_chans)
