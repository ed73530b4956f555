"""Shared fixtures: a small corpus of REAL medical images from installed packages.

pydicom ships CT/MR/NM test files, pydicom-data ships computed radiographs (a chest and a leg,
MONOCHROME1, uncompressed and JPEG 2000) and ultrasound, nibabel ships an MR volume. The fixture
lays them out one dataset per folder, as a download of public collections would be, plus the
bad inputs every batch meets in practice.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


def nibabel_data(name: str) -> Path:
    from nibabel.testing import data_path

    return Path(data_path) / name


def _copy(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


def make_real_corpus(root: Path) -> dict[str, object]:
    """Lay out real files as datasets; return what the catalog should find."""
    from PIL import Image

    from hypermodal.io import iter_images

    _copy(pydicom_file("CT_small.dcm"), root / "ct-small")
    _copy(pydicom_file("MR_small.dcm"), root / "mr-small")
    _copy(pydicom_file("emri_small.dcm"), root / "emri")  # MR, 10 frames
    _copy(pydicom_file("RG3_J2KR.dcm"), root / "cr-leg")  # CR, JPEG 2000 lossless, MONOCHROME1
    _copy(pydicom_file("US1_UNCR.dcm"), root / "ultrasound")  # US: excluded by the default classes
    # A NIfTI MR volume: no modality in the header, the dataset says what it is.
    nii = _copy(nibabel_data("anatomical.nii"), root / "nifti-mr")
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
    _copy(pydicom_file("MR_truncated.dcm"), root / "mr-small")
    (root / "mr-small" / "notes.txt").write_text("not an image\n")
    (root / "ct-small" / "empty.dcm").write_bytes(b"")
    import nibabel as nib

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


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("corpus")
    expected = make_real_corpus(root)
    return root, expected


SPLIT = {
    "ct-small": "train",
    "mr-small": "train",
    "emri": "train",
    "png-xr": "train",
    "nifti-mr": "validate",
    "cr-leg": "test",
}


@pytest.fixture(scope="session")
def real_store(real_corpus, tmp_path_factory) -> Path:
    """A finished 32×32 store of the real corpus with a fixed dataset split."""
    from hypermodal.catalog import build_catalog, read_catalog
    from hypermodal.labels import ClassVocabulary
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.split import SplitPlan, apply_split
    from hypermodal.store import build_store

    root, _ = real_corpus
    work = tmp_path_factory.mktemp("real-store")
    build_catalog([root], work / "catalog.parquet", workers=1, progress=False)
    plan = SplitPlan(assignments=SPLIT, method="file")
    plan.save(work / "split.json")
    selected = apply_split(read_catalog(work / "catalog.parquet"), plan)
    build_store(
        selected,
        work / "store",
        ClassVocabulary(),
        PreprocessConfig(size=32),
        split_hash=plan.hash,
        workers=1,
        progress=False,
    )
    return work / "store"


@pytest.fixture(scope="session")
def tiny_checkpoint(real_store, tmp_path_factory) -> Path:
    """A ResNet-18 trained for one short epoch on the real 32×32 store (mechanics, not accuracy)."""
    from hypermodal.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    train(
        real_store, run, TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu"), progress=False
    )
    return run / "checkpoints" / "best.pt"
