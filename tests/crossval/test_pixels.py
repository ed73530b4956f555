"""The fold CNN: a few training steps on tiny arrays (mechanics, never accuracy)."""

from __future__ import annotations

import numpy as np
import torch

from hypermodal.crossval.pixels import PixelConfig, fit_pixels, pixel_probs
from tests.helpers import pattern_image

CONFIG = PixelConfig(steps=3, train_size=32, batch_size=8)


def _arrays(n_per_class: int = 4, classes: int = 3, size: int = 24):
    rng = np.random.default_rng(0)
    images = np.stack(
        [pattern_image(c, size, rng) for c in range(classes) for _ in range(n_per_class)]
    )
    labels = np.repeat(np.arange(classes), n_per_class)
    groups = np.array([f"ds-{c}-{i % 2}" for c in range(classes) for i in range(n_per_class)])
    return images, labels, groups


def test_fit_and_predict_on_tiny_arrays():
    images, labels, groups = _arrays()
    model = fit_pixels(images, labels, groups, num_classes=5, config=CONFIG)
    assert not model.training  # handed back ready to predict
    probs = pixel_probs(model, images, CONFIG.train_size, batch_size=5)  # several batches
    assert probs.shape == (len(images), 5) and probs.dtype == np.float32
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the same images give the same answer whatever the batch size
    np.testing.assert_allclose(
        pixel_probs(model, images, CONFIG.train_size, batch_size=64), probs, atol=1e-5
    )


def test_same_seed_same_network():
    images, labels, groups = _arrays()
    a = fit_pixels(images, labels, groups, 3, CONFIG)
    b = fit_pixels(images, labels, groups, 3, CONFIG)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = fit_pixels(
        images, labels, groups, 3, PixelConfig(steps=3, train_size=32, batch_size=8, seed=1)
    )
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )
    assert CONFIG.to_dict()["steps"] == 3 and CONFIG.to_dict()["model"] == "resnet18"
