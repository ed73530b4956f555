"""Loading an ONNX model bundle for inference: on ONNX Runtime, or rebuilt on PyTorch.

:func:`load_bundle` is what :func:`hypermodal.inference.load_model` does with a bundle
(:mod:`.onnx_bundle`): verify it, rebuild the class order, preprocessing and evidence, and run
its network on ONNX Runtime (:class:`~.onnx_runtime.OnnxNetwork`) — or, for an fp32 bundle
with ``backend="torch"`` (or a GPU that only PyTorch can drive here), rebuild the PyTorch
network from the graph's weights, which keep PyTorch's names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hypermodal.common.errors import CheckpointError
from hypermodal.inference.backends import (
    TRAIN_EXTRA,
    onnx_device,
    onnx_has_cuda,
    resolve_device,
    torch_available,
)
from hypermodal.inference.loaded import LoadedModel, model_parts, torch_network

if TYPE_CHECKING:
    from hypermodal.inference.onnx_bundle import OnnxBundle


def _bundle_state(bundle: OnnxBundle, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A bundle's weights as a PyTorch state dict (fp32 bundles: the graph keeps the names)."""
    import torch

    from hypermodal.inference.onnx_bundle import float_weights
    from hypermodal.models import build_model

    if bundle.precision != "fp32":
        raise CheckpointError(
            f"{path} is an {bundle.precision} model: it runs on ONNX Runtime only"
        )
    weights = float_weights(bundle.model)
    template = build_model(
        data["model_name"], int(data["num_classes"]), int(data.get("in_chans", 1))
    )
    state: dict[str, Any] = {}
    for key, value in template.state_dict().items():
        if key in weights and tuple(weights[key].shape) == tuple(value.shape):
            state[key] = torch.from_numpy(np.array(weights[key], dtype=np.float32))
        elif value.is_floating_point():
            raise CheckpointError(f"{path}: the ONNX graph has no weight {key!r} of this model")
        else:
            state[key] = value  # batch-norm counters: not used in eval mode
    return state


def load_bundle(path: Path, device: Any, backend: str, threads: int | None) -> LoadedModel:
    """A verified bundle ready for :func:`~hypermodal.inference.predict_proba` (see
    :func:`hypermodal.inference.load_model` for the arguments)."""
    from hypermodal.inference.onnx_bundle import read_bundle
    from hypermodal.inference.onnx_runtime import OnnxNetwork

    bundle = read_bundle(path)
    data = bundle.meta
    vocabulary, preprocess, evidence = model_parts(data, bundle.evidence_state(), path)
    named = onnx_device(device, backend)
    dev = named if named is not None else resolve_device(device)
    if backend == "auto":  # a GPU that only PyTorch can drive runs the network there
        gpu_for_torch = dev.type == "mps" or (dev.type == "cuda" and not onnx_has_cuda())
        backend = "torch" if gpu_for_torch and bundle.precision == "fp32" else "onnx"
    if backend == "torch":
        if not torch_available():
            raise CheckpointError(f"running {path} on PyTorch needs PyTorch: {TRAIN_EXTRA}")
        model: Any = torch_network(data, _bundle_state(bundle, data, path), dev, path)
    else:
        model = OnnxNetwork(bundle.model, preprocess.size, bundle.resize, dev, threads)
    meta = {k: v for k, v in data.items() if k != "evidence"}
    meta["path"] = str(path)
    return LoadedModel(
        model=model,
        vocabulary=vocabulary,
        preprocess=preprocess,
        train_size=int(data["train_size"]),
        device=dev,
        meta=meta,
        evidence=evidence,
        backend=backend,
    )
