"""Which installed codec decodes a transfer syntax, and what to install when none does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.pixels import get_decoder
from pydicom.uid import UID

from hypermodal.common.errors import CorruptFileError, UnsupportedFileError


def codec_hint(ts: UID) -> str:
    """What to install to decode transfer syntax ``ts``."""
    if ts in (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    ):
        return (
            "install python-gdcm (a hypermodal dependency); 12-bit JPEG and some JPEG-LS "
            "files need the opt-in GPL extra: pip install 'hypermodal[gpl]' "
            "(pylibjpeg-libjpeg)"
        )
    if ts.startswith("1.2.840.10008.1.2.4.20") or ts.startswith("1.2.840.10008.1.2.4.9"):
        return "install pylibjpeg and pylibjpeg-openjpeg (hypermodal dependencies)"
    if ts == "1.2.840.10008.1.2.5":
        return "install pylibjpeg-rle (a hypermodal dependency)"
    return "no codec for it is known to hypermodal"


def check_codec(path: Path, ts: UID, v: dict[str, Any]) -> None:
    """Raise :class:`UnsupportedFileError` when no installed codec can decode ``ts``.

    Args:
        path: The file (for the error).
        ts: Its transfer syntax.
        v: Its header values (12-bit JPEG needs a particular codec).

    Raises:
        UnsupportedFileError: Unknown or video syntax, or no installed codec for it.
    """
    if not ts.is_compressed:
        return
    name = f"{ts.name} ({ts})" if ts.name != str(ts) else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedFileError(
            path, f"transfer syntax {name} is not supported (video or unknown compression)"
        ) from None
    if not decoder.is_available:
        raise UnsupportedFileError(
            path, f"no codec installed for transfer syntax {name}: {codec_hint(ts)}"
        )
    # GDCM and Pillow cannot do 12-bit JPEG Extended; only the GPL libjpeg plugin can
    if ts == "1.2.840.10008.1.2.4.51" and "pylibjpeg" not in decoder.available_plugins:
        bits = v.get("BitsStored") or v.get("BitsAllocated") or 8
        if int(bits) > 8:
            raise UnsupportedFileError(
                path,
                f"transfer syntax {name} with {int(bits)}-bit samples needs the opt-in GPL "
                "codec: pip install 'hypermodal[gpl]' (pylibjpeg-libjpeg)",
            )


def decode_error(path: Path, ts: UID, exc: Exception) -> CorruptFileError | UnsupportedFileError:
    """The error for a decoder failure: a missing codec feature, or damaged pixel data."""
    message = " ".join(str(exc).split())
    if "does not support" in message or "no pixel data plugins" in message.lower():
        return UnsupportedFileError(
            path,
            f"the installed codecs cannot decode transfer syntax {ts.name} ({ts}): "
            f"{message[:200]}; {codec_hint(ts)}",
        )
    return CorruptFileError(path, f"cannot decode pixel data ({ts.name}): {message[:300]}")
