"""PNG, JPEG, TIFF and BMP through Pillow.

``Image.open`` is lazy: it parses the header and leaves decoding until pixels are needed, so
:meth:`RasterReader.header` never decodes. A multi-page TIFF yields one image per page (the page
count comes from walking the TIFF directory chain, which reads no pixel data).

Pixels become ``float32`` grey: grey and 16/32-bit integer and float modes are kept at full
precision (a 16-bit PNG keeps its 0..65535 values), colour becomes ITU-R BT.601 luminance
computed in floating point, alpha is dropped, palette images are expanded first. Pillow reduces
16-bit-per-channel colour PNGs to 8 bits per channel; that precision is lost. EXIF orientation is
not applied (medical rasters rarely carry it, and it would swap rows and columns).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError
from hypermodal.io.base import FileHeader, wanted_indices
from hypermodal.io.constants import LUMA_WEIGHTS
from hypermodal.io.limits import current_limits
from hypermodal.io.streams import check_regular

__all__ = ["RasterReader", "sniff_raster"]

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",  # BigTIFF (not read by Pillow; rejected with a clear reason)
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
}
_FORMATS = {"PNG", "JPEG", "TIFF", "BMP", "MPO"}  # MPO: multi-picture JPEG (camera files)
#: Pillow's own default for ``Image.MAX_IMAGE_PIXELS``, used when a caller set it to None
DEFAULT_MAX_PIXELS = 89_478_485
_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def sniff_raster(head: bytes) -> str | None:
    """The raster format whose magic number starts ``head`` (``"PNG"``, …), or None.

    Args:
        head: The first bytes of the file.

    Returns:
        ``"PNG"``, ``"JPEG"``, ``"TIFF"`` or ``"BMP"``, or None when none matches.
    """
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            if fmt == "BMP" and len(head) >= 18:
                # "BM" is only two bytes: also require a known DIB header size
                dib = int.from_bytes(head[14:18], "little")
                if dib not in (12, 40, 52, 56, 64, 108, 124):
                    return None
            return fmt
    return None


def _check_size(im: Any, path: Path, page: int = 0) -> None:
    """Refuse an image (page) over Pillow's decompression-bomb limit or the image-bytes limit,
    from its header, before anything is decoded (Pillow's own guard counts even when a caller
    switched it off: :data:`DEFAULT_MAX_PIXELS` then)."""
    width, height = im.size
    pixels = max(int(width), 1) * max(int(height), 1)
    limit = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
    where = f"page {page}: " if page else ""
    if pixels > limit:
        raise UnsupportedFileError(
            path,
            f"{where}{width}×{height} = {pixels} pixels, over the decompression-bomb limit of "
            f"{limit} pixels",
        )
    band_bytes = 4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
    decoded = pixels * len(im.getbands()) * band_bytes
    ceiling = current_limits().max_image_bytes
    if decoded > ceiling:
        raise UnsupportedFileError(
            path,
            f"{where}{width}×{height} {im.mode} is {decoded} bytes, over the limit of {ceiling}",
        )


def _open(path: Path) -> Any:
    check_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsupportedFileError(
            path, f"over the decompression-bomb limit ({' '.join(str(exc).split())})"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedFileError(path, "not an image Pillow can read") from None
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read image header ({exc})") from None
    except (ValueError, SyntaxError) as exc:  # Pillow raises SyntaxError for broken headers
        raise CorruptFileError(path, f"malformed image header ({exc})") from None
    if im.format not in _FORMATS:
        im.close()
        raise UnsupportedFileError(path, f"{im.format} images are not read (PNG/JPEG/TIFF/BMP)")
    try:
        _check_size(im, path)
    except BaseException:
        im.close()
        raise
    return im


def _to_grey(im: Any) -> np.ndarray:
    """A decoded Pillow frame as 2D float32 grey (see the module doc)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "PA":
        im = im.convert("LA")
        mode = "LA"
    if mode in _GREY_MODES:
        arr = np.asarray(im)
        if mode == "1":
            arr = arr.astype(np.float32)
        return np.ascontiguousarray(arr, dtype=np.float32)
    if mode in ("LA", "La"):
        return np.ascontiguousarray(np.asarray(im)[..., 0], dtype=np.float32)
    if mode not in ("RGB", "RGBA", "RGBa", "RGBX"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, I;16 colour variants …
    rgb = np.asarray(im)[..., :3].astype(np.float32)
    return np.ascontiguousarray(rgb @ LUMA_WEIGHTS)


def _page_count(im: Any, path: Path) -> int:
    """Pages of an opened image (1 except multi-page TIFF); a damaged directory is corrupt."""
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptFileError(path, f"damaged page directory ({exc})") from None


class RasterReader:
    """Reader for PNG, JPEG, TIFF (one image per page) and BMP files.

    Attributes:
        name: ``"raster"``.
        extensions: Suffixes tried when content sniffing is inconclusive.
    """

    name: ClassVar[str] = "raster"
    extensions: ClassVar[tuple[str, ...]] = (
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".tif",
        ".tiff",
        ".bmp",
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        """True for a PNG, JPEG, TIFF or BMP magic number."""
        return sniff_raster(head) is not None

    def header(self, path: Path) -> FileHeader:
        """Read size, mode and page count without decoding pixels.

        Args:
            path: The image file.

        Returns:
            The header: ``num_images`` is the page count (1 except multi-page TIFF),
            ``photometric`` the Pillow mode, ``modality`` None.

        Raises:
            UnsupportedFileError: Not a PNG/JPEG/TIFF/BMP Pillow can open, or too large.
            CorruptFileError: A damaged header.
        """
        path = Path(path)
        im = _open(path)
        try:
            frames = _page_count(im, path)
            width, height = im.size
            return FileHeader(
                path=str(path),
                format="raster",
                num_images=frames,
                rows=int(height),
                columns=int(width),
                photometric=im.mode,
                extra={"file_format": im.format, "mode": im.mode},
            )
        finally:
            im.close()

    def images(
        self, path: Path, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode pages one at a time, in the order of ``indices`` (all when None).

        Args:
            path: The image file.
            indices: 0-based page numbers.

        Yields:
            ``(index, image)`` with ``image`` a 2D ``float32`` grey array.

        Raises:
            IndexError: A page number out of range (raised before decoding).
            UnsupportedFileError: Not a readable raster format.
            CorruptFileError: Truncated or undecodable pixel data.
        """
        path = Path(path)
        im = _open(path)
        try:
            frames = _page_count(im, path)
            wanted = wanted_indices(path, indices, frames, "page")
            for i in wanted:
                try:
                    if frames > 1 or i:
                        with warnings.catch_warnings():
                            warnings.simplefilter("error", Image.DecompressionBombWarning)
                            im.seek(i)
                        _check_size(im, path, i)
                    im.load()
                    image = _to_grey(im)
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise UnsupportedFileError(
                        path, f"page {i}: over the decompression-bomb limit ({exc})"
                    ) from None
                except (OSError, ValueError, EOFError, SyntaxError) as exc:
                    raise CorruptFileError(
                        path, f"cannot decode page {i} ({type(exc).__name__}: {exc})"
                    ) from None
                yield i, image
        finally:
            im.close()
