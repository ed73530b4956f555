"""Every input of ``catalog`` and ``predict`` is in the accounting, and none can stop them.

A corpus of real files laid out with what archives hold besides images: a FIFO (opening it
would block forever), a socket, a link to a device that never ends, a broken link, a folder
reached through a link and a link loop, hidden files and a hidden folder, a file whose name is
not valid UTF-8, and an image whose modality is not a class. Counts reconcile, skipped inputs
are in the errors file with their reasons, excluded ones in the excluded list, by path, and the
odd name reaches every output (catalog Parquet, errors, predictions CSV/Parquet) and back.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from hypermodal.catalog import build_catalog, discover, errors_path, excluded_path, read_catalog
from hypermodal.common.paths import path_text
from hypermodal.common.rejects import read_errors
from hypermodal.io import iter_images, read_header
from tests.helpers import copy_as, nibabel_file, pydicom_file

ODD = b"ct-\xff\xfe.dcm"  # not valid UTF-8


def within(fn: Callable[[], Any], fifo: Path, seconds: float = 120.0) -> Any:
    """``fn()``, failing (not hanging) when it is still running after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let a blocked open go
        pytest.fail(f"still running after {seconds} s (blocked on the FIFO?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path / "corpus"
    ct = root / "ct"
    copy_as(pydicom_file("CT_small.dcm"), ct / "good.dcm")
    copy_as(pydicom_file("CT_small.dcm"), Path(os.fsdecode(os.fsencode(ct) + b"/" + ODD)))
    copy_as(pydicom_file("US1_UNCR.dcm"), ct / "ultrasound.dcm")  # US: excluded
    os.mkfifo(ct / "pipe.dcm")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ct / "sock.dcm"))
    (ct / "zero.dcm").symlink_to("/dev/zero")
    (ct / "gone.dcm").symlink_to(ct / "nowhere.dcm")
    (ct / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    copy_as(pydicom_file("MR_small.dcm"), ct / ".git" / "objects" / "mr.dcm")  # hidden folder
    # a real folder outside the corpus, reached through a link; and a loop back to the dataset
    outside = tmp_path / "elsewhere"
    copy_as(pydicom_file("MR_small.dcm"), outside / "mr.dcm")
    (ct / "linked").symlink_to(outside)
    (ct / "linked-again").symlink_to(outside)
    (outside / "loop").symlink_to(ct)
    # a NIfTI dataset whose dataset.json says MR
    copy_as(nibabel_file("anatomical.nii"), root / "brain" / "anatomical.nii")
    (root / "brain" / "dataset.json").write_text(json.dumps({"name": "brain", "label": "MR"}))
    try:
        yield {
            "root": root,
            "fifo": ct / "pipe.dcm",
            "odd": path_text(os.fsencode(ct) + b"/" + ODD),
        }
    finally:
        sock.close()


SKIPPED = {"pipe.dcm", "sock.dcm", "zero.dcm", "gone.dcm"}
EXCLUDED = {"ultrasound.dcm", ".DS_Store", "mr.dcm@.git", "linked-again", "loop"}


def _name(path: str) -> str:
    p = Path(path)
    return f"{p.name}@.git" if ".git" in p.parts else p.name


def test_catalog_accounts_for_every_input(corpus: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "cat" / "catalog.parquet"
    s = within(
        lambda: build_catalog([corpus["root"]], out, workers=1, progress=False), corpus["fifo"]
    )
    # good.dcm, the odd name, linked/mr.dcm, anatomical.nii; the rest skipped or excluded
    assert (s.files_cataloged, s.files_skipped, s.files_excluded) == (4, 4, 5)
    assert s.files_seen == 13 and s.reconciles()
    errors = read_errors(errors_path(out))
    assert {Path(e["path"]).name for e in errors} == SKIPPED
    reasons = {Path(e["path"]).name: e["reason"] for e in errors}
    assert "FIFO" in reasons["pipe.dcm"] and "socket" in reasons["sock.dcm"]
    assert "character device" in reasons["zero.dcm"] and "No such file" in reasons["gone.dcm"]
    excluded = read_errors(excluded_path(out))
    assert {_name(e["path"]) for e in excluded} == EXCLUDED
    assert all(e["reason"].startswith("excluded: ") for e in excluded)
    why = {_name(e["path"]): e["reason"] for e in excluded}
    assert why["ultrasound.dcm"] == "excluded: modality US is not a class of the vocabulary"
    assert why[".DS_Store"] == "excluded: hidden file"
    assert why["mr.dcm@.git"] == "excluded: in a hidden folder"
    assert "already listed as" in why["linked-again"] and "already listed as" in why["loop"]
    meta = json.loads(out.with_name("catalog.parquet.json").read_text())
    assert meta["summary"]["excluded_modalities"] == {"US": 1}  # counts by modality unchanged
    # the odd name: in the Parquet as its text, and read back from it
    df = read_catalog(out)
    assert corpus["odd"] in set(df["path"])
    assert pq.read_table(out).column("path").to_pylist().count(corpus["odd"]) == 1
    assert next(iter_images(corpus["odd"]))[1].shape == (128, 128)
    assert set(df[df.path.str.contains("linked")]["dataset"]) == {"ct"}


def test_catalog_of_a_linked_dataset_folder_and_a_file_named_directly(tmp_path: Path) -> None:
    real = tmp_path / "real" / "ds"
    copy_as(pydicom_file("CT_small.dcm"), real / "a.dcm")
    root = tmp_path / "root"
    root.mkdir()
    (root / "ds").symlink_to(real)  # a dataset folder that is a link: followed
    (root / "ds-again").symlink_to(real)
    (root / "other").mkdir()
    tasks = discover([root])
    assert [(t.dataset, Path(t.path).name, t.excluded is None) for t in tasks] == [
        ("ds", "a.dcm", True),
        ("ds-again", "ds-again", False),
    ]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    tasks = discover([fifo])  # a FIFO named directly is an input: the reader refuses it
    assert [Path(t.path).name for t in tasks] == ["pipe"]
    with pytest.raises(FileNotFoundError):
        discover([tmp_path / "missing"])


def test_dataset_folder_named_with_stray_bytes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    odd = Path(os.fsdecode(os.fsencode(root) + b"/ds-\xe9"))
    copy_as(pydicom_file("CT_small.dcm"), odd / "a.dcm")
    copy_as(pydicom_file("MR_small.dcm"), root / "plain" / "b.dcm")
    out = tmp_path / "catalog.parquet"
    s = build_catalog([root], out, workers=1, progress=False)
    assert s.files_cataloged == 2
    df = read_catalog(out)
    assert set(df["dataset"]) == {"ds-\\xe9", "plain"}
    json.dumps(df.to_dict("records"), ensure_ascii=False).encode("utf-8")


@pytest.mark.slow
def test_predict_accounts_for_every_input(
    corpus: dict[str, Any], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from hypermodal.inference import predict

    out = tmp_path / "pred.csv"  # the series table
    images = tmp_path / "images.csv"
    series = tmp_path / "series.parquet"
    run = lambda: predict(  # noqa: E731
        [corpus["root"]],
        tiny_checkpoint,
        out,
        images_out=images,
        series_out=series,
        slices=None,
        workers=1,
        progress=False,
    )
    s = within(run, corpus["fifo"], seconds=300)
    # every file is read, hidden ones too: .DS_Store is no image, the hidden MR is predicted
    assert s.reconciles() and s.files_seen == 11
    errors = read_errors(out.with_name("pred.csv.errors.jsonl"))
    assert {Path(e["path"]).name for e in errors} == SKIPPED | {".DS_Store"}
    assert all(e["reason"] for e in errors)
    df = pd.read_csv(images)
    names = {_name(p) for p in df["path"]}
    assert names == {
        "good.dcm",
        path_text(ODD),
        "ultrasound.dcm",
        "mr.dcm",
        "mr.dcm@.git",
        "anatomical.nii",
    }
    assert corpus["odd"] in set(df["path"]) and corpus["odd"] in set(
        pd.read_parquet(series)["path"]
    )
    parquet = tmp_path / "pred.parquet"
    predict([corpus["odd"]], tiny_checkpoint, parquet, workers=1, progress=False)
    assert list(pd.read_parquet(parquet)["path"]) == [corpus["odd"]]


def test_catalog_over_files_that_lie_about_their_size(tmp_path: Path) -> None:
    # the issue: each of these alone among good files stopped or bloated the catalog
    from tests.io.test_size_checks import dicom_with, patched, sparse
    from tests.io.test_size_checks_images import nifti2_with_dim

    ds = tmp_path / "corpus" / "mixed"
    copy_as(pydicom_file("CT_small.dcm"), ds / "good.dcm")
    dicom_with("MR_small_RLE.dcm", ds / "million.dcm", NumberOfFrames=1_000_000)
    dicom_with("693_J2KI.dcm", ds / "frames.dcm", NumberOfFrames=99_999_999_999)
    tall = (1 << 24).to_bytes(4, "big")
    patched(pydicom_file("693_J2KI.dcm"), ds / "tall.dcm", b"\xff\x4f\xff\x51", 12, tall)
    sparse(ds / "zeros.dcm", bytes(128) + b"DICM", 200 * 1024**2)
    nifti2_with_dim(ds / "dim31.nii", 2, 2**31)
    nifti2_with_dim(ds / "dim40.nii.gz", 0, 2**40)
    copy_as(nibabel_file("anatomical.nii"), ds / "brain.nii")
    (ds / "dataset.json").write_text(json.dumps({"name": "mixed", "label": "MR"}))
    out = tmp_path / "catalog.parquet"
    s = build_catalog([ds.parent], out, workers=1, progress=False)
    assert (s.files_seen, s.files_cataloged, s.files_skipped) == (8, 2, 6)
    df = read_catalog(out)
    assert set(df["path"].map(lambda p: Path(p).name)) == {"good.dcm", "brain.nii"}
    assert len(df) == 1 + read_header(ds / "brain.nii").num_images
    reasons = {Path(e["path"]).name: e["reason"] for e in read_errors(errors_path(out))}
    assert "hold 1 fragment" in reasons["million.dcm"]
    assert "99999999999" in reasons["frames.dcm"]
    assert "says 16777216×512" in reasons["tall.dcm"]
    assert "zero bytes" in reasons["zeros.dcm"]
    assert "2147483648" in reasons["dim31.nii"] and "1099511627776" in reasons["dim40.nii.gz"]


@pytest.mark.slow
def test_odd_name_through_catalog_and_store(tmp_path: Path) -> None:
    from hypermodal.labels import ClassVocabulary
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.store import build_store

    ds = tmp_path / "corpus" / "ds"
    odd = Path(os.fsdecode(os.fsencode(ds) + b"/" + ODD))
    copy_as(pydicom_file("CT_small.dcm"), odd)
    copy_as(pydicom_file("MR_small.dcm"), ds / "mr.dcm")
    out = tmp_path / "catalog.parquet"
    build_catalog([ds.parent], out, workers=1, progress=False)
    selected = read_catalog(out).assign(split="train")
    store = tmp_path / "store"
    config = PreprocessConfig(size=32)
    s = build_store(
        selected, store, ClassVocabulary(), config, split_hash="x", workers=1, progress=False
    )
    assert (s.images_stored, s.images_failed) == (2, 0)
    manifest = pd.read_parquet(store / "manifest.parquet")
    assert path_text(odd) in set(manifest["path"]) and manifest["ok"].all()


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder")
def test_a_folder_that_cannot_be_listed_is_skipped_with_the_reason(tmp_path: Path) -> None:
    ds = tmp_path / "corpus" / "ds"
    copy_as(pydicom_file("CT_small.dcm"), ds / "a.dcm")
    locked = ds / "locked"
    copy_as(pydicom_file("MR_small.dcm"), locked / "b.dcm")
    locked.chmod(0)
    try:
        out = tmp_path / "catalog.parquet"
        s = build_catalog([ds.parent], out, workers=1, progress=False)
    finally:
        locked.chmod(0o755)
    assert (s.files_seen, s.files_cataloged, s.files_skipped) == (2, 1, 1)
    (error,) = read_errors(errors_path(out))
    assert error["path"] == str(locked) and "cannot list folder" in error["reason"]
