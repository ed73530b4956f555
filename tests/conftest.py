"""Shared fixtures: a small corpus of REAL medical images from installed packages.

pydicom ships CT/MR/NM test files, pydicom-data ships computed radiographs (a chest and a leg,
MONOCHROME1, uncompressed and JPEG 2000) and ultrasound, nibabel ships an MR volume. The fixture
lays them out one dataset per folder, as a download of public collections would be, plus the
bad inputs every batch meets in practice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SPLIT, make_real_corpus


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("corpus")
    expected = make_real_corpus(root)
    return root, expected


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
