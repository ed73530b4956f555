"""What a loaded model is made of, shared by the two loaders (``.pt`` checkpoints in
:mod:`.model`, ONNX bundles in :mod:`.onnx_load`): the :class:`LoadedModel` record, the class
order, preprocessing and evidence rebuilt from a checkpoint's data (:func:`model_parts`), and the
PyTorch network rebuilt from weights (:func:`torch_network`, importing PyTorch only there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypermodal.common.errors import CheckpointError
from hypermodal.evidence import EvidenceModel
from hypermodal.inference.backends import DeviceName
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hypermodal.inference.onnx_runtime import OnnxNetwork

__all__ = ["LoadedModel", "evidence_model", "model_parts", "torch_network"]


@dataclass
class LoadedModel:
    """A model ready for inference, with everything needed to feed it correctly.

    Attributes:
        model: the network: an ``nn.Module`` in eval mode on ``device`` (``backend="torch"``)
            or an :class:`~hypermodal.inference.onnx_runtime.OnnxNetwork` (``"onnx"``).
        vocabulary: class order; output ``i`` is ``vocabulary.classes[i]``.
        preprocess: how images must be prepared (size, scaling) before :func:`predict_proba`.
        train_size: side length the network sees (inputs are resized to it).
        device: where the model lives.
        meta: the rest of the checkpoint (model_name, config, split_hash, versions, epoch,
            history, best, store_path, path; a bundle's ``onnx``, ``int8`` and ``source``),
            without weights and training state.
        evidence: the checkpoint's feature forest and fusion; ``None`` for a checkpoint that has
            none (the CNN alone decides; see :func:`evidence_model`).
        backend: ``torch`` (PyTorch) or ``onnx`` (ONNX Runtime).
    """

    model: nn.Module | OnnxNetwork
    vocabulary: ClassVocabulary
    preprocess: PreprocessConfig
    train_size: int
    device: torch.device | DeviceName
    meta: dict[str, Any] = field(default_factory=dict)
    evidence: EvidenceModel | None = None
    backend: str = "torch"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.vocabulary.classes


def evidence_model(loaded: LoadedModel) -> EvidenceModel:
    """The evidence ``loaded`` predicts with: its own, or — for a checkpoint without one — the
    CNN with the header beside it and a neutral fusion (pixels decide; the header only flags)."""
    if loaded.evidence is not None:
        return loaded.evidence
    return EvidenceModel.pixels_only(loaded.classes, "checkpoint has no feature model")


def model_parts(
    data: dict[str, Any], evidence_state: Any, path: Path
) -> tuple[ClassVocabulary, PreprocessConfig, EvidenceModel | None]:
    """The class order, preprocessing and evidence of a checkpoint or bundle, cross-checked."""
    try:
        vocabulary = ClassVocabulary.from_dict(data["vocabulary"])
        preprocess = PreprocessConfig.from_dict(data["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from exc
    if vocabulary.num_classes != int(data["num_classes"]):
        raise CheckpointError(
            f"{path}: vocabulary has {vocabulary.num_classes} classes, model has "
            f"{data['num_classes']} outputs"
        )
    evidence = None
    if evidence_state:
        try:
            evidence = EvidenceModel.from_state(evidence_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable evidence model: {exc}") from exc
        if evidence.classes != vocabulary.classes:
            raise CheckpointError(f"{path}: evidence classes differ from the model's")
    return vocabulary, preprocess, evidence


def torch_network(data: dict[str, Any], state: dict[str, Any], dev: Any, path: Path) -> nn.Module:
    """The PyTorch network of ``data`` with the weights ``state`` (tensors or arrays), on
    ``dev`` in eval mode."""
    import torch

    from hypermodal.models import build_model

    try:
        model = build_model(
            data["model_name"], int(data["num_classes"]), int(data.get("in_chans", 1))
        )
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from exc
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model.eval()
