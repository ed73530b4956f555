"""Which engine runs a model: PyTorch for ``.pt`` checkpoints, ONNX Runtime for ONNX models.

``pip install hypermodal`` has ONNX Runtime and no PyTorch; ``hypermodal[train]`` adds PyTorch.
Nothing here imports torch: it is only looked for (:func:`torch_available`), so the predict
path works in either install, and the commands that cannot work without PyTorch say so in one
line (:func:`require_torch`).

A device is named as PyTorch names it (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``). Where
PyTorch is absent, :func:`resolve_device_name` checks the name against what ONNX Runtime offers
here and returns a :class:`DeviceName` (``type`` and ``index``, like a ``torch.device``).
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hypermodal.common.errors import DeviceError, MissingDependencyError

if TYPE_CHECKING:
    import torch

#: what a user installs to get PyTorch (training, ``.pt`` checkpoints, export to ONNX)
TRAIN_EXTRA = "pip install 'hypermodal[train]'"
#: the member of an ONNX model bundle that says what it is (see :mod:`.onnx_bundle`)
BUNDLE_META = "meta.json"
#: the backends :func:`hypermodal.inference.load_model` accepts
BACKENDS = ("auto", "torch", "onnx")

__all__ = [
    "BACKENDS",
    "TRAIN_EXTRA",
    "DeviceName",
    "MissingDependencyError",
    "cpu_count",
    "gpu_present",
    "is_onnx_bundle",
    "onnx_device",
    "onnx_has_cuda",
    "require_torch",
    "resolve_device",
    "resolve_device_name",
    "torch_available",
]


def torch_available() -> bool:
    """Whether PyTorch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str) -> None:
    """Raise :class:`MissingDependencyError` (``"<what> needs PyTorch: pip install ..."``) when
    PyTorch is not installed."""
    if not torch_available():
        raise MissingDependencyError(f"{what} needs PyTorch: {TRAIN_EXTRA}")


def is_onnx_bundle(path: Path | str) -> bool:
    """Whether ``path`` is an ONNX model bundle (a zip holding ``meta.json`` and
    ``model.onnx``) rather than a PyTorch checkpoint (a zip holding ``*/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return BUNDLE_META in names and "model.onnx" in names


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, a container's share included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class DeviceName:
    """A device where PyTorch is absent: ``type`` (``cpu`` or ``cuda``) and ``index``."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def onnx_providers() -> list[str]:
    """The execution providers ONNX Runtime offers here (empty when it is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def onnx_has_cuda() -> bool:
    return "CUDAExecutionProvider" in onnx_providers()


def resolve_device_name(device: str) -> DeviceName:
    """``auto`` → CUDA when ONNX Runtime has it, else the CPU; ``cpu``, ``cuda``, ``cuda:N``
    as given once checked (used where PyTorch is absent).

    Raises:
        DeviceError: not a device name, MPS (PyTorch only), or CUDA that ONNX Runtime lacks.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return DeviceName("cuda", 0) if onnx_has_cuda() else DeviceName("cpu")
    kind, sep, index = name.partition(":")
    if (
        kind not in ("cpu", "cuda", "mps")
        or (sep and not index.isdigit())
        or (kind == "cpu" and sep)
    ):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if kind == "mps":
        raise DeviceError(f"device {device!r} needs PyTorch here: {TRAIN_EXTRA}")
    if kind == "cuda" and not onnx_has_cuda():
        raise DeviceError(
            f"device {device!r} requested but CUDA is not available here (ONNX Runtime has no "
            "CUDA provider: pip install onnxruntime-gpu, or PyTorch with CUDA)"
        )
    return DeviceName(kind, int(index) if sep else None)


def gpu_present() -> bool:
    """Whether this machine may have a GPU that PyTorch drives (an NVIDIA device node, or a
    Mac's MPS), found without importing PyTorch."""
    import sys

    return sys.platform == "darwin" or any(Path("/dev").glob("nvidia[0-9]*"))


def onnx_device(device: object, backend: str) -> DeviceName | None:
    """The device an ONNX bundle runs on when ONNX Runtime can take it, checked without
    importing PyTorch (a second or more and hundreds of megabytes saved on the light path);
    ``None`` when only PyTorch can drive what was asked (MPS, or CUDA that ONNX Runtime lacks
    here) and ``backend`` lets it (``auto``)."""
    name = str(device).strip().lower()
    if backend == "onnx" or not torch_available():
        return resolve_device_name(name)
    if backend != "auto":
        return None
    if name.startswith("mps") or (name.startswith("cuda") and not onnx_has_cuda()):
        return None
    if name == "auto" and not onnx_has_cuda() and gpu_present():
        return None
    return resolve_device_name(name)


#: the device types a model may run on
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device | DeviceName:
    """``"auto"`` → the first CUDA device when available, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` and ``"mps"`` as given, once checked against this machine.

    Without PyTorch the name is checked against ONNX Runtime's providers instead and a
    :class:`~hypermodal.inference.backends.DeviceName` comes back.

    Raises:
        DeviceError: not a device name, or a device this machine does not have (no CUDA, no
            GPU ``N``, no MPS).
    """
    if not torch_available():
        return resolve_device_name(str(device))
    import torch

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
