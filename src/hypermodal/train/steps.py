"""One epoch of training, one pass of validation, and the optional augmentation of a batch.

Both passes take an iterable of host batches (uint8 images, labels, rows; a
:class:`hypermodal.store.loader.BatchFeeder` epoch) and turn each into the network's input with
:func:`hypermodal.inference.to_model_input`, the function prediction uses too. They return the
mean loss and accuracy, summed over data-parallel ranks first when given ``reduce``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hypermodal.inference.model import autocast_context, to_model_input
from hypermodal.train.distributed import loss_weight


def augment_batch(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Random flips, quarter turns and a shared random crop (resized back) for a float batch.

    Draws from torch's global generator, which the loop re-seeds every epoch, so a resumed run
    sees the same augmentations.
    """
    b, _, h, w = x.shape
    flip_h = torch.rand(b, device=x.device) < 0.5
    flip_v = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
    if h == w:
        turns = int(torch.randint(0, 4, (1,)).item())
        x = torch.rot90(x, turns, dims=(-2, -1))
    frac = float(torch.empty(1).uniform_(0.7, 1.0).item())
    ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
    top = int(torch.randint(0, h - ch + 1, (1,)).item())
    left = int(torch.randint(0, w - cw + 1, (1,)).item())
    x = x[:, :, top : top + ch, left : left + cw]
    if (ch, cw) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def _shown(bar: Any) -> bool:
    """``bar`` is a progress bar that is displayed (not ``None``, not a disabled tqdm)."""
    return bar is not None and not getattr(bar, "disable", False)


def train_one_epoch(
    model: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    train_size: int | None = None,
    channels_last: bool = False,
    augment: bool = False,
    bar: Any = None,
    global_sizes: Sequence[int] | None = None,
    world_size: int = 1,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step_lr: Callable[[int], float | None] | None = None,
    start_step: int = 0,
    start_sums: dict[str, Any] | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """One pass of SGD over ``batches`` (iterable of uint8 images, labels, rows).

    Args:
        global_sizes: under data parallelism, images in each *global* batch; each rank's loss
            is weighted by :func:`~hypermodal.train.distributed.loss_weight` so that DDP's
            gradient average is the gradient of the global mean loss.
        world_size: data-parallel processes.
        reduce: sums a float64 tensor over ranks (``DistContext.all_reduce_sum``); the returned
            loss/accuracy/images are then over the whole global epoch.
        step_lr: learning rate for step ``i`` of this epoch, or ``None`` to leave it (warm-up).
        start_step: steps of this epoch already done (a run resumed mid-epoch): ``batches``
            starts at that step, which indexes ``global_sizes`` and ``step_lr``.
        start_sums: this rank's running sums of the steps already done (``loss_sum``,
            ``correct``, ``images``), continued from instead of zero.
        on_step: called after every optimisation step with the number of steps of this epoch
            done and this rank's running sums (``loss_sum``/``correct`` tensors, ``images``).

    Returns:
        ``{"loss", "accuracy", "images"}``; loss is the mean cross-entropy per image.
    """
    model.train()
    show = _shown(bar)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    if start_sums is not None:
        loss_sum += float(start_sums["loss_sum"])
        correct += int(start_sums["correct"])
        seen = int(start_sums["images"])
    for i, (x_u8, y, _rows) in enumerate(batches):
        step = start_step + i
        if step_lr is not None:
            lr = step_lr(step)
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
        x = to_model_input(x_u8, device, train_size, channels_last)
        if augment:
            x = augment_batch(x, channels_last)
        y = y.to(device, non_blocking=True)
        n = int(y.shape[0])
        with autocast_context(device, amp_dtype):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        weight = (
            loss_weight(n, int(global_sizes[step]), world_size) if global_sizes is not None else 1.0
        )
        objective = loss * weight if weight != 1.0 else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(objective).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            objective.backward()
            optimizer.step()
        seen += n
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(dim=1) == y).sum()
        if show:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        if on_step is not None:
            on_step(step + 1, {"loss_sum": loss_sum, "correct": correct, "images": seen})
    return _summarise(loss_sum, correct, seen, reduce)


def _summarise(
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
    seen: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None,
) -> dict[str, float]:
    """Mean loss and accuracy from sums, summed over ranks first when ``reduce`` is given."""
    totals = torch.stack(
        [loss_sum.detach().double().cpu(), correct.double().cpu(), torch.tensor(float(seen))]
    ).double()
    if reduce is not None:
        totals = reduce(totals)
    loss_total, correct_total, n = (float(v) for v in totals.tolist())
    if not n:
        return {"loss": float("nan"), "accuracy": float("nan"), "images": 0}
    return {"loss": loss_total / n, "accuracy": correct_total / n, "images": int(round(n))}


def validate(
    model: nn.Module,
    batches: Any,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    train_size: int | None = None,
    channels_last: bool = False,
    bar: Any = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Loss and accuracy over ``batches`` in eval mode without gradients.

    With ``reduce`` (``DistContext.all_reduce_sum``) each rank passes its own part of the split
    and the sums are added over ranks, so every rank returns the metrics of the whole split.

    BatchNorm uses (and does not update) its running statistics; dropout is off. The model's
    previous train/eval mode is restored on return.

    Returns:
        ``{"loss", "accuracy", "images"}`` (NaN loss/accuracy when there are no images).
    """
    was_training = model.training
    show = _shown(bar)
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    try:
        with torch.no_grad():
            for x_u8, y, _rows in batches:
                if not len(y):
                    continue
                x = to_model_input(x_u8, device, train_size, channels_last)
                y = y.to(device, non_blocking=True)
                with autocast_context(device, amp_dtype):
                    logits = model(x)
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
                correct += (logits.argmax(dim=1) == y).sum()
                seen += int(y.shape[0])
                if show:
                    bar.update(1)
    finally:
        model.train(was_training)
    return _summarise(loss_sum, correct, seen, reduce)


def warmup_schedule(
    epoch: int, steps_per_epoch: int, warmup_steps: int, lr: float
) -> Callable[[int], float | None] | None:
    """The warm-up learning rate of each step of ``epoch`` (0-based), or ``None`` past warm-up.

    The rate rises linearly from ``lr / warmup_steps`` to ``lr`` over the first
    ``warmup_steps`` steps of the run; the returned function gives ``None`` for a step after
    them (the rate is then left as it is).
    """
    if epoch * steps_per_epoch >= warmup_steps:
        return None

    def lr_at(step: int) -> float | None:
        done = epoch * steps_per_epoch + step + 1
        return lr * min(1.0, done / warmup_steps) if done <= warmup_steps else None

    return lr_at
