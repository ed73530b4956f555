"""Exporting a model to an ONNX bundle: ``export_onnx(checkpoint, out, int8=False)``.

From a PyTorch checkpoint (needs PyTorch and onnxscript: ``hypermodal[train]``) the CNN goes
through ``torch.onnx.export(..., dynamo=True)`` (the exporter PyTorch keeps; the TorchScript one
is deprecated) with a dynamic batch axis. The exporter's own optimiser is left off because it
folds batch norm into the convolution weights, which would change weights that are exact in
float16; only its constant folding is run (``onnxscript.optimizer.fold_constants``: without it
the zero bias it adds to each convolution stays a computation, and ONNX Runtime then cannot fuse
batch norm itself). The graph is checked against the PyTorch network on probe images (the
probabilities must agree within :data:`EXPORT_TOLERANCE`) before it is written, and weights that
float16 holds exactly are stored as float16 (:mod:`.onnx_bundle`).

From a bundle, ``int8=True`` quantises its network (:mod:`.onnx_quantize`); this needs ONNX
Runtime and onnx only, so the default model can be quantised in the light install.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hypermodal.common.errors import CheckpointError
from hypermodal.common.versions import dist_version
from hypermodal.inference.backends import (
    TRAIN_EXTRA,
    MissingDependencyError,
    is_onnx_bundle,
    require_torch,
)
from hypermodal.inference.onnx_bundle import (
    FP16_SUFFIX,
    RESIZE_KEY,
    OnnxBundle,
    read_bundle,
    split_arrays,
    write_bundle,
)

if TYPE_CHECKING:
    from torch import nn

#: the largest difference in probability allowed between PyTorch and the exported graph
EXPORT_TOLERANCE = 1e-4
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: checkpoint keys a bundle does not carry (weights go into the graph, evidence arrays apart)
_NOT_IN_META = ("format", "format_version", "model_state", "training_state", "evidence")


def export_onnx(
    checkpoint: Path | str,
    out: Path | str,
    int8: bool = False,
    calibration: list[Path | str] | None = None,
    calibration_images: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the ONNX bundle of ``checkpoint`` (a ``.pt`` file or an fp32 bundle) to ``out``.

    Args:
        checkpoint: a checkpoint from ``train`` or ``crossval --save-model``, or a bundle.
        out: the bundle to write (``*.onnx.zip``), atomically.
        int8: quantise the network to int8 (static, QDQ, calibrated on real images).
        calibration: files and folders of real images for ``int8`` (default: the bundled
            sample corpus, gathered by ``hypermodal samples`` into the cache).
        calibration_images: at most this many images calibrate, spread over the files.
        seed: which images calibrate when there are more.
        progress: show a progress bar while calibration images are decoded.

    Returns:
        ``path``, ``bytes``, ``sha256`` of the bundle, its ``precision``, and for int8 the
        calibration and the agreement with fp32 on the calibration images.

    Raises:
        MissingDependencyError: a ``.pt`` checkpoint where PyTorch or onnxscript is missing.
        CheckpointError: an unreadable checkpoint, an int8 bundle as the source, or a graph that
            does not reproduce the network.
    """
    checkpoint = Path(checkpoint)
    if is_onnx_bundle(checkpoint):
        bundle = read_bundle(checkpoint)
        if bundle.precision != "fp32":
            raise CheckpointError(
                f"{checkpoint} is already {bundle.precision}: export from its fp32 model"
            )
        bundle.meta["source"] = {**bundle.meta.get("source", {}), "bundle": checkpoint.name}
    else:
        require_torch(f"exporting the PyTorch checkpoint {checkpoint}")
        bundle = bundle_from_checkpoint(checkpoint)
    extra: dict[str, Any] = {}
    if int8:
        from hypermodal.inference.onnx_quantize import calibration_set, quantize_bundle
        from hypermodal.preprocess import PreprocessConfig

        pre = PreprocessConfig.from_dict(bundle.meta["preprocess"])
        images, info = calibration_set(
            calibration, pre, limit=calibration_images, seed=seed, progress=progress
        )
        bundle = quantize_bundle(bundle, images, info)
        extra = {"int8": bundle.meta["int8"]}
    written = write_bundle(out, bundle)
    return {**written, "precision": bundle.precision, **extra}


# ----------------------------------------------------------------------------- from PyTorch
def resize_matrix(size: int, train_size: int) -> np.ndarray:
    """The (train_size × size) matrix ``R`` with ``R · X · Rᵀ`` = PyTorch's antialiased bilinear
    resize of ``X`` (the resize of :func:`~hypermodal.inference.model.to_model_input`), computed
    by resizing the unit vectors with PyTorch itself."""
    import torch
    import torch.nn.functional as F

    # one row image per unit vector, resized along its width (PyTorch's own weights; along a
    # height it uses the same ones, and a width of 1 is a case it treats apart)
    eye = torch.eye(size, dtype=torch.float32).reshape(size, 1, 1, size)
    rows = F.interpolate(
        eye, size=(1, train_size), mode="bilinear", align_corners=False, antialias=True
    )
    return np.ascontiguousarray(rows[:, 0, 0, :].T.numpy(), dtype=np.float32)


def _onnxscript_optimizer() -> Any:
    try:
        import onnxscript.optimizer
    except ImportError as exc:
        raise MissingDependencyError(f"exporting to ONNX needs onnxscript: {TRAIN_EXTRA}") from exc
    return onnxscript.optimizer


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_graph(net: nn.Module, in_chans: int, train_size: int) -> Any:
    """The ONNX ``ModelProto`` of ``net`` (eval mode, CPU): input :data:`INPUT_NAME` float32
    (batch, in_chans, train_size, train_size), output :data:`OUTPUT_NAME`, dynamic batch."""
    import torch

    optimizer = _onnxscript_optimizer()
    example = torch.zeros(2, in_chans, train_size, train_size)
    batch = torch.export.Dim("batch", min=1)
    # the exporter prints its progress, and its passes log at INFO
    with contextlib.redirect_stdout(io.StringIO()), _quiet("onnx_ir", "onnxscript", "torch.onnx"):
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            optimize=False,
            verbose=False,
        )
    proto = program.model_proto
    with _quiet("onnx_ir", "onnxscript"):  # they log every pass at INFO
        optimizer.fold_constants(proto)
        optimizer.remove_unused_nodes(proto)
    proto.producer_name = "hypermodal"
    return proto


def store_fp16(proto: Any) -> int:
    """Store every float32 initializer that float16 holds exactly as ``<name>.fp16`` with a
    ``Cast`` to float32 named ``<name>`` in front of the graph (in place); return how many."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        half = array.astype(np.float16)
        exact = array.dtype == np.float32 and array.size > 0 and np.all(np.isfinite(array))
        if exact and np.array_equal(half.astype(np.float32), array):
            kept.append(numpy_helper.from_array(half, init.name + FP16_SUFFIX))
            casts.append(
                helper.make_node(
                    "Cast",
                    [init.name + FP16_SUFFIX],
                    [init.name],
                    to=TensorProto.FLOAT,
                    name=f"upcast.{init.name}",
                )
            )
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return len(casts)


def _probe_images(size: int, n: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 probes: noise, and smooth shapes at every contrast (what a check should see)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    smooth = [np.exp(-((yy - 0.5) ** 2 + (xx - 0.4) ** 2) * 8), (xx + yy) / 2, np.sin(9 * xx) ** 2]
    images = [rng.integers(0, 256, (size, size)) for _ in range(n - len(smooth))]
    images += [np.round(255 * s) for s in smooth]
    return np.stack(images).astype(np.uint8)


def check_export(
    net: nn.Module, model: bytes, size: int, train_size: int, resize: np.ndarray | None
) -> float:
    """The largest probability difference between ``net`` (PyTorch) and the ONNX ``model`` on
    probe images; raises :class:`CheckpointError` above :data:`EXPORT_TOLERANCE`."""
    import torch

    from hypermodal.inference.model import to_model_input
    from hypermodal.inference.onnx_runtime import OnnxNetwork

    probes = _probe_images(size)
    with torch.inference_mode():
        expected = torch.softmax(net(to_model_input(probes, "cpu", train_size)), dim=1).numpy()
    got = OnnxNetwork(model, size, resize, "cpu").probabilities(probes)
    diff = float(np.abs(got - expected).max())
    if not diff <= EXPORT_TOLERANCE:
        raise CheckpointError(
            f"the exported graph does not reproduce the PyTorch network (max |Δp| = {diff:.2e})"
        )
    return diff


def bundle_from_checkpoint(path: Path) -> OnnxBundle:
    """An fp32 bundle of the ``.pt`` checkpoint at ``path`` (PyTorch, onnx and onnxscript)."""
    import onnx
    import torch

    from hypermodal.inference.loaded import torch_network
    from hypermodal.inference.model import read_checkpoint

    data = read_checkpoint(path)
    net = torch_network(data, data["model_state"], torch.device("cpu"), path)
    size, train_size = int(data["preprocess"]["size"]), int(data["train_size"])
    in_chans = int(data.get("in_chans", 1))
    if in_chans != 1:
        raise CheckpointError(f"{path}: only one-channel networks are exported, not {in_chans}")
    proto = export_graph(net, in_chans, train_size)
    resize = resize_matrix(size, train_size) if size != train_size else None
    diff = check_export(net, proto.SerializeToString(), size, train_size, resize)
    stored_fp16 = store_fp16(proto)
    onnx.checker.check_model(proto)
    arrays: dict[str, np.ndarray] = {} if resize is None else {RESIZE_KEY: resize}
    meta = {k: v for k, v in data.items() if k not in _NOT_IN_META and k != "tensor_digest"}
    evidence = data.get("evidence")
    meta["evidence"] = split_arrays(evidence, "evidence", arrays) if evidence else None
    meta["onnx"] = {
        "precision": "fp32",
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "exporter": "torch.onnx.export(dynamo=True) + onnxscript fold_constants",
        "weights": f"{stored_fp16} of {len(proto.graph.initializer)} initializers stored "
        "as float16 (exact), widened to float32 at load",
        "max_abs_diff_vs_torch": diff,
        "exported_with": {k: dist_version(k) for k in ("torch", "onnx", "onnxscript")},
    }
    meta["source"] = {
        "checkpoint": path.name,
        "format": data.get("format"),
        "tensor_digest": data.get("tensor_digest"),
    }
    return OnnxBundle(meta=meta, model=proto.SerializeToString(), arrays=arrays)
