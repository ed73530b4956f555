"""Curated non-DICOM files (NIfTI, PAR/REC, ...): load them with nibabel and describe them.

A volume is kept as it is in the wheel, or converted to NIfTI when ``hypermodal.io`` does not
read its format (PAR/REC). Files curated as broken are loaded too, to record why they fail.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.sources.samples.manifest import MIN_SIDE, PackageManifest, Volume
from hypermodal.sources.samples.records import MAX_REASON, Image, short_reason

log = logging.getLogger(__name__)


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


def inspect_volume(pkg: PackageManifest, zf: zipfile.ZipFile, vol: Volume) -> Image:
    """Load a curated volume and describe it as a kept :class:`Image` (converted if asked).

    Raises:
        ValueError: the file holds fewer than three dimensions.
    """
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
    return Image(
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


def check_broken(zf: zipfile.ZipFile, path: str, reason: str) -> str:
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
            message = short_reason(exc).replace(f"{tmp}{os.sep}", "")  # no temp path: stable
            return f"{reason} [{message}]"[:MAX_REASON]
    log.warning("%s is listed as broken but nibabel reads it", path)
    return f"{reason} (nibabel {nib.__version__} reads it without error)"
