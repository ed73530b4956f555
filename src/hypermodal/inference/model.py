"""Reading checkpoints and running a model on preprocessed images (imports nothing from training).

A checkpoint is a plain dict of tensors and plain Python values (no pickled classes), so
``torch.load(path, weights_only=True)`` reads it and a file from elsewhere cannot run code::

    format, format_version      "hypermodal-checkpoint", 1
    model_name, num_classes, in_chans
    model_state                 state dict (CPU tensors)
    vocabulary                  ClassVocabulary.to_dict(): output i means classes[i]
    preprocess                  PreprocessConfig.to_dict() of the store the model was trained on
    train_size                  side length fed to the network (inference resizes to it too)
    config                      the resolved TrainConfig.to_dict()
    store_path, split_hash      where the training data came from
    versions                    package versions (hypermodal.common.versions.package_versions())
    epoch                       completed epochs
    history                     one dict per epoch (losses, accuracies, lr, seconds, images/s)
    best                        {"epoch", "metric", "value"}: the best epoch so far
    evidence                    optional: the feature forest, header trust and fitted fusion
                                (:meth:`hypermodal.evidence.EvidenceModel.to_state`); without it
                                prediction uses the CNN alone
    training_state              last.pt only: optimizer, scheduler, grad scaler, RNG states
    tensor_digest               "sha256:<hex>" over every tensor above, verified on load
                                (hypermodal.inference.integrity); a checkpoint written before
                                digests existed has none and loads with a warning
    step_in_epoch               a mid-epoch last.pt only (``checkpoint_every_steps``): global
                                batches done in epoch ``epoch + 1``; ``training_state.mid_epoch``
                                then holds that epoch, the step, the steps per epoch, the world
                                size, the epoch's first learning rate, its training seconds so far
                                and, per rank, the RNG state and running loss/correct/image sums

The writer side is :mod:`hypermodal.train.checkpoint`. Training feeds its batches through
:func:`to_model_input` as well, so training and prediction see identical inputs.
"""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hypermodal.common.errors import CheckpointError, DeviceError
from hypermodal.evidence import EvidenceModel
from hypermodal.inference.integrity import check_digest, check_settings
from hypermodal.labels import ClassVocabulary
from hypermodal.models import build_model
from hypermodal.preprocess import PreprocessConfig

CHECKPOINT_FORMAT = "hypermodal-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = (
    "model_name",
    "num_classes",
    "model_state",
    "vocabulary",
    "preprocess",
    "train_size",
    "config",
    "split_hash",
    "versions",
    "epoch",
    "history",
)


#: the device types a model may run on
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → the first CUDA device when available, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` and ``"mps"`` as given, once checked against this machine.

    Raises:
        DeviceError: not a device name, or a device this machine does not have (no CUDA, no
            GPU ``N``, no MPS).
    """
    if isinstance(device, torch.device):
        resolved = device
    elif str(device).strip().lower() == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(str(device).strip().lower())
        except (RuntimeError, ValueError):
            resolved = None
        if resolved is None or resolved.type not in DEVICE_TYPES:
            raise DeviceError(
                f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
            ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {str(device)!r} requested but there are {count} GPU(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r} requested but MPS is not available here")
    return resolved


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


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: the ``.pt`` file.
        map_location: where tensors are placed.

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        CheckpointError: the file is missing, unreadable, corrupt (a tensor digest that does not
            match, a size or count that is not a positive integer), or not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is corrupt, truncated or not a PyTorch checkpoint (not a torch.save zip file)"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values, so it is not a "
            f"hypermodal checkpoint (refusing to unpickle it): {exc}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is corrupt or not a PyTorch file: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a hypermodal checkpoint")
    version = data.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this hypermodal reads "
            f"up to {CHECKPOINT_VERSION} (upgrade hypermodal)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    check_digest(path, data)
    check_settings(path, data)
    return data


@dataclass
class LoadedModel:
    """A model ready for inference, with everything needed to feed it correctly.

    Attributes:
        model: the network, in eval mode, on ``device``.
        vocabulary: class order; output ``i`` is ``vocabulary.classes[i]``.
        preprocess: how images must be prepared (size, scaling) before :func:`predict_proba`.
        train_size: side length the network sees (inputs are resized to it on the device).
        device: where the model lives.
        meta: the rest of the checkpoint (model_name, config, split_hash, versions, epoch,
            history, best, store_path, path), without weights and training state.
        evidence: the checkpoint's feature forest and fusion; ``None`` for a checkpoint that has
            none (the CNN alone decides; see :func:`evidence_model`).
    """

    model: nn.Module
    vocabulary: ClassVocabulary
    preprocess: PreprocessConfig
    train_size: int
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    evidence: EvidenceModel | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.vocabulary.classes


def evidence_model(loaded: LoadedModel) -> EvidenceModel:
    """The evidence ``loaded`` predicts with: its own, or — for a checkpoint without one — the
    CNN with the header beside it and a neutral fusion (pixels decide; the header only flags)."""
    if loaded.evidence is not None:
        return loaded.evidence
    return EvidenceModel.pixels_only(loaded.classes, "checkpoint has no feature model")


def load_model(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint for inference.

    Args:
        path: ``best.pt``, ``last.pt`` or an ``epoch-NNN.pt`` file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.

    Returns:
        A :class:`LoadedModel` whose model is in eval mode.

    Raises:
        CheckpointError: see :func:`read_checkpoint`, or weights that do not fit the model.
        DeviceError: see :func:`resolve_device`.
    """
    dev = resolve_device(device)
    data = read_checkpoint(path, map_location="cpu")
    try:
        vocabulary = ClassVocabulary.from_dict(data["vocabulary"])
        preprocess = PreprocessConfig.from_dict(data["preprocess"])
        model = build_model(
            data["model_name"], int(data["num_classes"]), int(data.get("in_chans", 1))
        )
        model.load_state_dict(data["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from exc
    if vocabulary.num_classes != int(data["num_classes"]):
        raise CheckpointError(
            f"{path}: vocabulary has {vocabulary.num_classes} classes, model has "
            f"{data['num_classes']} outputs"
        )
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    model.eval()
    evidence = None
    if data.get("evidence"):
        try:
            evidence = EvidenceModel.from_state(data["evidence"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable evidence model: {exc}") from exc
        if evidence.classes != vocabulary.classes:
            raise CheckpointError(f"{path}: evidence classes differ from the model's")
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
    return torch.autocast(device.type, dtype=dtype)


def predict_proba(
    loaded: LoadedModel, batch: np.ndarray | torch.Tensor, amp: bool = False
) -> np.ndarray:
    """Class probabilities (softmax, not logits) for a batch of preprocessed images.

    The batch goes through exactly the input path of training: uint8 → device → ``/255`` →
    resize to ``loaded.train_size`` (antialiased) → model in eval mode, without gradients.

    Args:
        loaded: from :func:`load_model`.
        batch: uint8 images ``(B, S, S)`` (or one ``(S, S)`` image) prepared with
            ``hypermodal.preprocess.to_uint8(img, loaded.preprocess)``; ``S`` must equal
            ``loaded.preprocess.size``.
        amp: on CUDA, run the network under bf16/fp16 autocast (faster; probabilities may
            differ in the third decimal). Ignored on the CPU.

    Returns:
        float32 array ``(B, num_classes)``; rows sum to 1; column ``i`` is
        ``loaded.classes[i]``.
    """
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(_writable(batch))
    if batch.ndim == 2:
        batch = batch.unsqueeze(0)
    size = loaded.preprocess.size
    if batch.shape[-2:] != (size, size):
        raise ValueError(
            f"images are {tuple(batch.shape[-2:])}, the model expects {size}×{size} uint8 "
            "prepared with its preprocess config"
        )
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
