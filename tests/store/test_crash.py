"""A store build loses only the images of the file that crashed its worker.

Three files are added to a real plan, between good rows of one chunk: a JPEG-LS file GDCM
aborts on, a 16-bit RLE file pylibjpeg-rle panics on, and a good file whose worker aborts
*after* writing its rows (so the rows a dead worker left must be erased). The crashes happen
in the store's own workers (:class:`tests.common.crash_files.NativeDecodingEngine`); every
good image must come out byte for byte as in a build without the three files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermodal.catalog import build_catalog, read_catalog
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.split import SplitPlan, apply_split
from hypermodal.store import ERRORS_FILE, IMAGES_FILE, MANIFEST_FILE, build_store
from hypermodal.store.reader import SliceStore
from tests.common import crash_files as cf
from tests.helpers import SPLIT, copy_as, make_real_corpus, pydicom_file

SIZE = 32


class ReturningNativeEngine(cf.NativeDecodingEngine):
    """Workers that return their pixels (as on a cluster) for the driver to write."""

    shares_filesystem = False


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """A real plan, the same plan with the three crashing files in it, and a clean store."""
    work = tmp_path_factory.mktemp("store-crash")
    root = work / "corpus"
    make_real_corpus(root)
    build_catalog([root], work / "catalog.parquet", workers=2, progress=False)
    selected = apply_split(read_catalog(work / "catalog.parquet"), SplitPlan(SPLIT, method="file"))
    bad = [
        cf.jls_abort_file(work / "bad" / "jls-128.dcm"),
        cf.rle_panic_file(work / "bad" / "rle-32.dcm"),
        copy_as(pydicom_file("MR_small.dcm"), work / "bad" / "abort-after.dcm"),
    ]
    at = int(np.flatnonzero(selected["path"].str.endswith("MR_small.dcm"))[0])
    paths = pd.array([str(p) for p in bad], dtype=selected["path"].dtype)
    rows = selected.iloc[[at] * len(bad)].assign(path=paths)  # MR_small's row, other files
    with_bad = pd.concat([selected.iloc[: at + 1], rows, selected.iloc[at + 1 :]])
    clean = work / "clean"
    build_store(selected, clean, ClassVocabulary(), PreprocessConfig(size=SIZE), progress=False)
    return selected, with_bad.reset_index(drop=True), clean


@pytest.mark.parametrize("engine_class", [cf.NativeDecodingEngine, ReturningNativeEngine])
def test_a_crashing_file_costs_its_images_only(plans, tmp_path, engine_class):
    selected, with_bad, clean = plans
    out = tmp_path / "store"
    # one chunk holds the good rows around the three files: the chunk crashes, then its files
    # are decoded one at a time
    with engine_class(2) as engine:
        summary = build_store(
            with_bad,
            out,
            ClassVocabulary(),
            PreprocessConfig(size=SIZE),
            chunk_images=64,
            progress=False,
            engine=engine,
        )
    assert summary.reconciles() and summary.images_planned == len(selected) + 3
    store, before = SliceStore.open(out), SliceStore.open(clean)
    assert summary.images_stored == before.meta["num_ok"]

    errors = [json.loads(line) for line in (out / ERRORS_FILE).read_text().splitlines()]
    reasons = {Path(e["path"]).name: e["reason"] for e in errors}
    assert reasons["jls-128.dcm"].startswith("decoder crashed: SIGABRT")
    assert reasons["rle-32.dcm"].startswith("decoder panicked: index out of bounds")
    assert reasons["abort-after.dcm"].startswith("decoder crashed: SIGABRT")
    old = (clean / ERRORS_FILE).read_text().splitlines()
    assert [json.dumps(e) for e in errors if "/bad/" not in e["path"]] == old

    manifest = pd.read_parquet(out / MANIFEST_FILE)
    good = ~manifest["path"].str.contains("/bad/").to_numpy()
    assert not manifest.loc[~good, "ok"].any()
    assert not store.images[~good].any()  # the rows the late abort wrote were erased
    images = np.fromfile(out / IMAGES_FILE, dtype=np.uint8).reshape(-1, SIZE, SIZE)
    assert images[good].tobytes() == (clean / IMAGES_FILE).read_bytes()
    kept = manifest[good].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.table, check_exact=True)
