"""DICOM candidates of a wheel: read every header, decode the pixels, keep or say why not.

A candidate is kept when its pixel data decode with the permissive codecs installed
(pylibjpeg-openjpeg, pylibjpeg-rle, python-gdcm). Files that fail to read or decode are
``rejected`` with the reason; files without pixels, of a non-image modality (SEG, RTDOSE, SR...),
blank, tiny, or curated as synthetic are ``excluded``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.io.constants import GZIP_MAGIC
from hypermodal.sources.samples.manifest import MIN_SIDE, PackageManifest
from hypermodal.sources.samples.records import (
    MAX_REASON,
    Candidate,
    Image,
    Verdict,
    first_match,
    matches,
    short_reason,
)

#: Side of the grey thumbnail compared to find lossy re-encodings.
THUMB = 64

#: Modalities whose objects are not images of the body (segmentations, RT objects, reports...).
_NON_IMAGE_MODALITIES = {
    "SEG": "segmentation",
    "RTDOSE": "radiotherapy dose grid",
    "RTSTRUCT": "radiotherapy structure set",
    "RTPLAN": "radiotherapy plan",
    "RTRECORD": "radiotherapy record",
    "SR": "structured report",
    "KO": "key object selection",
    "PR": "presentation state",
    "REG": "registration",
    "ECG": "waveform",
    "HD": "waveform",
    "DOC": "document",
    "PLAN": "plan",
}

#: Transfer syntaxes that may lose information (JPEG baseline/extended, JPEG-LS near-lossless,
#: JPEG 2000 / HTJ2K that allow irreversible coding, MPEG/HEVC video).
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.203",
}
_VIDEO_SYNTAX_PREFIX = "1.2.840.10008.1.2.4.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def dicom_candidates(pkg: PackageManifest, zf: zipfile.ZipFile) -> Iterator[Candidate]:
    """Members matching the package's ``dicom`` patterns, tar archive members included."""
    for name in sorted(n for n in zf.namelist() if not n.endswith("/")):
        if name in pkg.archives:
            with tarfile.open(fileobj=io.BytesIO(zf.read(name)), mode="r:*") as tf:
                for info in sorted(tf.getmembers(), key=lambda m: m.name):
                    path = f"{name}!{info.name}"
                    if info.isfile() and matches(path, pkg.dicom):
                        fh = tf.extractfile(info)
                        if fh is not None:
                            yield Candidate(pkg.name, path, fh.read())
        elif matches(name, pkg.dicom):
            yield Candidate(pkg.name, name, zf.read(name))


def _sniff_dicom(cand: Candidate) -> tuple[bytes, str | None, bool] | None:
    """``(payload, unpacked, needs_force)`` when the candidate may be DICOM, else ``None``."""
    payload, unpacked = cand.data, None
    if payload[:2] == GZIP_MAGIC:
        try:
            payload, unpacked = gzip.decompress(payload), "gzip"
        except (OSError, EOFError):
            return None
    if payload[128:132] == b"DICM":
        return payload, unpacked, False
    # No preamble: only files named like DICOM are tried, with force=True (and then only kept as
    # DICOM when the parse finds DICOM identifiers, see _read_header).
    base = cand.source_path.split("!")[-1].rsplit("/", 1)[-1]
    if base.lower().endswith(".gz"):
        base = base[:-3]
    suffix = Path(base).suffix.lower()
    if suffix in ("", ".dcm", ".dicom") and len(payload) > 64:
        return payload, unpacked, True
    return None


def _read_header(payload: bytes, force: bool) -> Any:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True, force=force)
    if force:
        # force=True parses anything; keep it only if it holds DICOM identifiers.
        if not any(kw in ds for kw in ("SOPClassUID", "SOPInstanceUID", "Modality")):
            return None
    return ds


def uid_name(uid: str | None) -> str:
    """The transfer syntax's name (``"no transfer syntax"`` when there is none)."""
    from pydicom.uid import UID

    if not uid:
        return "no transfer syntax"
    return UID(uid).name


def _what(ds: Any) -> str:
    from pydicom.uid import UID

    sop_class = ds.get("SOPClassUID")
    if sop_class:
        return UID(str(sop_class)).name
    modality = ds.get("Modality")
    return f"Modality {modality}" if modality else "no SOP class"


def _is_lossy(ts: str | None, ds: Any) -> bool:
    if ts and (ts in _LOSSY_SYNTAXES or ts.startswith(_VIDEO_SYNTAX_PREFIX)):
        return True
    return str(ds.get("LossyImageCompression", "")).strip() == "01"


def _grey_thumb(frame: np.ndarray, samples: int) -> np.ndarray:
    import cv2

    grey = frame.astype(np.float32)
    if samples > 1 and grey.ndim == 3:
        grey = grey.mean(axis=-1)
    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    std = float(thumb.std())
    return ((thumb - thumb.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decode_frames(ds: Any) -> list[np.ndarray]:
    """Every frame's pixels, one frame at a time, as the catalog will decode them."""
    from pydicom.pixels import pixel_array

    frames: list[np.ndarray] = []
    n_frames = int(ds.get("NumberOfFrames") or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # (iter_pixels() fails on J2K_pixelrep_mismatch.dcm with "output array is read-only"
        # in pydicom 3.0.2.)
        for index in range(n_frames):
            frame = pixel_array(ds, index=index if n_frames > 1 else None)
            frames.append(np.asarray(frame))
    return frames


def _pixel_problem(frames: list[np.ndarray], modality: str | None) -> str | None:
    """Why decoded pixels are not an image worth keeping (an ``excluded`` reason), or ``None``."""
    if modality and modality.upper() in _NON_IMAGE_MODALITIES:
        what = _NON_IMAGE_MODALITIES[modality.upper()]
        return f"not an image of a modality: Modality {modality} ({what})"
    lo = min(float(f.min()) for f in frames)
    hi = max(float(f.max()) for f in frames)
    if lo == hi:
        return f"constant pixel data (every value {lo:g}): blanked"
    rows, cols = int(frames[0].shape[0]), int(frames[0].shape[1])
    if rows < MIN_SIDE or cols < MIN_SIDE:
        return f"too small: {rows}x{cols} pixels (minimum {MIN_SIDE})"
    return None


def _pixel_digest(frames: list[np.ndarray]) -> str:
    """SHA-256 of the decoded pixels in native byte order (big-endian copies match)."""
    digest = hashlib.sha256()
    shape = (len(frames), *frames[0].shape)
    dtype = frames[0].dtype.newbyteorder("=")
    digest.update(f"{shape}|{dtype.str}|".encode())
    for frame in frames:
        native = np.ascontiguousarray(frame.astype(dtype, copy=False))
        digest.update(hashlib.sha256(native.tobytes()).digest())
    return digest.hexdigest()


def _header_or_verdict(cand: Candidate, payload: bytes, force: bool) -> Any:
    """The parsed header; else a ``rejected`` verdict, or ``None`` when it is not DICOM at all."""
    # A preamble-less file only counts as a broken DICOM when its name says it is one.
    claims_dicom = cand.source_path.lower().removesuffix(".gz").endswith(".dcm")
    try:
        header = _read_header(payload, force)
        problem = None if header is not None else "force=True finds no DICOM identifiers"
    except Exception as exc:  # noqa: BLE001 - any parse failure is a verdict, not a crash
        header, problem = None, short_reason(exc)
    if header is not None:
        return header
    if force and not claims_dicom:
        return None  # not DICOM at all
    what = "no preamble and no File Meta Information; " if force else ""
    return Verdict("rejected", cand.package, cand.source_path, f"unreadable DICOM: {what}{problem}")


def inspect_dicom(cand: Candidate, pkg: PackageManifest) -> Image | Verdict | None:
    """Read, decode and judge one candidate; ``None`` when it is not DICOM at all."""
    import pydicom
    from pydicom.uid import UID

    sniffed = _sniff_dicom(cand)
    if sniffed is None:
        return None
    payload, unpacked, force = sniffed
    header = _header_or_verdict(cand, payload, force)
    if header is None or isinstance(header, Verdict):
        return header

    modality = _text(header, "Modality")
    sop, study = _text(header, "SOPInstanceUID"), _text(header, "StudyInstanceUID")

    def verdict(kind: str, reason: str) -> Verdict:
        return Verdict(kind, cand.package, cand.source_path, reason, modality, sop, study)

    curated = first_match(cand.source_path, pkg.excluded)
    if curated:
        return verdict("excluded", curated)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(payload), force=force)
        except Exception as exc:  # noqa: BLE001
            return verdict("rejected", f"unreadable DICOM: {short_reason(exc)}")
    read_warnings = [str(w.message) for w in caught]
    truncation = next(
        (m for m in read_warnings if "end of file" in m.lower() or "truncat" in m.lower()), None
    )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if truncation:
            message = truncation.replace(" in file <no filename>", "")
            return verdict("rejected", f"truncated: {message}"[:MAX_REASON])
        return verdict("excluded", f"no pixel data ({_what(ds)})")

    file_meta = getattr(ds, "file_meta", None)
    ts = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    ts = ts or None
    if force and ts is None:
        hint = "no File Meta Information (read with force=True)"
        return verdict("rejected", f"{hint}: no Transfer Syntax UID, pixel data cannot be decoded")
    try:
        frames = _decode_frames(ds)
    except Exception as exc:  # noqa: BLE001
        reason = f"pixel data do not decode ({uid_name(ts)}): {short_reason(exc)}"
        return verdict("rejected", reason[:MAX_REASON])
    if not frames:
        return verdict("rejected", "pixel data hold no frame")
    problem = _pixel_problem(frames, modality)
    if problem:
        return verdict("excluded", problem)

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    name = cand.source_path.split("!")[-1].rsplit("/", 1)[-1]
    if unpacked == "gzip" and name.lower().endswith(".gz"):
        name = name[:-3]
    return Image(
        package=cand.package,
        source_path=cand.source_path,
        data=payload,
        name=name,
        fmt="dicom",
        images=len(frames),
        rows=int(frames[0].shape[0]),
        columns=int(frames[0].shape[1]),
        pixel_sha256=_pixel_digest(frames),
        modality=modality,
        sop=sop,
        study=study,
        patient=_text(ds, "PatientID"),
        body_part=_text(ds, "BodyPartExamined"),
        transfer_syntax=ts,
        lossy=_is_lossy(ts, ds),
        compressed=bool(ts and UID(ts).is_compressed),
        forced=force,
        unpacked=unpacked,
        thumb=_grey_thumb(frames[0], samples),
        extra={"samples_per_pixel": samples, "photometric": _text(ds, "PhotometricInterpretation")},
    )
