"""Synthetic DICOM workloads for throughput and memory tests — never for accuracy claims.

:func:`write_synthetic` writes N DICOM files per class that *look like* each class to a reader
(size, bit depth, Modality, SOP class, rescale, a real header from pydicom's ``CT_small`` /
``MR_small`` test files) but whose pixels are smooth random structure plus noise. They exercise
the catalog, the store build and the loader at a chosen scale; a model trained on them learns
nothing about real images.

==========  ========  ============  =========  =========================================
class       Modality  size (R×C)    template   pixels
==========  ========  ============  =========  =========================================
``CT``      CT        512 × 512     CT_small   uint16, 12 bits, intercept −1024 (HU)
``MR``      MR        256 × 256     MR_small   uint16, 12 bits
``PT``      PT        128 × 128     CT_small   uint16, 16 bits, float slope (activity)
``XR``      DX        2500 × 2000   CT_small   uint16, 14 bits, MONOCHROME2
==========  ========  ============  =========  =========================================

Output is deterministic for a given ``seed`` (pixels and UIDs): one folder per class,
``<out>/synthetic-<class>/<class>_<i>.dcm``, so ``hypermodal catalog <out>`` sees one dataset
per class. ``frames > 1`` writes multi-frame files (many slices per file: a cheap way to make
10⁵ slices). ``compress`` re-encodes each file with pydicom's encoders: ``rle`` (always
available), ``jpeg2000`` (lossless, needs pylibjpeg-openjpeg), ``jpegls`` (lossless, needs
pyjpegls).

Example:
    >>> from hypermodal.sources.synthetic import write_synthetic
    >>> paths = write_synthetic("/tmp/synth", n=4, classes=["PT"], seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassSpec:
    """How one synthetic class looks."""

    label: str
    modality: str
    rows: int
    columns: int
    template: str  # pydicom test file whose header is reused
    sop_class: str
    bits_stored: int
    slope: float
    intercept: float


CLASS_SPECS: dict[str, ClassSpec] = {
    "CT": ClassSpec(
        "CT", "CT", 512, 512, "CT_small.dcm", "1.2.840.10008.5.1.4.1.1.2", 12, 1.0, -1024.0
    ),
    "MR": ClassSpec(
        "MR", "MR", 256, 256, "MR_small.dcm", "1.2.840.10008.5.1.4.1.1.4", 12, 1.0, 0.0
    ),
    "PT": ClassSpec(
        "PT", "PT", 128, 128, "CT_small.dcm", "1.2.840.10008.5.1.4.1.1.128", 16, 0.37, 0.0
    ),
    "XR": ClassSpec(
        "XR", "DX", 2500, 2000, "CT_small.dcm", "1.2.840.10008.5.1.4.1.1.1.1", 14, 1.0, 0.0
    ),
}
#: Names accepted for a class besides its key.
ALIASES = {"PET": "PT", "XRAY": "XR", "X-RAY": "XR", "DX": "XR", "CR": "XR"}
COMPRESSIONS = ("none", "rle", "jpeg2000", "jpegls")
#: Pixel variations precomputed per class; file ``i`` combines variation ``i % K`` with a shift.
_BANK = 8


def class_spec(name: str) -> ClassSpec:
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key not in CLASS_SPECS:
        raise ValueError(f"unknown synthetic class {name!r}; expected one of {list(CLASS_SPECS)}")
    return CLASS_SPECS[key]


def _transfer_syntax(compress: str) -> str | None:
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    uid = {
        "none": None,
        "rle": RLELossless,
        "jpeg2000": JPEG2000Lossless,
        "jpegls": JPEGLSLossless,
    }.get(compress, "?")
    if uid == "?":
        raise ValueError(f"unknown compression {compress!r}; expected one of {COMPRESSIONS}")
    if uid is not None:
        from pydicom.pixels import get_encoder

        enc = get_encoder(uid)
        if not enc.is_available:
            missing = "; ".join(enc.missing_dependencies) or "no encoder plugin"
            raise ValueError(f"cannot write {compress} here: {missing}")
    return uid


def _smooth(rng: np.random.Generator, rows: int, cols: int, cells: int = 12) -> np.ndarray:
    """Smooth random field in [0, 1] (bilinear upsampling of a coarse grid)."""
    import cv2

    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (cols, rows), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _bank(spec: ClassSpec, seed: int) -> list[np.ndarray]:
    """``_BANK`` stored-value images (uint16) that look vaguely like the class."""
    rng = np.random.default_rng([seed, ord(spec.label[0]), ord(spec.label[1])])
    r, c = spec.rows, spec.columns
    yy, xx = np.mgrid[0:r, 0:c].astype(np.float32)
    yy = (yy - r / 2) / (r / 2)
    xx = (xx - c / 2) / (c / 2)
    top = (1 << spec.bits_stored) - 1
    out = []
    for _ in range(_BANK):
        tex = _smooth(rng, r, c)
        noise = rng.normal(0, 1, (r, c)).astype(np.float32)
        if spec.label == "CT":  # air around an elliptical body of soft tissue, some bone
            body = (xx / 0.85) ** 2 + (yy / 0.7) ** 2 < 1
            hu = np.where(body, 40 + 60 * tex + 15 * noise, -1000 + 5 * noise)
            hu = np.where(body & (tex > 0.85), 700 + 300 * tex, hu)
            img = hu - spec.intercept
        elif spec.label == "MR":
            head = xx**2 + yy**2 < 0.8
            img = np.where(head, 300 + 900 * tex + 30 * noise, 5 * np.abs(noise))
        elif spec.label == "PT":  # hot spots on a low background, Poisson-ish noise
            img = 200 * tex**4 + 30 * np.abs(noise)
            img[(xx**2 + yy**2) < 0.05] += 2000 * tex[(xx**2 + yy**2) < 0.05]
            img = img / spec.slope
        else:  # projection radiograph: bright body, lungs darker, smooth falloff
            lungs = ((np.abs(xx) - 0.35) / 0.25) ** 2 + (yy / 0.6) ** 2 < 1
            img = 9000 - 5000 * lungs + 3000 * tex - 3000 * (xx**2) + 80 * noise
        out.append(np.clip(img, 0, top).astype(np.uint16))
    return out


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["hypermodal-synthetic", str(seed), *map(str, parts)])


def _template(spec: ClassSpec):  # -> pydicom.Dataset
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(spec.template, download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {spec.template} is not installed")
    ds = pydicom.dcmread(path)
    ds.Modality = spec.modality
    ds.SOPClassUID = spec.sop_class
    ds.file_meta.MediaStorageSOPClassUID = spec.sop_class
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{spec.slope:g}"
    ds.RescaleIntercept = f"{spec.intercept:g}"
    ds.SeriesDescription = f"synthetic {spec.label} (throughput tests only)"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if spec.modality != "DX" else ""]
    for kw in (
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "WindowCenter",
        "WindowWidth",
        "NumberOfFrames",
    ):
        if kw in ds:
            delattr(ds, kw)
    # private (vendor) tags are kept: real headers carry them and parsing them costs time
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # explicit VR little endian
    return ds


def synthetic_pixels(spec: ClassSpec, seed: int, index: int, bank: list[np.ndarray]) -> np.ndarray:
    """Stored values of slice ``index``: a bank image, rolled and offset per index."""
    img = bank[index % len(bank)]
    k = index // len(bank)
    if k:
        img = np.roll(img, (7 * k) % spec.rows, axis=0)
        img = np.roll(img, (13 * k) % spec.columns, axis=1)
    return img


def write_synthetic(
    out: Path | str,
    n: int,
    classes: Iterable[str] = ("CT",),
    *,
    seed: int = 0,
    compress: str = "none",
    frames: int = 1,
    series_size: int = 100,
    progress: bool = False,
) -> list[Path]:
    """Write ``n`` files per class under ``out``; returns their paths (class by class).

    Args:
        out: root folder; each class goes to ``out/synthetic-<class>/``.
        n: files per class.
        classes: class names (``CT``, ``MR``, ``PT``/``PET``, ``XR``/``DX``).
        seed: fixes pixels and UIDs; the same seed writes identical files.
        compress: ``none``, ``rle``, ``jpeg2000`` or ``jpegls`` (lossless encoders of pydicom).
        frames: slices per file (multi-frame when > 1).
        series_size: slices per series (patient/study/series UIDs change every series).
        progress: show a progress bar.

    Raises:
        ValueError: unknown class or compression, or an encoder that is not installed.
    """
    from pydicom.uid import ExplicitVRLittleEndian

    from hypermodal.common.progress import progress_bar

    if n < 0 or frames < 1 or series_size < 1:
        raise ValueError("n must be ≥ 0, frames and series_size ≥ 1")
    specs = [class_spec(c) for c in classes]
    ts = _transfer_syntax(compress)
    out = Path(out)
    paths: list[Path] = []
    bar = progress_bar(n * len(specs), progress, desc="synth", unit="file")
    for spec in specs:
        folder = out / f"synthetic-{spec.label.lower()}"
        folder.mkdir(parents=True, exist_ok=True)
        template = _template(spec)
        bank = _bank(spec, seed)
        width = max(6, len(str(max(n - 1, 0))))
        for i in range(n):
            ds = template  # reused: every field that differs per file is set below
            first = i * frames
            series = first // series_size
            ds.PatientID = f"SYN-{spec.label}-{series // 4:05d}"
            ds.PatientName = f"Synthetic^{spec.label}{series // 4:05d}"
            ds.StudyInstanceUID = _uid(seed, spec.label, "study", series // 4)
            ds.SeriesInstanceUID = _uid(seed, spec.label, "series", series)
            ds.SOPInstanceUID = _uid(seed, spec.label, "sop", i)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i % series_size + 1
            pix = [synthetic_pixels(spec, seed, first + f, bank) for f in range(frames)]
            if frames > 1:
                ds.NumberOfFrames = frames
                arr = np.stack(pix)
            else:
                arr = pix[0]
            # a fresh native element each time (compress() leaves the old one encapsulated)
            ds.add_new(0x7FE00010, "OW", arr.tobytes())
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            if ts is not None:
                ds.compress(ts, arr, encoding_plugin="pylibjpeg" if compress == "jpeg2000" else "")
            path = folder / f"{spec.label.lower()}_{i:0{width}d}.dcm"
            tmp = path.with_name(path.name + ".tmp")
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(path)
            paths.append(path)
            bar.update(1)
    bar.close()
    return paths
