"""Model builders: names, one-channel stems, output shapes."""

from __future__ import annotations

import pytest
import torch

from hypermodal.models import MODEL_NAMES, build_model


def test_model_names_default_first() -> None:
    assert MODEL_NAMES == ("resnet18", "resnet50", "vgg16")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_channel_stem_and_output_shape(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, in_chans=1)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 4)
    assert torch.isfinite(out).all()
    # every network has BatchNorm; for vgg16 that is the VGG16-BN variant the paper's code trained
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_name_is_case_insensitive_and_classes_configurable() -> None:
    model = build_model("ResNet18", num_classes=7)
    assert model.fc.out_features == 7


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = build_model("resnet18", 4)
    torch.manual_seed(3)
    b = build_model("resnet18", 4)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet18, resnet50, vgg16"):
        build_model("densenet121", 4)


def test_bad_class_count() -> None:
    with pytest.raises(ValueError):
        build_model("resnet18", 0)
