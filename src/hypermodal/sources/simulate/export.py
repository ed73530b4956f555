"""The 8-bit PNG / JPEG that people export from a viewer, made from a real or simulated image.

:func:`export_image` applies, in order (:class:`ExportParams` holds every choice):

1. **Window / level.** CT: a preset — brain 40/80, lung -600/1500, bone 400/1800, soft tissue
   50/400 — with a little jitter; every other class: a percentile window (low 0-2 %, high
   97-100 %). PET and NM are sometimes shown inverted (black on white), as viewers offer.
2. **Gamma** 0.7-1.5.
3. **Geometry.** Resizing the long side to a typical export size, a small rotation (up to
   8 degrees, black corners), a crop.
4. **Burned-in text.** A few white or grey letters and numbers (IDs, dates, image numbers,
   orientation letters) drawn with :func:`cv2.putText` in the corners. The vocabulary is the
   same for every class, so text never tells the class.
5. **Encoding** as PNG (grey or RGB) or JPEG (quality 30-95), by :func:`encode_raster`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

#: CT window presets: name -> (level, width) in HU
CT_WINDOWS = {
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "soft": (50.0, 400.0),
}
EXPORT_SIZES = (256, 384, 512, 600, 640, 768, 800, 1024)
FORMATS = ("png", "jpg")
_WORDS = ("ID", "Im", "Se", "Acc", "Ex", "No", "Pos", "Ref")
_LETTERS = ("A", "P", "R", "L", "H", "F", "S", "I")


@dataclass
class ExportParams:
    """Every choice of one export (drawn by :func:`sample_export_params`)."""

    window: str = "percentile"  # a CT_WINDOWS name or "percentile"
    jitter: tuple[float, float] = (0.0, 0.0)  # relative shift of level and width (CT presets)
    percentiles: tuple[float, float] = (0.5, 99.5)
    invert: bool = False
    gamma: float = 1.0
    long_side: int | None = 512  # None keeps the size
    rotate_deg: float = 0.0
    crop: tuple[float, float, float, float] | None = None  # fractions cut: top bottom left right
    text: list[str] = field(default_factory=list)
    text_grey: int = 255
    rgb: bool = False
    format: str = "png"
    quality: int = 90  # JPEG quality

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _random_text(rng: np.random.Generator) -> list[str]:
    out = []
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(4))
        if kind == 0:
            out.append(f"{rng.choice(_WORDS)}: {int(rng.integers(1, 99999))}")
        elif kind == 1:
            y, m, d = (
                int(rng.integers(1995, 2025)),
                int(rng.integers(1, 13)),
                int(rng.integers(1, 29)),
            )
            out.append(f"{d:02d}/{m:02d}/{y}" if rng.random() < 0.5 else f"{y}-{m:02d}-{d:02d}")
        elif kind == 2:
            out.append(str(rng.choice(_LETTERS)))
        else:
            out.append(f"{int(rng.integers(1, 300))}/{int(rng.integers(1, 300))}")
    return out


def sample_export_params(
    rng: np.random.Generator, label: str, fmt: str | None = None
) -> ExportParams:
    """Draw one export of an image of class ``label`` (``fmt`` forces png or jpg)."""
    window = str(rng.choice(list(CT_WINDOWS))) if label == "CT" else "percentile"
    return ExportParams(
        window=window,
        jitter=(float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.15, 0.15))),
        percentiles=(float(rng.uniform(0.0, 2.0)), float(rng.uniform(97.0, 100.0))),
        invert=bool(label in ("PT", "OTHER") and rng.random() < 0.3),
        gamma=float(rng.uniform(0.7, 1.5)),
        long_side=int(rng.choice(EXPORT_SIZES)) if rng.random() < 0.85 else None,
        rotate_deg=float(rng.uniform(-8, 8)) if rng.random() < 0.3 else 0.0,
        crop=tuple(float(x) for x in rng.uniform(0, 0.2, 4)) if rng.random() < 0.4 else None,  # type: ignore[arg-type]
        text=_random_text(rng) if rng.random() < 0.6 else [],
        text_grey=int(rng.choice([255, 230, 200])),
        rgb=bool(rng.random() < 0.4),
        format=fmt or str(rng.choice(FORMATS)),
        quality=int(rng.integers(30, 96)),
    )


def window(image: np.ndarray, params: ExportParams) -> np.ndarray:
    """Map modality values to 0..1 by the preset or the percentile window."""
    img = image.astype(np.float32)
    if params.window in CT_WINDOWS:
        level, width = CT_WINDOWS[params.window]
        width *= 1.0 + params.jitter[1]
        level += params.jitter[0] * width
        lo, hi = level - width / 2, level + width / 2
    else:
        sample = img[:: max(1, img.shape[0] // 256), :: max(1, img.shape[1] // 256)]
        lo, hi = (float(x) for x in np.percentile(sample, params.percentiles))
        if hi <= lo:
            lo, hi = float(img.min()), float(img.max())
    v = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return 1.0 - v if params.invert else v


def _geometry(v: np.ndarray, params: ExportParams) -> np.ndarray:
    rows, cols = v.shape
    if params.crop is not None:
        t, b, left, right = params.crop
        v = v[int(t * rows) : rows - int(b * rows), int(left * cols) : cols - int(right * cols)]
        rows, cols = v.shape
    if params.long_side is not None and max(rows, cols) != params.long_side:
        f = params.long_side / max(rows, cols)
        size = (max(8, round(cols * f)), max(8, round(rows * f)))
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
        v = np.clip(cv2.resize(v, size, interpolation=interp), 0, 1)
        rows, cols = v.shape
    if params.rotate_deg:
        m = cv2.getRotationMatrix2D((cols / 2, rows / 2), params.rotate_deg, 1.0)
        v = cv2.warpAffine(v, m, (cols, rows), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return v


def burn_text(img8: np.ndarray, lines: list[str], grey: int = 255) -> np.ndarray:
    """Draw ``lines`` in the corners of an 8-bit grey image (a copy)."""
    out = img8.copy()
    rows, cols = out.shape[:2]
    scale = max(0.35, min(rows, cols) / 900.0)
    thick = max(1, int(round(scale * 1.5)))
    step = int(28 * scale) + 4
    corners = [(0.02, 0.04), (0.02, 0.96), (0.75, 0.04), (0.75, 0.96)]
    for i, line in enumerate(lines):
        x, y = corners[i % 4]
        org = (int(x * cols), int(y * rows + (i // 4) * step * (1 if y < 0.5 else -1)) + step // 2)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, grey, thick, cv2.LINE_AA)
    return out


def export_image(image: np.ndarray, params: ExportParams) -> np.ndarray:
    """The exported 8-bit image (``(rows, cols)`` grey, or ``(rows, cols, 3)`` when RGB)."""
    v = window(image, params) ** np.float32(params.gamma)
    v = _geometry(v.astype(np.float32), params)
    img8 = np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)
    if params.text:
        img8 = burn_text(img8, params.text, params.text_grey)
    if params.rgb:
        img8 = np.repeat(img8[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img8)


def encode_raster(img8: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of an 8-bit image (deterministic for the same pixels and settings)."""
    if img8.dtype != np.uint8:
        raise ValueError(f"an export is 8-bit, not {img8.dtype}")
    if fmt == "png":
        ok, buf = cv2.imencode(".png", img8, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    elif fmt in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", img8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        raise ValueError(f"unknown export format {fmt!r} (png or jpg)")
    if not ok:
        raise ValueError(f"could not encode a {img8.shape} image as {fmt}")
    return buf.tobytes()
