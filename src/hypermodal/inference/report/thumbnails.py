"""Thumbnails for the archive report, read from the original files.

Each thumbnail is one 2D image of a file (:func:`hypermodal.io.iter_images`, the row's ``path``
and ``index``; the middle image of the file when no index is known), scaled to fit a square of
``size`` pixels (aspect kept), windowed for display by the 1st–99th percentiles of what is shown,
and encoded as a PNG. A file that cannot be read gets a placeholder (a grey square with a cross)
and the reason, never an exception. Many thumbnails are rendered in crash-isolated worker
processes (:class:`~hypermodal.common.engines.LocalEngine`), so a decoder that dies costs one
placeholder.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hypermodal.common.isolation import Crashed, DecodeLimits, failure_reason, heartbeat

__all__ = [
    "POOL_ABOVE",
    "Thumbnail",
    "fit",
    "placeholder_png",
    "render_thumbnail",
    "render_thumbnails",
    "window",
]

#: more thumbnails than this are rendered in worker processes, fewer in the calling process
POOL_ABOVE = 24
#: the largest image side sampled for the percentiles (a larger image is strided down to it)
_PERCENTILE_SIDE = 512


@dataclass(frozen=True)
class Thumbnail:
    """One rendered thumbnail, or the reason there is none.

    Attributes:
        path: The file, as the table names it.
        index: The image number asked for (``None``: the file's middle image).
        png: The PNG bytes (a placeholder when ``reason`` is set).
        width: Its width in pixels.
        height: Its height in pixels.
        shown_index: The image number shown (``None`` when nothing could be read).
        reason: Why the image could not be shown (``None`` when it was).
    """

    path: str
    index: int | None
    png: bytes
    width: int
    height: int
    shown_index: int | None = None
    reason: str | None = None

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI for an ``<img src>``."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def window(image: np.ndarray) -> np.ndarray:
    """An image as uint8 for display: its own 1st–99th percentile range stretched to 0–255.

    Non-finite values show as black; an image of one value everywhere is mid-grey.

    Args:
        image: A 2D array of any numeric type.

    Returns:
        A uint8 array of the same shape.
    """
    img = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(img)
    if not finite.any():
        return np.zeros(img.shape, np.uint8)
    step = max(1, int(np.ceil(max(img.shape) / _PERCENTILE_SIDE)))
    sample = img[::step, ::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        sample = img[finite]
    lo, hi = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    if hi <= lo:  # a narrow distribution (a mask, a mostly blank image): use the full range
        lo, hi = float(img[finite].min()), float(img[finite].max())
    if hi <= lo:
        return np.full(img.shape, 128, np.uint8)
    out = (np.clip(np.where(finite, img, lo), lo, hi) - lo) * (255.0 / (hi - lo))
    return np.round(out).astype(np.uint8)


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled to fit a square of ``size`` pixels, aspect kept (area averaging when it
    shrinks, so a 4k radiograph costs one pass; cubic when a small image is enlarged)."""
    import cv2

    img = np.asarray(image, dtype=np.float32)
    rows, cols = img.shape[:2]
    scale = size / max(rows, cols)
    target = (max(1, round(cols * scale)), max(1, round(rows * scale)))  # (width, height)
    if target == (cols, rows):
        return img
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, target, interpolation=interpolation)


def _png(pixels: np.ndarray) -> tuple[bytes, int, int]:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=3)
    return buf.getvalue(), pixels.shape[1], pixels.shape[0]


def placeholder_png(size: int) -> tuple[bytes, int, int]:
    """A grey square with a dark cross: the picture of an image that could not be read.

    Args:
        size: The side in pixels.

    Returns:
        ``(png bytes, width, height)``.
    """
    img = np.full((size, size), 200, np.uint8)
    idx = np.arange(size)
    for offset in (-1, 0, 1):  # a cross three pixels wide
        keep = (idx + offset >= 0) & (idx + offset < size)
        img[idx[keep], idx[keep] + offset] = 90
        img[idx[keep], size - 1 - idx[keep] - offset] = 90
    img[[0, -1], :] = 150
    img[:, [0, -1]] = 150
    return _png(img)


def render_thumbnail(request: tuple[str, int | None, int]) -> Thumbnail:
    """Worker: the thumbnail of one image, or a placeholder with the reason it has none.

    Args:
        request: ``(path, index, size)``; ``path`` as a table writes it
            (:func:`~hypermodal.common.paths.path_text` text is opened as the file it names),
            ``index`` the image number (``None``: the middle image of the file).

    Returns:
        The :class:`Thumbnail`; never raises for a file that cannot be read.
    """
    from hypermodal.inference.remote_inputs import is_remote
    from hypermodal.io import ImageReadError

    path, index, size = request
    heartbeat()
    try:
        if is_remote(path):  # an s3:// object: read into memory, decoded like a file
            from hypermodal.inference.remote_inputs import RemoteOptions, memory_file, read_object

            with memory_file(read_object(path, RemoteOptions.from_environment())) as local:
                index, png, width, height = _render(local, index, size)
        else:
            index, png, width, height = _render(path, index, size)
    except ImageReadError as exc:
        return _placeholder(path, request[1], size, exc.reason)
    except IndexError:
        return _placeholder(path, request[1], size, f"the file has no image {index}")
    except StopIteration:
        return _placeholder(path, request[1], size, "the file holds no images")
    except BaseException as exc:  # noqa: BLE001 - a decoder's panic costs this thumbnail only
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return _placeholder(path, request[1], size, failure_reason(exc))
    return Thumbnail(path, request[1], png, width, height, shown_index=int(index))


def _render(path: str, index: int | None, size: int) -> tuple[int, bytes, int, int]:
    """The image ``index`` of the file at ``path`` (None: its middle one) as a PNG."""
    from hypermodal.io import iter_images, read_header

    if index is None:
        index = read_header(Path(path)).num_images // 2
    _, image = next(iter(iter_images(Path(path), [int(index)])))
    return (int(index), *_png(window(fit(image, size))))


def _placeholder(path: str, index: int | None, size: int, reason: str) -> Thumbnail:
    png, width, height = placeholder_png(size)
    return Thumbnail(path, index, png, width, height, reason=reason or "unreadable")


def render_thumbnails(
    wanted: Iterable[tuple[str, int | None]],
    size: int,
    *,
    workers: int | None = None,
    limits: DecodeLimits | None = None,
    pool_above: int = POOL_ABOVE,
) -> dict[tuple[str, int | None], Thumbnail]:
    """Render each distinct ``(path, index)`` once.

    Args:
        wanted: The images, as ``(path, index)`` (``index`` ``None``: the middle image).
        size: The largest side of a thumbnail in pixels.
        workers: Worker processes when there are many (default: the machine's cores).
        limits: Time and memory limits of each worker (default
            :class:`~hypermodal.common.isolation.DecodeLimits`).
        pool_above: Up to this many thumbnails are rendered in the calling process.

    Returns:
        ``{(path, index): Thumbnail}``; a worker that crashed or timed out gives a placeholder
        with the reason.
    """
    keys: list[tuple[str, int | None]] = list(dict.fromkeys(wanted))
    requests = [(path, index, size) for path, index in keys]
    if len(requests) <= pool_above:
        results: Sequence[Thumbnail | Crashed] = [render_thumbnail(r) for r in requests]
    else:
        from hypermodal.common.engines import LocalEngine

        with LocalEngine(workers, limits=limits) as engine:
            results = list(engine.map(render_thumbnail, requests))
    out: dict[tuple[str, int | None], Thumbnail] = {}
    for (path, index), result in zip(keys, results, strict=True):
        if isinstance(result, Crashed):
            result = _placeholder(path, index, size, result.reason)
        out[(path, index)] = result
    return out
