"""The store build's fast paths give exactly what the general paths give.

* DICOM: plain little-endian files are walked without pydicom's parser and native frames are
  read straight from the file; every header and image must equal what the pydicom path (the
  fast walk switched off) gives, and bad files must fail with the same error.
* Catalog: parts are merged one at a time and counted with Arrow; the listing hash is fed one
  file at a time.
* Store: the per-chunk work list is made lazily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from hypermodal.catalog import _listing_hash, build_catalog, discover, read_catalog
from hypermodal.io import dicom as dicom_mod
from hypermodal.io.dicom import DicomReader
from hypermodal.labels import ClassVocabulary
from hypermodal.sources.synthetic import write_synthetic
from hypermodal.store.build import SliceStore, _LazyItems, build_store
from tests.helpers import pydicom_file

READER = DicomReader()


def _outcome(path: Path, what: str) -> tuple:
    try:
        if what == "header":
            return ("ok", READER.header(path).to_dict())
        return ("ok", [(i, a.dtype.str, a.shape, a.tobytes()) for i, a in READER.images(path)])
    except Exception as exc:  # noqa: BLE001 - the exact outcome is what is compared
        return ("error", type(exc).__name__, str(exc))


def _both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple, tuple, tuple, tuple]:
    fast_header, fast_images = _outcome(path, "header"), _outcome(path, "images")
    with monkeypatch.context() as m:
        m.setattr(dicom_mod, "_parse_plain", lambda fp, tags: None)
        slow_header, slow_images = _outcome(path, "header"), _outcome(path, "images")
    return fast_header, slow_header, fast_images, slow_images


def _variants(root: Path) -> list[Path]:
    """Synthetic CT/MR/PT/XR (single and multi-frame) plus edited copies that exercise the
    fast path's corners: Rescale Type, implicit VR, 12 bits stored, signed 10-bit data with a
    negative slope, MONOCHROME1, empty text values."""
    files = write_synthetic(root / "sf", 4, ["CT", "MR", "PT", "XR"], seed=5)
    files += write_synthetic(root / "mf", 2, ["PT", "XR"], seed=6, frames=3)
    out = root / "edited"
    out.mkdir()
    for i, src in enumerate(files[:4]):
        ds = pydicom.dcmread(src)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        files.append(out / f"implicit{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
        ds = pydicom.dcmread(src)
        ds.RescaleType = "HU"  # most CT files have it; nothing reads it
        files.append(out / f"rescale_type{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
        ds = pydicom.dcmread(src)
        if ds.BitsAllocated != 16:
            continue
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PhotometricInterpretation = "MONOCHROME1"
        files.append(out / f"b12_mono1_{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
        ds = pydicom.dcmread(src)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 10, 9
        ds.RescaleSlope, ds.BodyPartExamined = "-2", ""
        files.append(out / f"signed_negslope{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def test_dicom_fast_path_equals_pydicom_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _variants(tmp_path)
    fast_used = 0
    for path in files:
        fast_header, slow_header, fast_images, slow_images = _both_ways(path, monkeypatch)
        assert fast_header == slow_header, path
        assert fast_images == slow_images, path
        assert fast_images[0] == "ok", path
        opened = dicom_mod._Opened(path, dicom_mod.PIXEL_TAGS)
        fast_used += bool(opened.fast and dicom_mod._native_layout(opened) is not None)
        opened.close()
    assert fast_used >= len(files) - 2  # the walk is what these files take


def test_dicom_fast_path_bad_files_fail_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (src,) = write_synthetic(tmp_path / "one", 1, ["CT"], seed=7)
    data = src.read_bytes()
    for keep in (100, 140, 300, 700, 1500, len(data) // 2, len(data) - 1000):
        path = tmp_path / f"cut{keep}.dcm"
        path.write_bytes(data[:keep])
        fast_header, slow_header, fast_images, slow_images = _both_ways(path, monkeypatch)
        assert fast_header == slow_header, keep
        assert fast_images == slow_images, keep
        assert fast_images[0] == "error", keep


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"])
def test_dicom_fast_path_pydicom_files(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = pydicom_file(name)
    fast_header, slow_header, fast_images, slow_images = _both_ways(path, monkeypatch)
    assert fast_header == slow_header
    assert fast_images == slow_images


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
        from hypermodal.preprocess import to_uint8

        assert np.array_equal(store.images[row], to_uint8(image, store.preprocess))


def test_listing_hash_depends_on_paths_and_vocabulary(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "a", 2, ["CT"], seed=9)
    tasks = discover([tmp_path / "a"])
    vocab = ClassVocabulary()
    assert _listing_hash(tasks, vocab) == _listing_hash(list(tasks), vocab)
    assert _listing_hash(tasks[:1], vocab) != _listing_hash(tasks, vocab)


def test_lazy_items() -> None:
    made: list[int] = []
    items = _LazyItems(3, lambda k: made.append(k) or k * 10)
    assert len(items) == 3 and made == []
    assert list(items) == [0, 10, 20]
    assert items[-1] == 20
    with pytest.raises(IndexError):
        items[3]
