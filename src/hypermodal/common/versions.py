"""Package versions recorded next to every checkpoint, config and report.

Versions are read from installed package metadata (``importlib.metadata``), so nothing heavy is
imported just to ask for a version; torch is the exception because its CUDA/cuDNN build matters
for reproducibility and it is already imported wherever checkpoints are written.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

#: Distributions whose versions are recorded (distribution name -> key in the result).
PACKAGES: dict[str, str] = {
    "hypermodal": "hypermodal",
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "scikit-learn": "sklearn",
    "pydicom": "pydicom",
    "nibabel": "nibabel",
    "opencv-python-headless": "opencv",
    "pillow": "pillow",
}


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Versions of Python, the platform and the packages that shape results.

    Returns:
        A flat dict of plain strings (``None`` for a package that is not installed), safe to put
        in JSON and in a ``weights_only`` checkpoint. Keys: ``python``, ``platform``, one per
        entry of :data:`PACKAGES`, plus ``torch_cuda`` and ``cudnn`` when torch is imported.

    >>> v = package_versions()
    >>> sorted(k for k in ("python", "torch", "numpy") if k in v)
    ['numpy', 'python', 'torch']
    """
    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for dist, key in PACKAGES.items():
        out[key] = dist_version(dist)
    if out["hypermodal"] is None:  # running from a source tree that is not installed
        try:
            from hypermodal import __version__

            out["hypermodal"] = f"{__version__} (source)"
        except ImportError:  # pragma: no cover
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(torch.__version__)
        out["torch_cuda"] = str(torch.version.cuda) if torch.version.cuda else None
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out["cudnn"] = str(cudnn) if cudnn else None
    return out
