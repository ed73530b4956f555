import json

import pandas as pd
import pytest

from hypermodal.catalog import (
    CATALOG_COLUMNS,
    build_catalog,
    discover,
    errors_path,
    listing_hash,
    read_catalog,
    summary_path,
)
from hypermodal.common.engines import LocalEngine
from hypermodal.common.rejects import read_errors
from hypermodal.labels import ClassVocabulary
from hypermodal.sources.synthetic import write_synthetic


def test_catalog_of_real_files_reconciles_and_labels(real_corpus, tmp_path):
    root, expected = real_corpus
    out = tmp_path / "catalog.parquet"
    s = build_catalog([root], out, workers=2, progress=False)
    assert s.files_seen == expected["files"]
    assert s.files_skipped == expected["skipped"]
    assert s.files_excluded == expected["excluded"]
    assert s.files_seen == s.files_cataloged + s.files_excluded + s.files_skipped
    df = read_catalog(out)
    assert tuple(df.columns) == CATALOG_COLUMNS
    assert len(df) == s.images == expected["images"]
    by_ds = df.groupby("dataset")["label"].agg(lambda x: set(x)).to_dict()
    assert by_ds == {
        "ct-small": {"CT"},
        "mr-small": {"MR"},
        "emri": {"MR"},
        "cr-leg": {"XR"},
        "nifti-mr": {"MR"},
        "png-xr": {"XR"},
    }
    emri = df[df.dataset == "emri"]
    assert list(emri["index"]) == list(range(10))  # one row per frame
    assert emri["series"].nunique() == 1 and emri["series"].iloc[0].startswith("1.")
    nifti = df[df.dataset == "nifti-mr"]
    assert len(nifti) == expected["nifti_slices"] and nifti["body_part"].eq("HEAD").all()
    assert df[df.dataset == "cr-leg"]["modality"].iloc[0] == "CR"
    assert df["split"].isna().all()
    # the errors file names every skipped file with a reason
    errs = read_errors(errors_path(out))
    assert len(errs) == expected["skipped"]
    assert {e["path"].rsplit("/", 1)[1] for e in errs} == {
        "MR_truncated.dcm",
        "notes.txt",
        "empty.dcm",
    }
    assert all(e["reason"] for e in errs)
    meta = json.loads(summary_path(out).read_text())
    assert meta["summary"]["excluded_modalities"] == {"US": 1}
    assert meta["vocabulary"]["classes"] == ["CT", "MR", "PT", "XR"]


def test_other_class_keeps_ultrasound(real_corpus, tmp_path):
    root, _ = real_corpus
    vocab = ClassVocabulary.from_options(classes="CT,MR,PT,XR,OTHER", other="OTHER")
    s = build_catalog([root], tmp_path / "c.parquet", vocabulary=vocab, workers=1, progress=False)
    assert s.files_excluded == 0 and s.images_per_class["OTHER"] == 1


class CountingEngine(LocalEngine):
    """Runs every chunk in this process, counting them; stops like a killed process before
    reading chunk number ``die_at`` (1-based)."""

    def __init__(self, die_at: int | None = None) -> None:
        super().__init__(workers=1)
        self.die_at = die_at
        self.chunks_read = 0

    def map_unordered(self, fn, items):
        for i, item in enumerate(items):
            if self.chunks_read + 1 == self.die_at:
                raise KeyboardInterrupt  # the process is stopped part-way
            self.chunks_read += 1
            yield i, fn(item)


def test_catalog_resumes_after_interruption(real_corpus, tmp_path):
    root, _ = real_corpus
    clean = read_catalog_of(root, tmp_path / "clean.parquet")

    out = tmp_path / "resumed.parquet"
    dying = CountingEngine(die_at=3)
    with pytest.raises(KeyboardInterrupt):
        build_catalog([root], out, chunk_files=2, progress=False, engine=dying)
    assert dying.chunks_read == 2
    assert not out.exists()  # nothing half-written
    parts = sorted(p.name for p in out.with_name(out.name + ".parts").glob("part-*.json"))
    assert parts == ["part-000000.json", "part-000001.json"]

    counting = CountingEngine()
    build_catalog([root], out, chunk_files=2, progress=False, engine=counting)
    assert counting.chunks_read == 3  # 5 chunks of 2 files: the first two were not read again
    pd.testing.assert_frame_equal(read_catalog(out), clean)
    assert not out.with_name(out.name + ".parts").exists()


def read_catalog_of(root, out):
    build_catalog([root], out, workers=1, chunk_files=2, progress=False)
    return read_catalog(out)


def test_missing_input_and_non_catalog_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_catalog([tmp_path / "nope"], tmp_path / "c.parquet", progress=False)
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="not a hypermodal catalog"):
        read_catalog(tmp_path / "x.parquet")


def test_listing_hash_depends_on_paths_and_vocabulary(tmp_path) -> None:
    write_synthetic(tmp_path / "a", 2, ["CT"], seed=9)
    tasks = discover([tmp_path / "a"])
    vocab = ClassVocabulary()
    assert listing_hash(tasks, vocab) == listing_hash(list(tasks), vocab)
    assert listing_hash(tasks[:1], vocab) != listing_hash(tasks, vocab)
