"""Reader choice by content, the error contract, and the reader list."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import hypermodal.io as hio
from hypermodal.io import (
    CorruptFileError,
    FileHeader,
    ImageReadError,
    UnsupportedFileError,
    iter_images,
    read_header,
    reader_for,
)
from hypermodal.io.nifti import NiftiReader
from hypermodal.io.registry import (
    read_head,
    register_reader,
    registered_readers,
    unregister_reader,
)
from tests.helpers import copy_as, pydicom_file


@pytest.fixture
def restore_readers() -> Iterator[None]:
    saved = registered_readers()
    yield
    for reader in registered_readers():
        unregister_reader(reader.name)
    for reader in saved:
        register_reader(reader)
    assert registered_readers() == saved


def test_public_api() -> None:
    assert set(hio.__all__) >= {"iter_images", "read_header", "reader_for", "FileHeader"}
    assert [r.name for r in registered_readers()] == ["dicom", "nifti", "nrrd", "mha", "raster"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("CT_small.dcm", "dicom"), ("zipMR.gz", "dicom"), ("rtstruct.dcm", "dicom")],
)
def test_dicom_sniffed(name: str, expected: str) -> None:
    assert reader_for(pydicom_file(name)).name == expected


def test_content_beats_extension(tmp_path: Path) -> None:
    ct = copy_as(pydicom_file("CT_small.dcm"), tmp_path / "looks_like.png")
    assert reader_for(ct).name == "dicom"
    assert read_header(ct).modality == "CT"
    nii = tmp_path / "looks_like.dcm"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 2), np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    copy_as(tmp_path / "v.nii.gz", nii)
    assert reader_for(nii).name == "nifti"
    assert read_header(nii).num_images == 2


def test_gzip_head_is_decompressed(tmp_path: Path) -> None:
    path = tmp_path / "ct.bin"
    path.write_bytes(gzip.compress(pydicom_file("CT_small.dcm").read_bytes()))
    head, gzipped = read_head(path)
    assert gzipped and head[128:132] == b"DICM" and len(head) == 1024
    assert reader_for(path).name == "dicom"
    assert [i for i, _ in iter_images(path)] == [0]


def test_dicom_without_preamble_or_extension(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    expected = ds.pixel_array.astype(np.float32)
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "IM000001"
    pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert reader_for(path).name == "dicom"
    header = read_header(path)
    assert header.modality == "MR" and header.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian
    image = dict(iter_images(path))[0]
    np.testing.assert_array_equal(image, expected)


def test_random_bytes_and_empty_file(tmp_path: Path) -> None:
    noise = tmp_path / "noise"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(UnsupportedFileError) as info:
        reader_for(noise)
    assert info.value.reason == "not a recognised image format"
    with pytest.raises(UnsupportedFileError):
        read_header(noise)
    with pytest.raises(UnsupportedFileError):
        iter_images(noise)  # fails at the call, before iteration
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedFileError, match="empty file"):
        read_header(empty)


def test_extension_fallback_for_unsniffable_content(tmp_path: Path) -> None:
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(np.random.default_rng(2).bytes(5000))
    assert reader_for(noise).name == "dicom"  # by name …
    with pytest.raises(UnsupportedFileError, match="not a DICOM file"):
        read_header(noise)  # … and the reader then says what it is not


def test_gzip_of_unknown_content(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt.gz"
    path.write_bytes(gzip.compress(b"hello " * 500))
    with pytest.raises(UnsupportedFileError, match="gzip"):
        reader_for(path)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    with pytest.raises(ImageReadError):
        read_header(broken)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="cannot read"):
        read_header(tmp_path / "absent.dcm")
    with pytest.raises(UnsupportedFileError, match="directory"):
        read_header(tmp_path)


def test_errors_are_image_read_errors() -> None:
    for name in ["MR_truncated.dcm", "test-SR.dcm"]:
        with pytest.raises(ImageReadError):
            read_header(pydicom_file(name))


class _ExplodingReader:
    """A reader whose failures are not ImageReadErrors (a bug, or a library surprise)."""

    name: ClassVar[str] = "exploding"
    extensions: ClassVar[tuple[str, ...]] = (".boom",)

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(b"BOOM")

    def header(self, path: Path) -> FileHeader:
        raise RuntimeError("header exploded\nsecond line")

    def images(self, path: Path, indices: object = None) -> Iterator[tuple[int, np.ndarray]]:
        yield 0, np.zeros((2, 2), np.float32)
        raise KeyError("frame 1")


def test_unexpected_exceptions_become_corrupt(tmp_path: Path, restore_readers: None) -> None:
    register_reader(_ExplodingReader, first=True)
    assert registered_readers()[0].name == "exploding"
    path = tmp_path / "x.bin"
    path.write_bytes(b"BOOM" + b"\x00" * 100)
    with pytest.raises(CorruptFileError) as info:
        read_header(path)
    assert info.value.reason == "RuntimeError: header exploded second line"
    got = []
    with pytest.raises(CorruptFileError, match="KeyError"):
        for index, image in iter_images(path):
            got.append((index, image))
    assert [i for i, _ in got] == [0]


def test_register_reader_replaces_by_name(tmp_path: Path, restore_readers: None) -> None:
    path = tmp_path / "fmri.nii"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 2, 4), np.float32), np.eye(4)), path)
    assert read_header(path).num_images == 2
    position = [r.name for r in registered_readers()].index("nifti")
    register_reader(NiftiReader(volumes="all"))
    assert [r.name for r in registered_readers()].index("nifti") == position
    assert read_header(path).num_images == 8
    assert len(list(iter_images(path, [7]))) == 1
    assert unregister_reader("nifti") is not None
    assert unregister_reader("nifti") is None


def test_index_errors_pass_through() -> None:
    with pytest.raises(IndexError):
        list(iter_images(pydicom_file("CT_small.dcm"), [1]))


def test_iter_images_decodes_only_requested(tmp_path: Path) -> None:
    pages = [np.full((4, 4), i, np.uint8) for i in range(5)]
    path = tmp_path / "pages.tif"
    Image.fromarray(pages[0]).save(
        path, save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]]
    )
    got = list(iter_images(path, [4]))
    assert [i for i, _ in got] == [4] and got[0][1].max() == 4
