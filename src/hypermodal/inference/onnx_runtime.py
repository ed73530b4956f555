"""Running a bundle's CNN on ONNX Runtime, with the input path of training and no PyTorch.

:class:`OnnxNetwork` takes the same uint8 batches as the PyTorch path
(:func:`hypermodal.inference.model.to_model_input`) and does the same to them in numpy: ``/255``
to float32, the channel axis, and, when the network was trained at another side than the
images are preprocessed to, the antialiased bilinear resize as the matrix product
``R · X · Rᵀ`` (``R`` was computed from PyTorch's own resize at export, so both paths agree to
float rounding). Then ONNX Runtime runs the network in batches and a softmax gives the
probabilities.

Session options: intra-op threads = the CPUs this process may use (or ``threads``), one
inter-op thread, sequential execution, every graph optimisation (the float16 weights' casts
are folded once, batch norm fused into the convolutions), and no spin-waiting between calls, so
the decoding processes that feed ``predict`` keep their cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hypermodal.common.errors import CheckpointError, DeviceError
from hypermodal.inference.backends import cpu_count, onnx_has_cuda

#: images per ONNX Runtime call (bounds the memory of one call; larger batches are split)
DEFAULT_BATCH = 64


def _providers(device: Any) -> list[Any]:
    kind = getattr(device, "type", str(device))
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        if not onnx_has_cuda():
            raise DeviceError(
                f"device {str(device)!r}: ONNX Runtime here has no CUDA provider "
                "(pip install onnxruntime-gpu)"
            )
        index = getattr(device, "index", None) or 0
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    raise DeviceError(f"device {str(device)!r} cannot run an ONNX model (use cpu or cuda)")


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options: ``threads`` intra-op threads (default: the CPUs given)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or cpu_count())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # warnings about the host's CPU features are not the user's
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (as ``torch.softmax(logits.float(), dim=1)``)."""
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxNetwork:
    """A bundle's CNN in an ONNX Runtime session.

    Args:
        model: the ONNX bytes (``model.onnx`` of a bundle).
        size: side of the preprocessed uint8 images it is fed.
        resize: the (T × S) resize matrix, or None when the network runs at ``size``.
        device: ``cpu`` or ``cuda[:N]`` (a ``torch.device`` or
            :class:`~hypermodal.inference.backends.DeviceName`).
        threads: intra-op threads (default: the CPUs this process may use).
        batch_size: images per ONNX Runtime call.
    """

    #: like an ``nn.Module`` in eval mode, for code that checks
    training = False

    def __init__(
        self,
        model: bytes,
        size: int,
        resize: np.ndarray | None = None,
        device: Any = "cpu",
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        import onnxruntime as ort

        self.size = int(size)
        self.resize = None if resize is None else np.ascontiguousarray(resize, np.float32)
        if self.resize is not None and self.resize.shape[1] != self.size:
            raise CheckpointError(
                f"resize matrix is {self.resize.shape}, images are {self.size}×{self.size}"
            )
        self.batch_size = int(batch_size)
        self.threads = int(threads or cpu_count())
        try:
            self.session = ort.InferenceSession(
                model, session_options(self.threads), providers=_providers(device)
            )
        except DeviceError:
            raise
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors derive from Exception
            raise CheckpointError(f"ONNX Runtime cannot load the model: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CheckpointError(f"the ONNX model has {len(inputs)} inputs, expected 1")
        self.input_name = inputs[0].name
        self.providers = self.session.get_providers()

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S)`` → float32 ``(B, 1, T, T)`` in [0, 1], resized as training did."""
        x = np.asarray(batch, dtype=np.float32) / np.float32(255.0)
        if self.resize is not None:
            x = np.matmul(np.matmul(self.resize, x), self.resize.T)
        return np.ascontiguousarray(x[:, None])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The network's logits for a prepared float batch, ``batch_size`` images per call."""
        out = [
            self.session.run(None, {self.input_name: x[i : i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, classes)`` for uint8 images ``(B, S, S)``."""
        return softmax(self.logits(self.prepare(batch)))
