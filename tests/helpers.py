"""Helpers shared by the tests: real files shipped in installed packages, tiny writers, stores.

A plain module (``from tests.helpers import ...``); fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("CT", "MR", "PT", "XR")
LUMA = np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- real files
def pydicom_file(name: str) -> Path:
    """Path of one of pydicom's test files, never downloading.

    Files not in the pydicom wheel come from the ``pydicom-data`` package (a test dependency);
    without it the test is skipped with a reason that says so.
    """
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} needs the pydicom-data package (pip install pydicom-data)")
    return Path(str(path))


def nibabel_file(name: str, subdir: str = "tests/data") -> Path:
    """Path of a file in nibabel's own test data (shipped in the nibabel wheel)."""
    import nibabel

    path = Path(nibabel.__file__).parent / subdir / name
    if not path.exists():
        pytest.skip(f"nibabel does not ship {subdir}/{name}")
    return path


def copy_as(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` (e.g. to give a file a misleading name) and return ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def copy_into(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    """Copy ``src`` into the folder ``dst_dir`` (made if needed), keeping or replacing its name."""
    return copy_as(src, dst_dir / (name or src.name))


def truncate_copy(src: Path, dst: Path, keep: int) -> Path:
    """Write the first ``keep`` bytes of ``src`` to ``dst`` (negative: drop that many)."""
    data = src.read_bytes()
    dst.write_bytes(data[:keep])
    return dst


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an ``(..., 3)`` array, as float32."""
    return (rgb[..., :3].astype(np.float64) @ LUMA).astype(np.float32)


def interrupt_after(n: int) -> Callable[..., None]:
    """A progress hook (``on_chunk``, ``on_step``, ...) that raises ``KeyboardInterrupt`` on its
    ``n``-th call: a build stopped as a person pressing Ctrl-C would stop it."""
    calls = {"n": 0}

    def hook(*_: Any) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    return hook


# ----------------------------------------------------------------------------- a real corpus
#: the fixed dataset split of :func:`make_real_corpus`
SPLIT = {
    "ct-small": "train",
    "mr-small": "train",
    "emri": "train",
    "png-xr": "train",
    "nifti-mr": "validate",
    "cr-leg": "test",
}


def make_real_corpus(root: Path) -> dict[str, object]:
    """Lay out real files as datasets, with bad inputs among them; return what a catalog finds."""
    import nibabel as nib
    from PIL import Image

    from hypermodal.io import iter_images

    copy_into(pydicom_file("CT_small.dcm"), root / "ct-small")
    copy_into(pydicom_file("MR_small.dcm"), root / "mr-small")
    copy_into(pydicom_file("emri_small.dcm"), root / "emri")  # MR, 10 frames
    copy_into(pydicom_file("RG3_J2KR.dcm"), root / "cr-leg")  # CR, JPEG 2000, MONOCHROME1
    copy_into(pydicom_file("US1_UNCR.dcm"), root / "ultrasound")  # US: excluded by default
    # A NIfTI MR volume: no modality in the header, the dataset says what it is.
    nii = copy_into(nibabel_file("anatomical.nii"), root / "nifti-mr")
    (root / "nifti-mr" / "dataset.json").write_text(
        json.dumps({"name": "nifti-mr", "label": "MR", "body_part": "HEAD"})
    )
    # A PNG export of a real radiograph (the header is gone, as in a PNG archive export).
    _, leg = next(iter_images(pydicom_file("RG3_UNCR.dcm")))
    leg8 = ((leg - leg.min()) / (leg.max() - leg.min()) * 255).astype(np.uint8)
    (root / "png-xr").mkdir()
    Image.fromarray(leg8[::4, ::4]).convert("RGB").save(root / "png-xr" / "leg.png")
    (root / "png-xr" / "dataset.json").write_text(json.dumps({"name": "png-xr", "label": "XR"}))
    # Bad inputs inside otherwise good datasets.
    copy_into(pydicom_file("MR_truncated.dcm"), root / "mr-small")
    (root / "mr-small" / "notes.txt").write_text("not an image\n")
    (root / "ct-small" / "empty.dcm").write_bytes(b"")
    img = nib.load(nii)
    axial = [c in "SI" for c in nib.aff2axcodes(img.affine)].index(True)
    n_slices = img.shape[axial]
    return {
        "files": 10,
        "skipped": 3,  # truncated DICOM, text file, empty file
        "excluded": 1,  # ultrasound
        "images": 1 + 1 + 10 + 1 + 1 + n_slices,
        "nifti_slices": n_slices,
    }


# ----------------------------------------------------------------------------- synthetic stores
def pattern_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy class-dependent pattern (stripes, stripes across, a blob, a ramp) as uint8."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = [
        (np.sin(yy / 1.5) > 0).astype(np.float32),
        (np.sin(xx / 1.5) > 0).astype(np.float32),
        np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2.0 * size)),
        (xx + yy) / (2.0 * size),
    ][label] + rng.normal(0, 0.15, (size, size))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def make_store(
    path: Path,
    n_per_class: tuple[int, int, int] = (16, 4, 4),
    size: int = 32,
    seed: int = 0,
    test_classes: tuple[str, ...] | None = None,
    dataset_prefix: str = "ds",
    dataset_name: Callable[[str, int], str] | None = None,
) -> Any:
    """A store of synthetic patterns (mechanics only, never accuracy): ``n_per_class`` images per
    class in train/validate/test; ``dataset_name(split, i)`` names the dataset of image ``i``."""
    import pandas as pd

    from hypermodal.labels import ClassVocabulary
    from hypermodal.store import write_store_arrays

    name = dataset_name or (lambda split, i: f"{dataset_prefix}-{split}-{i % 2}")
    rng = np.random.default_rng(seed)
    vocab = ClassVocabulary()
    images, rows = [], []
    for split, n in zip(("train", "validate", "test"), n_per_class, strict=True):
        for label in CLASSES:
            if split == "test" and test_classes is not None and label not in test_classes:
                continue
            for i in range(n):
                images.append(pattern_image(vocab.index(label), size, rng))
                rows.append({"dataset": name(split, i), "label": label, "split": split})
    images_arr = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return write_store_arrays(path, images_arr, pd.DataFrame(rows), vocab)


# ----------------------------------------------------------------------------- a DICOM series
def make_ct_series(
    folder: Path,
    n: int,
    seed: int = 0,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    **tags: Any,
) -> list[Path]:
    """Write a CT series of ``n`` files: pydicom's real ``CT_small.dcm`` pixels, each file one
    slice 2.5 mm above the last (ImagePositionPatient, InstanceNumber), saved under shuffled
    names so that file-name order is not slice order. ``tags`` set header values on every file.

    Returns:
        The files in slice order (bottom to top).
    """
    import random

    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"IM{k:04d}.dcm" for k in range(n)]
    random.Random(seed).shuffle(names)
    out: list[Path] = []
    for i in range(n):
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-125.0, -125.0, -75.0 + 2.5 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(folder / names[i])
        out.append(folder / names[i])
    return out


# ----------------------------------------------------------------------------- models
#: real files of every family the models meet (pydicom, pydicom-data, nibabel)
REAL_IMAGE_FILES = (
    ("pydicom", "CT_small.dcm"),
    ("pydicom", "MR_small.dcm"),
    ("pydicom", "emri_small.dcm"),  # MR, 10 frames
    ("pydicom", "RG3_J2KR.dcm"),  # CR, JPEG 2000, MONOCHROME1
    ("pydicom", "US1_UNCR.dcm"),  # ultrasound, RGB
    ("nibabel", "anatomical.nii"),  # MR volume
)


def real_model_inputs(preprocess: Any, per_file: int = 8) -> np.ndarray:
    """uint8 model inputs from :data:`REAL_IMAGE_FILES`, prepared as ``predict`` prepares them
    (``to_uint8`` with the model's preprocessing), at most ``per_file`` images of each file."""
    from hypermodal.io import iter_images
    from hypermodal.preprocess import to_uint8

    images = []
    for source, name in REAL_IMAGE_FILES:
        path = pydicom_file(name) if source == "pydicom" else nibabel_file(name)
        for k, (_, img) in enumerate(iter_images(path)):
            if k >= per_file:
                break
            images.append(to_uint8(img, preprocess))
    return np.stack(images)


def checkpoint_from_bundle(
    bundle_path: Path, out: Path, size: int | None = None, noise: float = 0.0, seed: int = 0
) -> Path:
    """A ``.pt`` checkpoint with the network, evidence and settings of an fp32 ONNX bundle (the
    PyTorch form of the default model), optionally for images preprocessed to ``size`` and with
    Gaussian ``noise`` on the weights (so that float16 no longer holds them exactly)."""
    import torch

    from hypermodal.evidence import EvidenceModel
    from hypermodal.inference import load_model
    from hypermodal.inference.onnx_bundle import read_bundle
    from hypermodal.train.checkpoint import save_checkpoint

    bundle = read_bundle(bundle_path)
    net = load_model(bundle_path, backend="torch").model
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        jitter = noise and v.is_floating_point()
        state[k] = v + noise * torch.randn(v.shape, generator=gen) if jitter else v
    skip = ("format", "format_version", "content_digest", "onnx", "source", "int8", "evidence")
    payload = {k: v for k, v in bundle.meta.items() if k not in skip}
    payload["model_state"] = state
    payload["evidence"] = EvidenceModel.from_state(bundle.evidence_state()).to_state()
    if size is not None:
        payload["preprocess"] = {**payload["preprocess"], "size": size}
    save_checkpoint(out, payload)
    return out
