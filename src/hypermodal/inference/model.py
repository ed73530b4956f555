"""Loading a model and running it on preprocessed images (imports nothing from training).

:func:`load_model` reads a PyTorch checkpoint (``.pt``, format and reader in
:mod:`.checkpoint`) or an ONNX model bundle (``*.onnx.zip``, :mod:`.onnx_bundle`; the bundled
default model is one, run on ONNX Runtime by :mod:`.onnx_runtime` with no PyTorch;
``backend="torch"`` rebuilds the PyTorch network from its weights instead), and
:func:`predict_proba` turns uint8 images into class probabilities. Training feeds its batches
through :func:`to_model_input` as well, so training and prediction see identical inputs.
PyTorch is imported only where it is used, so this module imports without it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hypermodal.common.errors import CheckpointError
from hypermodal.inference.backends import (
    BACKENDS,
    TRAIN_EXTRA,
    is_onnx_bundle,
    resolve_device,
    torch_available,
)
from hypermodal.inference.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    REQUIRED_KEYS,
    read_checkpoint,
)
from hypermodal.inference.loaded import LoadedModel, evidence_model, model_parts, torch_network

if TYPE_CHECKING:
    import torch


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "REQUIRED_KEYS",
    "LoadedModel",
    "autocast_context",
    "autocast_dtype",
    "evidence_model",
    "load_model",
    "predict_proba",
    "read_checkpoint",
    "resolve_device",
    "to_model_input",
]


def _writable(array: np.ndarray) -> np.ndarray:
    """A C-contiguous writable array (torch warns on read-only memory maps)."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def to_model_input(
    batch: torch.Tensor | np.ndarray,
    device: torch.device | str,
    train_size: int | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Turn a uint8 batch into the float input the network was trained on.

    Moves the uint8 batch to ``device`` (non-blocking: pinned host memory makes it asynchronous),
    converts to float32 in [0, 1] (``/255``), adds the channel axis and, when ``train_size``
    differs from the stored size, resizes with antialiased bilinear interpolation on the device.

    Args:
        batch: uint8 images ``(B, S, S)`` or ``(B, 1, S, S)``.
        device: where the model lives.
        train_size: side length the model was trained at; ``None`` keeps ``S``.
        channels_last: return a channels-last tensor (faster convolutions on CUDA).

    Returns:
        float32 tensor ``(B, 1, train_size, train_size)`` on ``device``.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(_writable(batch))
    if batch.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {batch.dtype}")
    if batch.ndim == 3:
        batch = batch.unsqueeze(1)
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"expected (B, S, S) or (B, 1, S, S), got {tuple(batch.shape)}")
    x = batch.to(device, non_blocking=True).float().div_(255.0)
    if train_size is not None and (x.shape[-2], x.shape[-1]) != (train_size, train_size):
        x = F.interpolate(
            x, size=(train_size, train_size), mode="bilinear", align_corners=False, antialias=True
        )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def load_model(
    path: Path | str,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    threads: int | None = None,
) -> LoadedModel:
    """Load a checkpoint (``.pt``, PyTorch) or an ONNX model bundle (``.onnx.zip``) for
    inference.

    Args:
        path: ``best.pt``, ``last.pt``, an ``epoch-NNN.pt`` file, or a bundle from
            :func:`~hypermodal.inference.onnx_export.export_onnx` (the default model is one).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        backend: ``"auto"``: a bundle runs on ONNX Runtime (on PyTorch only for a GPU that
            ONNX Runtime cannot use here), a ``.pt`` checkpoint on PyTorch; ``"onnx"`` or
            ``"torch"`` to choose (``"torch"`` rebuilds the network from an fp32 bundle's
            weights; a ``.pt`` runs on ONNX Runtime once exported).
        threads: ONNX Runtime intra-op threads (default: the CPUs this process may use).

    Returns:
        A :class:`LoadedModel` whose model is in eval mode.

    Raises:
        CheckpointError: see :func:`read_checkpoint` and
            :func:`~hypermodal.inference.onnx_bundle.read_bundle`, weights that do not fit the
            model, or a PyTorch checkpoint where PyTorch is not installed.
        DeviceError: see :func:`resolve_device`.
        ValueError: an unknown ``backend``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if is_onnx_bundle(path):
        from hypermodal.inference.onnx_load import load_bundle

        return load_bundle(path, device, backend, threads)
    if backend == "onnx":
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint; to run it on ONNX Runtime, export it first: "
            f"hypermodal export {path} --out MODEL.onnx.zip"
        )
    if not torch_available():
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint: predicting with it needs PyTorch: {TRAIN_EXTRA} "
            "(or export it to ONNX where PyTorch is installed: hypermodal export)"
        )
    dev = resolve_device(device)
    data = read_checkpoint(path, map_location="cpu")
    vocabulary, preprocess, evidence = model_parts(data, data.get("evidence"), path)
    model = torch_network(data, data["model_state"], dev, path)
    meta = {k: v for k, v in data.items() if k not in ("model_state", "training_state", "evidence")}
    meta["path"] = str(path)
    return LoadedModel(
        model=model,
        vocabulary=vocabulary,
        preprocess=preprocess,
        train_size=int(data["train_size"]),
        device=dev,
        meta=meta,
        evidence=evidence,
    )


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (``auto``, ``bf16``, ``fp16``, ``off``) on ``device``:
    ``None`` (full precision) off CUDA or with ``off``; ``auto`` is bf16 where the GPU has it,
    else fp16."""
    if device.type != "cuda" or amp == "off":
        return None
    import torch

    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``dtype``, or a no-op context when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=dtype)


def _check_batch(batch: Any, size: int) -> Any:
    if batch.ndim == 2:
        batch = batch[None]
    if tuple(batch.shape[-2:]) != (size, size):
        raise ValueError(
            f"images are {tuple(batch.shape[-2:])}, the model expects {size}×{size} uint8 "
            "prepared with its preprocess config"
        )
    return batch


def predict_proba(
    loaded: LoadedModel, batch: np.ndarray | torch.Tensor, amp: bool = False
) -> np.ndarray:
    """Class probabilities (softmax, not logits) for a batch of preprocessed images.

    The batch goes through exactly the input path of training: uint8 → device → ``/255`` →
    resize to ``loaded.train_size`` (antialiased) → model in eval mode, without gradients
    (on ONNX Runtime: the same steps in numpy, :class:`~.onnx_runtime.OnnxNetwork`).

    Args:
        loaded: from :func:`load_model`.
        batch: uint8 images ``(B, S, S)`` (or one ``(S, S)`` image) prepared with
            ``hypermodal.preprocess.to_uint8(img, loaded.preprocess)``; ``S`` must equal
            ``loaded.preprocess.size``.
        amp: on CUDA, run the network under bf16/fp16 autocast (faster; probabilities may
            differ in the third decimal). Ignored on the CPU and on ONNX Runtime.

    Returns:
        float32 array ``(B, num_classes)``; rows sum to 1; column ``i`` is
        ``loaded.classes[i]``.
    """
    size = loaded.preprocess.size
    if loaded.backend == "onnx":
        array = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
        array = _check_batch(array, size)
        if array.dtype != np.uint8:
            raise TypeError(f"expected a uint8 batch, got {array.dtype}")
        if array.shape[0] == 0:
            return np.zeros((0, loaded.vocabulary.num_classes), dtype=np.float32)
        return loaded.model.probabilities(array)
    import torch

    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(_writable(batch))
    batch = _check_batch(batch, size)
    if batch.shape[0] == 0:
        return np.zeros((0, loaded.vocabulary.num_classes), dtype=np.float32)
    model = loaded.model
    if model.training:
        model.eval()
    dev = loaded.device
    dtype = autocast_dtype("auto" if amp else "off", dev)
    with torch.inference_mode():
        x = to_model_input(batch, dev, loaded.train_size, channels_last=dev.type == "cuda")
        with autocast_context(dev, dtype):
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1)
    return probs.cpu().numpy()
