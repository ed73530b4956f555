"""Volumes and rasters that lie about their size are errors with their reason; volumes are read
in bounded memory whatever their axis order.

The bad files are real ones changed the way the issue describes: nibabel's example4d as a
NIfTI-2 with dims of 2^31 or 2^40 (plain and gzip), a PNG/TIFF of a real radiograph whose header
claims billions of pixels, an NRRD with ceilings lowered. The DICOM checks and the helpers are
in ``test_size_checks.py``.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from hypermodal.io import (
    CorruptFileError,
    ImageReadError,
    UnsupportedFileError,
    iter_images,
    read_header,
)
from hypermodal.io.limits import limits_set
from hypermodal.io.nifti import NiftiReader
from tests.helpers import nibabel_file, pydicom_file
from tests.io.test_size_checks import MB, refused

# --- NIfTI: dims and datatype against the file ---------------------------------------------


def nifti2_with_dim(dst: Path, axis: int, value: int) -> Path:
    """A real NIfTI-2 volume (nibabel's example4d, first volume) with one dim rewritten."""
    img = nib.load(nibabel_file("example4d.nii.gz"))
    data = np.asarray(img.dataobj[..., 0])
    raw = bytearray(nib.Nifti2Image(data, img.affine).to_bytes())
    struct.pack_into("<q", raw, 16 + 8 * (axis + 1), value)  # dim[1..] are int64 from byte 24
    dst.write_bytes(gzip.compress(bytes(raw)) if dst.name.endswith(".gz") else bytes(raw))
    return dst


@pytest.mark.parametrize("value", [2**31, 2**40])
@pytest.mark.parametrize("axis", [0, 2])
def test_nifti2_huge_dims_are_errors_with_a_reason(tmp_path: Path, value: int, axis: int) -> None:
    # the issue: ArrowInvalid (2^31) or MemoryError (2^40) in a labelled dataset's catalog
    plain = nifti2_with_dim(tmp_path / "big.nii", axis, value)
    refused(plain, CorruptFileError, f"{value}.* needs .* bytes from byte 544, the file has")
    packed = nifti2_with_dim(tmp_path / "big.nii.gz", axis, value)
    refused(packed, CorruptFileError, "more than a gzip file of .* bytes can hold")


def test_nifti_ceilings() -> None:
    path = nibabel_file("anatomical.nii")
    n = read_header(path).num_images
    with limits_set(max_images=n - 1):
        with pytest.raises(UnsupportedFileError, match=f"{n} images .* over the limit"):
            read_header(path)
    with limits_set(max_image_bytes=100):
        with pytest.raises(UnsupportedFileError, match="over the limit of 100"):
            list(iter_images(path))


# --- NIfTI: slices in bounded memory whatever the axis order -------------------------------


def superior_first(data: np.ndarray) -> np.ndarray:
    """An affine whose first voxel axis points superior (the issue's 400×2000×2000 layout)."""
    affine = np.zeros((4, 4))
    affine[0, 1] = affine[1, 2] = affine[2, 0] = affine[3, 3] = 1.0
    return affine


def write_volume(path: Path, data: np.ndarray, affine: np.ndarray, scl: bool = False) -> Path:
    img = nib.Nifti1Image(data, affine)
    if scl:
        img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("axis", [0, 1])
def test_slab_reads_equal_whole_reads(tmp_path: Path, name: str, axis: int) -> None:
    rng = np.random.default_rng(axis)
    data = rng.integers(0, 1000, size=(12, 10, 9)).astype(np.int16)
    affine = np.eye(4)
    others = [a for a in range(3) if a != axis]
    affine[:3, :3] = 0
    affine[2, axis] = affine[0, others[0]] = affine[1, others[1]] = 1.0  # `axis` points superior
    path = write_volume(tmp_path / name, data, affine, scl=True)
    assert read_header(path).extra["slice_axis"] == axis
    whole = dict(iter_images(path))
    wanted = [5, 0, 7, 7, 2]
    with limits_set(max_slab_bytes=600):  # slices staged in a temporary file
        slabs = dict(iter_images(path))
        some = list(NiftiReader().images(path, wanted))
    with limits_set(max_slab_bytes=3000):  # too small for the volume, enough for two slices
        two = list(NiftiReader().images(path, [4, 1, 4]))
    assert [i for i, _ in two] == [4, 1, 4]
    for i, image in two:
        np.testing.assert_array_equal(image, whole[i])
    assert whole.keys() == slabs.keys() == set(range(data.shape[axis]))
    for k in whole:
        np.testing.assert_array_equal(whole[k], slabs[k])
        assert slabs[k].dtype == np.float32
    assert [i for i, _ in some] == wanted
    for i, image in some:
        np.testing.assert_array_equal(image, whole[i])


def test_4d_slab_reads_number_volumes_major(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(8, 6, 5, 3)).astype(np.float32)
    path = tmp_path / "v4.nii.gz"
    nib.save(nib.Nifti1Image(data, superior_first(data)), path)
    reader = NiftiReader(volumes="all")
    whole = dict(reader.images(path))
    with limits_set(max_slab_bytes=800):
        slabs = dict(reader.images(path, [17, 3, 9]))
    assert len(whole) == 24
    assert list(slabs) == [17, 3, 9]
    for i, image in slabs.items():
        np.testing.assert_array_equal(image, whole[i])


def peak_while(fn: Callable[[], Iterator[Any]]) -> tuple[int, int]:
    """(peak bytes allocated, items) while consuming ``fn()`` one item at a time."""
    tracemalloc.start()
    try:
        n = sum(1 for _ in fn())
        return tracemalloc.get_traced_memory()[1], n
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_gzip_volume_superior_axis_first_is_read_in_bounded_memory(tmp_path: Path) -> None:
    # the issue: a valid 28 MB .nii.gz, 400×2000×2000 float32, superior axis first, inflated
    # whole (> 6 GB). The same shape ratio, 1/5 the size on each axis: 80×400×400 float32
    # (51 MB decoded), read with a 12 MB budget
    z = np.linspace(0, 1, 400, dtype=np.float32)
    data = np.broadcast_to(z, (80, 400, 400)) + np.arange(80, dtype=np.float32)[:, None, None]
    path = tmp_path / "tall.nii.gz"
    img = nib.Nifti1Image(np.ascontiguousarray(data), superior_first(data))
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(img.to_bytes())
    assert read_header(path).num_images == 80
    budget = 12 * MB
    with limits_set(max_slab_bytes=budget):
        peak, n = peak_while(lambda: iter_images(path))
        some = dict(iter_images(path, [0, 41, 79]))
    assert n == 80
    assert peak < budget + 4 * MB, f"peak {peak / MB:.1f} MB for a {data.nbytes / MB:.0f} MB volume"
    whole = dict(iter_images(path, [0, 41, 79]))  # the default budget reads this one whole
    for k, image in some.items():
        assert image.shape == (400, 400)
        np.testing.assert_array_equal(image, whole[k])
        assert image.min() == k and image.max() == k + 1  # slice k of the superior axis


# --- PNG / TIFF: Pillow's decompression-bomb guard -----------------------------------------


def real_png(path: Path) -> Path:
    """A PNG of a real radiograph (pydicom's RG3 leg, downsampled), as an archive export."""
    _, leg = next(iter_images(pydicom_file("RG3_UNCR.dcm")))
    leg8 = ((leg - leg.min()) / (leg.max() - leg.min()) * 255).astype(np.uint8)[::8, ::8]
    Image.fromarray(leg8).save(path)
    return path


def png_claiming(src: Path, dst: Path, width: int, height: int) -> Path:
    """``src`` with its IHDR saying ``width`` × ``height`` (CRC fixed, so Pillow trusts it)."""
    data = bytearray(src.read_bytes())
    ihdr = data.index(b"IHDR")
    struct.pack_into(">II", data, ihdr + 4, width, height)
    struct.pack_into(">I", data, ihdr + 17, zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("width, height", [(10_000, 10_000), (60_000, 60_000)])
def test_png_decompression_bomb_is_refused(tmp_path: Path, width: int, height: int) -> None:
    # 10,000² is over Pillow's limit (a warning by default, made an error); 60,000² is over
    # twice the limit (Pillow's own error)
    png = png_claiming(real_png(tmp_path / "leg.png"), tmp_path / "bomb.png", width, height)
    refused(png, UnsupportedFileError, "decompression-bomb limit")


def test_bomb_guard_holds_when_pillow_s_is_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    png = png_claiming(real_png(tmp_path / "leg.png"), tmp_path / "bomb.png", 10_000, 10_000)
    refused(png, UnsupportedFileError, "100000000 pixels, over the decompression-bomb limit")


def test_tiff_page_claiming_too_many_pixels_is_refused(tmp_path: Path) -> None:
    good = real_png(tmp_path / "leg.png")
    tif = tmp_path / "pages.tif"
    pages = [Image.open(good), Image.open(good)]
    pages[0].save(tif, save_all=True, append_images=pages[1:])
    assert len(list(iter_images(tif))) == 2
    data = bytearray(tif.read_bytes())
    # the second page's ImageWidth and ImageLength (tags 256, 257) made 60,000 each
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    ifd2 = struct.unpack_from("<I", data, ifd + 2 + 12 * entries)[0]
    for k in range(struct.unpack_from("<H", data, ifd2)[0]):
        at = ifd2 + 2 + 12 * k
        (tag,) = struct.unpack_from("<H", data, at)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<HHII", data, at, tag, 4, 1, 60_000)
    tif.write_bytes(bytes(data))
    assert read_header(tif).num_images == 2  # the first page is fine
    with pytest.raises(UnsupportedFileError, match="page 1: .*decompression-bomb limit"):
        list(iter_images(tif))


# --- NRRD: ceilings ---------------------------------------------------------------------------


def test_nrrd_ceilings_and_compressed_claims(tmp_path: Path) -> None:
    import nrrd

    data = np.random.default_rng(2).normal(size=(4, 5, 6)).astype(np.float32)
    path = tmp_path / "v.nrrd"
    nrrd.write(str(path), data, {"encoding": "gzip", "space": "left-posterior-superior"})
    with limits_set(max_images=5):
        with pytest.raises(UnsupportedFileError, match="6 images, over the limit of 5"):
            read_header(path)
    text = path.read_bytes()
    lying = tmp_path / "lying.nrrd"
    lying.write_bytes(text.replace(b"sizes: 4 5 6", b"sizes: 4 5 60000000", 1))
    assert b"60000000" in lying.read_bytes()
    with pytest.raises(ImageReadError):
        list(iter_images(lying, [0]))
