import json
from pathlib import Path

import numpy as np
import pytest

from hypermodal.catalog import build_catalog, read_catalog
from hypermodal.io import iter_images
from hypermodal.io.dicom import DicomReader
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig, to_uint8
from hypermodal.sources.synthetic import write_synthetic
from hypermodal.split import SplitPlan, apply_split
from hypermodal.store import (
    JOURNAL_DIR,
    META_FILE,
    SliceStore,
    StoreError,
    build_store,
    store_errors,
)
from hypermodal.store.chunks import LazyItems, chunk_bounds
from tests.helpers import SPLIT, interrupt_after


@pytest.fixture(scope="module")
def selected(real_corpus, tmp_path_factory):
    root, _ = real_corpus
    out = tmp_path_factory.mktemp("cat") / "catalog.parquet"
    build_catalog([root], out, workers=1, progress=False)
    plan = SplitPlan(assignments=SPLIT, method="file")
    return apply_split(read_catalog(out), plan), plan


def test_store_round_trip_matches_reader_plus_preprocessing(selected, tmp_path):
    df, plan = selected
    vocab = ClassVocabulary()
    summary = build_store(
        df,
        tmp_path / "s",
        vocab,
        PreprocessConfig(size=64),
        split_hash=plan.hash,
        workers=2,
        chunk_images=4,
        progress=False,
    )
    assert summary.reconciles() and summary.images_failed == 0
    st = SliceStore.open(tmp_path / "s")
    assert st.images.shape == (len(df), 64, 64) and st.images.dtype == np.uint8
    assert st.split_hash == plan.hash
    assert st.vocabulary == vocab
    # every stored image equals reader + preprocessing of the same source image
    for row in [0, len(df) // 2, len(df) - 1]:
        rec = st.table.iloc[row]
        img = dict(iter_images(Path(rec["path"]), [int(rec["index"])]))[int(rec["index"])]
        np.testing.assert_array_equal(st.images[row], to_uint8(img, PreprocessConfig(size=64)))
        assert st.images[row].min() == 0 and st.images[row].max() == 255  # min-max per image
        assert rec["label_index"] == vocab.index(rec["label"])
    assert set(st.table.loc[st.rows("test"), "dataset"]) == {"cr-leg"}
    assert st.meta["images_per_class_per_split"]["train"]["MR"] == 11
    assert not (tmp_path / "s" / JOURNAL_DIR).exists()


def test_file_broken_after_cataloguing_is_reported_and_counts_reconcile(selected, tmp_path):
    df, plan = selected
    broken = tmp_path / "broken.dcm"
    emri = df[df.dataset == "emri"]["path"].iloc[0]
    broken.write_bytes(Path(emri).read_bytes()[:5000])  # truncated inside the pixel data
    df = df.copy()
    df.loc[df.dataset == "emri", "path"] = str(broken)
    summary = build_store(
        df, tmp_path / "s", ClassVocabulary(), PreprocessConfig(size=32), workers=1, progress=False
    )
    assert summary.images_failed == 10 and summary.reconciles()
    st = SliceStore.open(tmp_path / "s")
    assert int(st.table["ok"].sum()) == len(df) - 10
    assert len(st.rows()) == len(df) - 10
    errs = store_errors(tmp_path / "s")
    assert len(errs) == 10 and all(e["path"] == str(broken) and e["reason"] for e in errs)
    assert not st.images[~st.table["ok"].to_numpy()].any()  # failed rows hold zeros


def test_store_resumes_after_interruption_without_redoing_work(selected, tmp_path):
    df, _ = selected
    pre = PreprocessConfig(size=32)
    build_store(
        df, tmp_path / "clean", ClassVocabulary(), pre, workers=1, chunk_images=8, progress=False
    )
    clean = SliceStore.open(tmp_path / "clean")

    dying = interrupt_after(2)  # interrupted after the second chunk is journaled
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_store(
            df, out, ClassVocabulary(), pre, workers=1, chunk_images=8, progress=False,
            on_chunk=dying,
        )  # fmt: skip
    assert not (out / META_FILE).exists()
    with pytest.raises(StoreError, match="not a finished store"):
        SliceStore.open(out)
    assert len(list((out / JOURNAL_DIR).glob("chunk-*.json"))) == 2

    redone: list[int] = []
    summary = build_store(
        df, out, ClassVocabulary(), pre, workers=1, chunk_images=8, progress=False,
        on_chunk=redone.append,
    )  # fmt: skip
    assert summary.resumed_chunks == 2 and 0 not in redone and 1 not in redone
    st = SliceStore.open(out)
    np.testing.assert_array_equal(np.asarray(st.images), np.asarray(clean.images))
    assert st.table.equals(clean.table)


def test_chunks_never_split_a_file():
    paths = np.array(["a", "a", "a", "b", "c", "c", "c", "c", "d"])
    bounds = chunk_bounds(paths, 2)
    assert bounds == [(0, 3), (3, 8), (8, 9)]  # "c" (rows 4-7) stays whole


def test_finished_store_is_not_overwritten_and_labels_must_be_classes(selected, tmp_path):
    df, _ = selected
    build_store(
        df.head(2),
        tmp_path / "s",
        ClassVocabulary(),
        PreprocessConfig(size=16),
        workers=1,
        progress=False,
    )
    with pytest.raises(StoreError, match="already holds a finished store"):
        build_store(df.head(2), tmp_path / "s", ClassVocabulary(), PreprocessConfig(size=16))
    with pytest.raises(StoreError, match="not classes"):
        build_store(df.head(2), tmp_path / "t", ClassVocabulary.from_options(classes="PT"))


def test_open_rejects_inconsistent_store(selected, tmp_path):
    df, _ = selected
    build_store(
        df.head(3),
        tmp_path / "s",
        ClassVocabulary(),
        PreprocessConfig(size=16),
        workers=1,
        progress=False,
    )
    meta = json.loads((tmp_path / "s" / META_FILE).read_text())
    meta["num_images"] = 4
    (tmp_path / "s" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="manifest has 3 rows"):
        SliceStore.open(tmp_path / "s")


def test_catalog_and_store_multiframe(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_synthetic(src, 6, ["PT", "XR"], seed=8, frames=3)
    cat = tmp_path / "catalog.parquet"
    summary = build_catalog([src], cat, workers=1, chunk_files=2, progress=False)
    table = read_catalog(cat)
    assert summary.images == len(table)
    assert sum(summary.images_per_class.values()) == len(table)
    assert summary.datasets == table["dataset"].nunique()
    # multi-frame files give one row per frame, indices 0..n-1 in order
    for _, rows in table.groupby("path"):
        assert rows["index"].tolist() == list(range(len(rows)))
    table["split"] = "train"
    built = build_store(table, tmp_path / "store", ClassVocabulary(), workers=1, chunk_images=4)
    store = SliceStore.open(tmp_path / "store")
    assert built.images_stored == len(store) == len(table)
    reader = DicomReader()
    for row in (0, len(table) - 1):
        path, index = table.loc[row, "path"], int(table.loc[row, "index"])
        (image,) = [img for _, img in reader.images(Path(path), [index])]
        assert np.array_equal(store.images[row], to_uint8(image, store.preprocess))


def test_lazy_items() -> None:
    made: list[int] = []
    items = LazyItems(3, lambda k: made.append(k) or k * 10)
    assert len(items) == 3 and made == []
    assert list(items) == [0, 10, 20]
    assert items[-1] == 20
    with pytest.raises(IndexError):
        items[3]
