"""The PyTorch checkpoint format, and its reader (the writer is :mod:`hypermodal.train.checkpoint`).

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
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypermodal.common.errors import CheckpointError
from hypermodal.inference.backends import TRAIN_EXTRA, is_onnx_bundle, torch_available
from hypermodal.inference.integrity import check_digest, check_settings

if TYPE_CHECKING:
    import torch

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
    if is_onnx_bundle(path):
        raise CheckpointError(f"{path} is an ONNX model bundle, not a PyTorch checkpoint")
    if not torch_available():
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint: reading it needs PyTorch: {TRAIN_EXTRA}"
        )
    import torch

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
