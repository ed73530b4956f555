"""A DICOM file that lies about its size is an error with its reason, before anything is allocated.

Each bad file is one of pydicom's real test files changed the way the issue describes:
NumberOfFrames, Rows/Columns or a codestream's own size header rewritten, zeros after a
preamble. Each must fail fast, naming the file, with allocations bounded (``tracemalloc`` sees
numpy's buffers too). Volumes and rasters: ``test_size_checks_images.py``.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pydicom
import pytest

from hypermodal.io import (
    CorruptFileError,
    ImageReadError,
    UnsupportedFileError,
    iter_images,
    read_header,
)
from hypermodal.io.dicom.sizes import codestream_shape
from hypermodal.io.limits import current_limits, limits_set
from tests.helpers import pydicom_file

MB = 1024**2


def dicom_with(src: str, dst: Path, **attrs: Any) -> Path:
    """A copy of pydicom's test file ``src`` with the header attributes ``attrs`` rewritten."""
    ds = pydicom.dcmread(pydicom_file(src))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def patched(src: Path, dst: Path, marker: bytes, offset: int, value: bytes) -> Path:
    """A copy of ``src`` with ``value`` written ``offset`` bytes after the first ``marker``."""
    data = bytearray(src.read_bytes())
    at = data.find(marker)
    assert at >= 0, f"{marker!r} not in {src.name}"
    data[at + offset : at + offset + len(value)] = value
    dst.write_bytes(bytes(data))
    return dst


def refused(path: Path, error: type[ImageReadError], match: str, *, budget: int = 32 * MB) -> None:
    """Header and images both raise ``error`` within 2 s, allocating less than ``budget``."""
    for read in (read_header, lambda p: list(iter_images(p))):
        start = time.perf_counter()
        with pytest.raises(error, match=match) as info:
            read(path)
        assert time.perf_counter() - start < 2.0
        assert info.value.path == str(path)
        tracemalloc.start()  # slows Python down: timed apart
        try:
            with pytest.raises(error, match=match):
                read(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < budget, f"{peak} bytes allocated to refuse {path.name}"


# --- DICOM: NumberOfFrames against the pixel data ------------------------------------------


@pytest.mark.parametrize("src", ["MR_small_RLE.dcm", "693_J2KI.dcm", "CT_small.dcm"])
def test_hundred_billion_frames_is_an_error_naming_the_file(tmp_path: Path, src: str) -> None:
    # the issue: a MemoryError that killed the catalog without naming the file
    path = dicom_with(src, tmp_path / "frames.dcm", NumberOfFrames=99_999_999_999)
    refused(path, CorruptFileError, "99999999999")


def test_a_million_frames_on_a_small_rle_file_is_refused(tmp_path: Path) -> None:
    # the issue: 1,000,000 catalog rows and a 4.7 GB store of zeros from a 7.8 KB file
    path = dicom_with("MR_small_RLE.dcm", tmp_path / "million.dcm", NumberOfFrames=1_000_000)
    assert path.stat().st_size < 8000
    refused(path, CorruptFileError, r"NumberOfFrames says 1000000, .* hold 1 fragment\(s\)")


def test_frames_against_fragments_of_a_multiframe_file(tmp_path: Path) -> None:
    assert read_header(pydicom_file("emri_small_RLE.dcm")).num_images == 10
    path = dicom_with("emri_small_RLE.dcm", tmp_path / "eleven.dcm", NumberOfFrames=11)
    refused(path, CorruptFileError, r"says 11, .* hold 10 fragment")
    fewer = dicom_with("emri_small_RLE.dcm", tmp_path / "nine.dcm", NumberOfFrames=9)
    assert len(list(iter_images(fewer))) == 9  # fewer frames than fragments is not a lie


# --- DICOM: the codestream's own size against Rows/Columns ---------------------------------


def test_jpeg2000_codestream_claiming_16m_rows_is_refused(tmp_path: Path) -> None:
    # the issue: a 3.5 KB JPEG 2000 whose SIZ says 16.7 M rows made the decoder allocate ~34 GB
    src = pydicom_file("693_J2KI.dcm")
    assert src.stat().st_size < 4000
    # SIZ: FF4F FF51 Lsiz Rsiz Xsiz Ysiz: Ysiz is 12 bytes after the SOC marker
    path = patched(
        src, tmp_path / "tall.dcm", b"\xff\x4f\xff\x51", 12, (1 << 24).to_bytes(4, "big")
    )
    refused(
        path, CorruptFileError, "codestream at byte 2034 says 16777216×512, header says 512×512"
    )


@pytest.mark.parametrize("rows, columns", [(65, 64), (64, 65), (128, 128), (4096, 4096), (32, 32)])
def test_jpeg_ls_rows_columns_other_than_the_codestream_are_refused(
    tmp_path: Path, rows: int, columns: int
) -> None:
    # the issue: Rows/Columns above the real image made GDCM abort the process
    path = tmp_path / "jls.dcm"
    path = dicom_with("MR_small_jpeg_ls_lossless.dcm", path, Rows=rows, Columns=columns)
    refused(
        path, CorruptFileError, f"JPEG-LS codestream .* says 64×64, header says {rows}×{columns}"
    )


#: 42 values for Rows or Columns around and far from the real 64 (the issue tried 42)
SWEEP = sorted(
    {1, 2, 7, 16, 31, 32, 48, 60, 62, 63, 65, 66, 68, 80, 96, 100, 127, 128, 129}
    | {192, 255, 256, 257, 300, 511, 512, 513, 1000, 1023, 1024, 2048, 4095, 4096}
    | {5000, 8191, 8192, 10000, 16384, 30000, 32768, 65534, 65535}
)


@pytest.mark.parametrize("src", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"])
def test_rows_columns_sweep_never_escapes_as_a_crash(tmp_path: Path, src: str) -> None:
    # the issue: JPEG-LS with Rows/Columns above the image aborted GDCM (24 of 42 values), a
    # 16-bit RLE file with Rows/Columns below it panicked in pylibjpeg-rle (12 of 42). Every
    # value is now a CorruptFileError naming the file, or (JPEG-LS) refused before decoding
    assert len(SWEEP) == 42
    for keyword in ("Rows", "Columns"):
        for value in SWEEP:
            path = dicom_with(src, tmp_path / f"{keyword}-{value}.dcm", **{keyword: value})
            try:
                images = list(iter_images(path))
            except CorruptFileError as exc:
                assert exc.path == str(path)
                if "jpeg_ls" in src:
                    assert "JPEG-LS codestream" in exc.reason  # never handed to the decoder
                continue
            assert len(images) == 1 and "RLE" in src


def test_jpeg_frame_header_against_rows_columns_and_samples(tmp_path: Path) -> None:
    good = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    assert len(list(iter_images(good))) == 1
    wide = dicom_with("SC_rgb_jpeg_dcmtk.dcm", tmp_path / "wide.dcm", Columns=1000)
    refused(wide, CorruptFileError, "JPEG codestream .* says 100×100, header says 100×1000")
    grey = dicom_with("SC_rgb_jpeg_dcmtk.dcm", tmp_path / "grey.dcm", SamplesPerPixel=1)
    refused(grey, CorruptFileError, "3 component.*SamplesPerPixel 1")


def test_every_codestream_of_a_multiframe_file_is_checked(tmp_path: Path) -> None:
    src = pydicom_file("emri_small_jpeg_ls_lossless.dcm")
    data = bytearray(src.read_bytes())
    last = data.rfind(b"\xff\xd8\xff\xf7")  # the SOF55 of frame 10: P, Y, X after the length
    data[last + 7 : last + 9] = (4096).to_bytes(2, "big")
    path = tmp_path / "frame10.dcm"
    path.write_bytes(bytes(data))
    # the header checks the fragment count and the first codestream (a few bytes per file);
    # decoding checks every frame's codestream before it decodes any
    assert read_header(path).num_images == 10
    with pytest.raises(CorruptFileError, match="says 4096×64, header says 64×64"):
        list(iter_images(path))


def test_codestream_shapes_of_real_files() -> None:
    def first_fragment(name: str) -> bytes:
        ds = pydicom.dcmread(pydicom_file(name))
        return next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))

    j2k = codestream_shape(first_fragment("693_J2KI.dcm"))
    jls = codestream_shape(first_fragment("MR_small_jpeg_ls_lossless.dcm"))
    jpeg = codestream_shape(first_fragment("SC_rgb_jpeg_dcmtk.dcm"))
    assert (j2k.kind, j2k.rows, j2k.columns, j2k.components) == ("JPEG 2000", 512, 512, 1)
    assert (jls.kind, jls.rows, jls.columns, jls.components) == ("JPEG-LS", 64, 64, 1)
    assert (jpeg.kind, jpeg.rows, jpeg.columns, jpeg.components) == ("JPEG", 100, 100, 3)
    assert codestream_shape(first_fragment("MR_small_RLE.dcm")) is None  # RLE: no such header


def test_rle_decoder_panic_is_a_corrupt_file(tmp_path: Path) -> None:
    # the issue: Rows/Columns below the real size make pylibjpeg-rle panic (a BaseException)
    path = dicom_with("MR_small_RLE.dcm", tmp_path / "small.dcm", Rows=32, Columns=32)
    with pytest.raises(CorruptFileError, match=str(path)):
        list(iter_images(path))


# --- DICOM: ceilings, and headers that never end ------------------------------------------


def test_frame_bytes_ceiling_native_and_encapsulated() -> None:
    with limits_set(max_image_bytes=4096):
        with pytest.raises(UnsupportedFileError, match="32768 bytes decoded, over the limit"):
            read_header(pydicom_file("CT_small.dcm"))  # 128×128 16-bit, native
        with pytest.raises(UnsupportedFileError, match="over the limit of 4096"):
            read_header(pydicom_file("MR_small_RLE.dcm"))
    assert current_limits().max_image_bytes == 2 * 1024**3
    assert read_header(pydicom_file("CT_small.dcm")).num_images == 1


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypermodal.io.limits as limits

    with limits_set():  # restores the cache and the environment afterwards
        monkeypatch.setenv("HYPERMODAL_MAX_IMAGES", "5")
        limits._cached = None
        assert current_limits().max_images == 5
        with pytest.raises(CorruptFileError, match="NumberOfFrames 10 is over the limit of 5"):
            read_header(pydicom_file("emri_small.dcm"))
        monkeypatch.setenv("HYPERMODAL_MAX_IMAGES", "lots")
        limits._cached = None
        with pytest.raises(ValueError, match="HYPERMODAL_MAX_IMAGES"):
            current_limits()
        monkeypatch.delenv("HYPERMODAL_MAX_IMAGES")
    with pytest.raises(ValueError, match="unknown limit"):
        limits.set_limits(max_rows=3)


def sparse(path: Path, head: bytes, size: int) -> Path:
    """``head`` followed by zeros up to ``size`` bytes (a sparse file: written in no time)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def test_200_mb_of_zeros_after_a_preamble_is_rejected_fast(tmp_path: Path) -> None:
    # the issue: ~70 s for one such file
    path = sparse(tmp_path / "zeros.dcm", bytes(128) + b"DICM", 200 * MB)
    refused(path, CorruptFileError, r"zero bytes where the data elements should start \(byte 132\)")


def test_zeros_after_a_real_header_start_are_rejected_fast(tmp_path: Path) -> None:
    head = pydicom_file("CT_small.dcm").read_bytes()[:900]
    path = sparse(tmp_path / "cut.dcm", head, 200 * MB)
    refused(path, CorruptFileError, r"zero bytes \(group 0000\) where a data element should be")


def test_a_header_of_endless_empty_elements_is_given_up_fast(tmp_path: Path) -> None:
    # 16 MB of empty private elements (0009,0010) LO where a real header's pixel data should
    # start: 2 million elements that pydicom would parse one by one
    data = pydicom_file("CT_small.dcm").read_bytes()
    head = data[: data.rindex(b"\xe0\x7f\x10\x00")]  # up to the pixel data element
    path = tmp_path / "endless.dcm"
    path.write_bytes(head + b"\x09\x00\x10\x00LO\x00\x00" * (2 * MB))
    start = time.perf_counter()
    with pytest.raises(CorruptFileError, match="more than 100000 data elements"):
        read_header(path)
    assert time.perf_counter() - start < 3.0
