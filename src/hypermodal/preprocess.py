"""Per-image preprocessing shared by the store and by prediction (paper §2.3).

Each 2D image is resized to ``size × size`` and min-max scaled to [0, 1] using its own minimum
and maximum, then quantised to uint8 (0..255). Normalisation never depends on the label or the
source format, so the network cannot learn "came from a PNG".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

cv2.setNumThreads(1)


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 224
    scaling: str = "minmax"  # per-image min-max, as in the paper
    interpolation: str = "area"  # OpenCV INTER_AREA for reduction, linear for enlargement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(**{k: data[k] for k in ("size", "scaling", "interpolation") if k in data})


def _halve_until(img: np.ndarray, size: int) -> np.ndarray:
    """Exact 2×2 mean reductions while both sides stay ≥ 2×size (cheap, and area-exact)."""
    while img.shape[0] >= 2 * size and img.shape[1] >= 2 * size:
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        v = img[:h, :w]
        img = (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]) * 0.25
    return img


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2D float32 image to ``size × size`` (aspect ratio not kept, as in the paper)."""
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    img = np.ascontiguousarray(img, dtype=np.float32)
    if img.shape == (size, size):
        return img
    img = _halve_until(img, size)
    shrinking = img.shape[0] >= size and img.shape[1] >= size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def to_uint8(img: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Resize and per-image min-max scale a 2D image to a ``size × size`` uint8 array.

    Non-finite values (NaN/inf in some NIfTI files) are set to the finite minimum. A constant
    image becomes all zeros.
    """
    img = np.asarray(img, dtype=np.float32)
    if not np.isfinite(img).all():
        finite = img[np.isfinite(img)]
        fill = float(finite.min()) if finite.size else 0.0
        img = np.where(np.isfinite(img), img, fill).astype(np.float32)
    out = resize(img, config.size)
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        return np.zeros((config.size, config.size), dtype=np.uint8)
    scaled = (out - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
