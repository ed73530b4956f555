"""Writing checkpoints: a plain dict of tensors and plain values, saved atomically.

The format (and the reader, :func:`hypermodal.inference.read_checkpoint`) is described in
:mod:`hypermodal.inference.checkpoint`. Files are written to a temporary name and renamed, so a
crash never leaves half a checkpoint; each carries the digest of its tensors
(:mod:`hypermodal.inference.integrity`), which the reader verifies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hypermodal.common.files import atomic_path
from hypermodal.inference.integrity import DIGEST_KEY, tensor_digest
from hypermodal.inference.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

__all__ = ["cpu_state_dict", "save_checkpoint", "to_cpu"]


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically with ``torch.save`` (temporary file, fsync, rename), with
    the format keys and the digest of its tensors (any digest it carried is replaced)."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    payload[DIGEST_KEY] = tensor_digest(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (portable between machines)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def to_cpu(obj: Any) -> Any:
    """Tensors anywhere in nested dicts/lists → CPU, so checkpoints load on any machine."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
