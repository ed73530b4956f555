import torch

from hypermodal.train import augment_batch


def test_augment_keeps_shape_range_and_is_reproducible():
    x = torch.rand(6, 1, 40, 40)
    torch.manual_seed(3)
    a = augment_batch(x)
    torch.manual_seed(3)
    b = augment_batch(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and torch.isfinite(a).all()
    assert a.is_contiguous()
    assert augment_batch(x, channels_last=True).is_contiguous(memory_format=torch.channels_last)


def test_augment_changes_images_but_not_their_content_statistics():
    torch.manual_seed(0)
    x = torch.zeros(8, 1, 32, 32)
    x[:, :, :16, :8] = 1.0  # an asymmetric block: flips and turns move it
    changed = sum(not torch.equal(augment_batch(x)[0], x[0]) for _ in range(10))
    assert changed >= 5
