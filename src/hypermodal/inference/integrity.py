"""What a checkpoint must pass before it is used: the digest of its tensors, and its settings.

:func:`tensor_digest` hashes (SHA-256) every tensor of a checkpoint dict in a fixed order: the
keys sorted at every level, lists in order, and for each tensor its key path, dtype, shape and
raw bytes. The writer (:func:`hypermodal.train.checkpoint.save_checkpoint`) stores it under
:data:`DIGEST_KEY`; the reader (:func:`hypermodal.inference.read_checkpoint`) recomputes it, so
bytes flipped inside a tensor (which ``torch.load`` does not notice) end in a
:class:`~hypermodal.common.errors.CheckpointError` (:func:`check_digest`). Plain values are not
part of the digest: :func:`check_settings` refuses sizes and counts a model cannot be rebuilt or
fed with (a preprocessing size of -5, zero classes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypermodal.common.errors import CheckpointError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: where a checkpoint keeps the digest of its tensors (``"sha256:<hex>"``)
DIGEST_KEY = "tensor_digest"
ALGORITHM = "sha256"


def _tensors(obj: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    import torch  # here: the settings check below serves models that need no torch

    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            if not (path == "" and key == DIGEST_KEY):
                yield from _tensors(obj[key], f"{path}/{key}")
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            yield from _tensors(item, f"{path}[{i}]")


def tensor_digest(payload: Any) -> str:
    """``"sha256:<hex>"`` over every tensor in ``payload`` (nested dicts and lists)."""
    import torch

    h = hashlib.new(ALGORITHM)
    for path, tensor in _tensors(payload, ""):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{path}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return f"{ALGORITHM}:{h.hexdigest()}"


def check_digest(path: Path, data: dict[str, Any]) -> None:
    """Recompute the digest of the tensors; a checkpoint without one loads with a warning."""
    stored = data.get(DIGEST_KEY)
    if stored is None:
        log.warning(
            "%s has no tensor digest (written by an older hypermodal): its weights cannot be "
            "verified",
            path,
        )
        return
    if not isinstance(stored, str) or tensor_digest(data) != stored:
        raise CheckpointError(
            f"{path} is corrupt: tensor digest mismatch (its weights changed after it was written)"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_settings(path: Path, data: dict[str, Any]) -> None:
    """The plain values a model is rebuilt and fed from: sizes and counts must be positive."""
    preprocess = data["preprocess"]
    values = {
        "num_classes": data["num_classes"],
        "in_chans": data.get("in_chans", 1),
        "train_size": data["train_size"],
        "preprocess.size": preprocess.get("size") if isinstance(preprocess, dict) else None,
    }
    bad = [f"{k} = {v!r}" for k, v in values.items() if not _positive_int(v)]
    if bad:
        raise CheckpointError(f"{path} is corrupt: {', '.join(bad)} (must be a positive integer)")
