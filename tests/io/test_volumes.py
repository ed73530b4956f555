"""The volume readers (NIfTI/Analyze/MGH, NRRD, MetaImage) and the slicing rule they share.

Real files: nibabel's own test data, plus tiny volumes written to ``tmp_path`` with nibabel and
pynrrd (MetaImage files are written by hand: the format is a text header and raw bytes).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from hypermodal.io import CorruptFileError, UnsupportedFileError, iter_images, read_header
from hypermodal.io.metaimage import MetaImageReader
from hypermodal.io.nifti import NiftiReader
from hypermodal.io.nrrd import NrrdReader
from hypermodal.io.orientation import plan_slices
from tests.helpers import copy_as, luminance, nibabel_file

READER = NiftiReader()
RNG = np.random.default_rng(0)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def images(path: Path, reader: object = READER, indices: list[int] | None = None) -> dict:
    return dict(reader.images(path, indices))  # type: ignore[attr-defined]


def ras_axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Slice k of a RAS volume in display orientation: rows A→P, columns R→L."""
    return volume[:, :, k].T[::-1, ::-1]


# --- slicing rule -------------------------------------------------------------------------


def test_3d_slice_count_and_orientation(tmp_path: Path) -> None:
    data = RNG.integers(-1000, 1000, size=(4, 5, 6)).astype(np.int16)
    path = save_nifti(tmp_path / "ras.nii", data)
    header = READER.header(path)
    assert header.format == "nifti" and header.modality is None
    assert (header.num_images, header.rows, header.columns) == (6, 5, 4)
    assert header.extra["axcodes"] == "RAS" and header.extra["slice_axis"] == 2
    got = images(path)
    assert list(got) == list(range(6))
    for k, image in got.items():
        assert image.dtype == np.float32
        np.testing.assert_array_equal(image, ras_axial(data, k))


def test_axial_axis_chosen_from_permuted_affine(tmp_path: Path) -> None:
    # voxel axis 0 runs superior, axis 1 right, axis 2 anterior: slices must step along axis 0
    data = RNG.normal(size=(7, 4, 5)).astype(np.float32)
    affine = np.zeros((4, 4))
    affine[2, 0] = affine[0, 1] = affine[1, 2] = affine[3, 3] = 1.0
    path = save_nifti(tmp_path / "permuted.nii.gz", data, affine)
    header = READER.header(path)
    assert header.extra["axcodes"] == "SRA" and header.extra["slice_axis"] == 0
    assert (header.num_images, header.rows, header.columns) == (7, 5, 4)
    got = images(path)
    # the same anatomy stored RAS gives the same images
    ras = np.transpose(data, (1, 2, 0))
    for k in range(7):
        np.testing.assert_array_equal(got[k], ras_axial(ras, k))


def test_flipped_axes_match_dicom_display(tmp_path: Path) -> None:
    # LPS storage (like DICOM): rows already run A→P and columns R→L, nothing to flip
    data = RNG.normal(size=(4, 5, 3)).astype(np.float32)
    path = save_nifti(tmp_path / "lps.nii", data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert READER.header(path).extra["axcodes"] == "LPS"
    np.testing.assert_array_equal(images(path, indices=[1])[1], data[:, :, 1].T)


def test_plan_slices_unknown_orientation_uses_last_axis() -> None:
    plan = plan_slices((3, 4, 5), None)
    assert (plan.slice_axis, plan.rows, plan.columns, plan.num_slices) == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="not an image"):
        plan_slices((1, 1, 5), ("R", "A", "S"))


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1)])
def test_2d_nifti_is_one_image(tmp_path: Path, shape: tuple[int, ...]) -> None:
    data = RNG.normal(size=shape).astype(np.float32)
    path = save_nifti(tmp_path / "flat.nii", data)
    header = READER.header(path)
    assert (header.num_images, header.rows, header.columns) == (1, 5, 4)
    got = images(path)
    np.testing.assert_array_equal(got[0], data.reshape(4, 5).T[::-1, ::-1])


def test_4d_reads_first_volume_by_default(tmp_path: Path) -> None:
    data = RNG.normal(size=(4, 5, 6, 3)).astype(np.float32)
    path = save_nifti(tmp_path / "fmri.nii.gz", data)
    header = READER.header(path)
    assert header.num_images == 6 and header.extra["volumes"] == 3
    got = images(path)
    for k in range(6):
        np.testing.assert_array_equal(got[k], ras_axial(data[..., 0], k))

    every = NiftiReader(volumes="all")
    assert every.header(path).num_images == 18
    got = images(path, every, [7, 17])
    np.testing.assert_array_equal(got[7], ras_axial(data[..., 1], 1))
    np.testing.assert_array_equal(got[17], ras_axial(data[..., 2], 5))
    with pytest.raises(ValueError):
        NiftiReader(volumes="some")  # type: ignore[arg-type]


def test_scaling_complex_and_rgb(tmp_path: Path) -> None:
    raw = RNG.integers(0, 100, size=(3, 4, 2)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -10.0)
    scaled = tmp_path / "scaled.nii"
    nib.save(img, scaled)
    np.testing.assert_allclose(images(scaled)[0], ras_axial(raw * 2.0 - 10.0, 0))

    cplx = (RNG.normal(size=(3, 4, 2)) + 1j * RNG.normal(size=(3, 4, 2))).astype(np.complex64)
    path = save_nifti(tmp_path / "complex.nii", cplx)
    np.testing.assert_allclose(images(path)[1], ras_axial(np.abs(cplx), 1), rtol=1e-6)

    rgb = RNG.integers(0, 255, size=(3, 4, 2, 3)).astype(np.uint8)
    rgb_dtype = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    structured = rgb.copy().view(rgb_dtype).reshape(3, 4, 2)
    path = save_nifti(tmp_path / "rgb.nii", structured)
    assert READER.header(path).num_images == 2
    np.testing.assert_allclose(images(path)[0], ras_axial(luminance(rgb), 0), atol=1e-3)


# --- content, not name -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["volume.dat", "volume.nii", "volume"])
def test_gzip_nifti_sniffed_by_content(tmp_path: Path, name: str) -> None:
    data = RNG.integers(0, 50, size=(4, 5, 3)).astype(np.int16)
    good = save_nifti(tmp_path / "good.nii.gz", data)
    path = copy_as(good, tmp_path / name)
    header = read_header(path)  # through the registry
    assert header.format == "nifti" and header.num_images == 3
    got = dict(iter_images(path, [2]))
    np.testing.assert_array_equal(got[2], ras_axial(data, 2))


def test_plain_nifti_named_gz(tmp_path: Path) -> None:
    data = RNG.integers(0, 50, size=(4, 5, 3)).astype(np.int16)
    path = copy_as(save_nifti(tmp_path / "plain.nii", data), tmp_path / "liar.nii.gz")
    np.testing.assert_array_equal(images(path)[0], ras_axial(data, 0))


def test_analyze_pair(tmp_path: Path) -> None:
    data = RNG.integers(0, 50, size=(4, 5, 3)).astype(np.int16)
    hdr = tmp_path / "pair.hdr"
    nib.save(nib.Nifti1Pair(data, np.eye(4)), hdr)
    assert read_header(hdr).num_images == 3
    np.testing.assert_array_equal(dict(iter_images(hdr))[1], ras_axial(data, 1))
    with pytest.raises(UnsupportedFileError, match="pair.hdr"):
        read_header(tmp_path / "pair.img")  # the catalog counts the pair once, via .hdr


# --- nibabel's own files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "num_images", "rows", "columns"),
    [
        ("anatomical.nii", 25, 41, 33),
        ("example4d.nii.gz", 24, 96, 128),  # 4D: first volume only
        ("example_nifti2.nii.gz", 12, 20, 32),  # NIfTI-2
        ("test.mgz", 3, 4, 5),  # MGH, stored SAR: sliced along voxel axis 0
    ],
)
def test_nibabel_files(name: str, num_images: int, rows: int, columns: int) -> None:
    path = nibabel_file(name)
    header = read_header(path)
    assert (header.num_images, header.rows, header.columns) == (num_images, rows, columns)
    got = dict(iter_images(path, [0, num_images - 1]))
    assert all(image.shape == (rows, columns) for image in got.values())
    img = nib.load(path)
    spatial = np.asarray(img.dataobj)
    if spatial.ndim == 4:
        spatial = spatial[..., 0]
    assert got[0].dtype == np.float32
    assert np.isclose(got[0].sum(), np.take(spatial, 0, axis=header.extra["slice_axis"]).sum())


def test_header_without_image_file_is_corrupt() -> None:
    with pytest.raises(CorruptFileError, match="missing"):
        read_header(nibabel_file("analyze.hdr"))  # nibabel ships the .hdr alone


def test_cifti_is_unsupported() -> None:
    with pytest.raises(UnsupportedFileError, match="CIFTI"):
        read_header(nibabel_file("row_major.dconn.nii"))


def test_truncated_nifti(tmp_path: Path) -> None:
    data = RNG.integers(0, 50, size=(8, 8, 8)).astype(np.int16)
    full = save_nifti(tmp_path / "full.nii", data).read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full[: len(full) - 300])
    with pytest.raises(CorruptFileError, match="needs 1024 bytes from byte 352, the file has 724"):
        READER.header(cut)  # the header's dims against the file size: no voxel read
    with pytest.raises(CorruptFileError):
        images(cut)
    gz = tmp_path / "cut.nii.gz"
    gz.write_bytes(gzip.compress(full)[:-200])
    with pytest.raises(CorruptFileError):
        images(gz, indices=[7])


def test_index_out_of_range(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "v.nii", np.zeros((3, 3, 2), np.float32))
    with pytest.raises(IndexError):
        images(path, indices=[2])


# --- NRRD (same slicing rule) -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["raw", "gzip", "bzip2", "ascii"])
def test_nrrd_slices(tmp_path: Path, encoding: str) -> None:
    data = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    path = tmp_path / "v.nrrd"
    nrrd.write(
        str(path),
        data,
        {"encoding": encoding, "space": "left-posterior-superior", "space directions": np.eye(3)},
    )
    header = read_header(path)
    assert header.format == "nrrd" and header.extra["axcodes"] == "LPS"
    assert (header.num_images, header.rows, header.columns) == (6, 5, 4)
    got = dict(iter_images(path, [5, 0]))
    assert list(got) == [5, 0]
    for k in (0, 5):
        np.testing.assert_allclose(got[k], data[:, :, k].T, rtol=1e-6)


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_nrrd_axial_axis_from_directions(tmp_path: Path, encoding: str) -> None:
    data = RNG.normal(size=(6, 4, 5)).astype(np.float32)
    directions = np.array([[0, 0, 2.0], [1.0, 0, 0], [0, 1.0, 0]])  # axis 0 → superior
    path = tmp_path / "p.nrrd"
    nrrd.write(
        str(path),
        data,
        {"encoding": encoding, "space": "LPS", "space directions": directions},
    )
    header = NrrdReader().header(path)
    assert header.extra["slice_axis"] == 0 and header.num_images == 6
    got = images(path, NrrdReader())
    for k in range(6):
        np.testing.assert_allclose(got[k], data[k].T, rtol=1e-6)  # rows P, columns L


def test_nrrd_rgb_and_2d(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, size=(3, 4, 5, 2)).astype(np.uint8)
    path = tmp_path / "rgb.nrrd"
    nrrd.write(
        str(path),
        rgb,
        {
            "kinds": ["RGB-color", "domain", "domain", "domain"],
            "space": "RAS",
            "space directions": np.vstack([[np.nan] * 3, np.eye(3)]),
        },
    )
    got = images(path, NrrdReader())
    assert len(got) == 2
    expected = luminance(np.moveaxis(rgb, 0, -1))
    np.testing.assert_allclose(got[1], ras_axial(expected, 1), atol=1e-3)

    flat = RNG.normal(size=(4, 5)).astype(np.float32)
    path = tmp_path / "flat.nrrd"
    nrrd.write(str(path), flat)
    header = read_header(path)
    assert (header.num_images, header.rows, header.columns) == (1, 4, 5)
    np.testing.assert_allclose(images(path, NrrdReader())[0], flat)


def test_nrrd_truncated(tmp_path: Path) -> None:
    data = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    path = tmp_path / "v.nrrd"
    nrrd.write(str(path), data, {"encoding": "raw"})
    cut = tmp_path / "cut.nrrd"
    cut.write_bytes(path.read_bytes()[:-100])
    assert read_header(cut).num_images == 6
    assert 0 in images(cut, NrrdReader(), [0])
    with pytest.raises(CorruptFileError):
        images(cut, NrrdReader(), [5])


# --- MetaImage (optional SimpleITK) -----------------------------------------------------------


def write_mha(path: Path, data_zyx: np.ndarray, direction: str = "1 0 0 0 1 0 0 0 1") -> Path:
    """A MetaImage file written by hand: text header, then raw little-endian int16."""
    nz, ny, nx = data_zyx.shape
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"TransformMatrix = {direction}\nOffset = 0 0 0\nElementSpacing = 1 1 1\n"
        f"DimSize = {nx} {ny} {nz}\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + data_zyx.astype("<i2").tobytes())
    return path


def test_mha_without_simpleitk_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # makes `import SimpleITK` fail
    path = write_mha(tmp_path / "v.mha", np.zeros((2, 3, 4), np.int16))
    with pytest.raises(UnsupportedFileError) as info:
        read_header(path)
    assert "SimpleITK" in info.value.reason and "hypermodal[mha]" in info.value.reason


def test_mha_with_simpleitk(tmp_path: Path) -> None:
    pytest.importorskip("SimpleITK")
    data = RNG.integers(-500, 500, size=(6, 5, 4)).astype(np.int16)  # z, y, x
    path = write_mha(tmp_path / "v.mha", data)
    header = read_header(path)
    assert header.format == "mha" and header.extra["axcodes"] == "LPS"
    assert (header.num_images, header.rows, header.columns) == (6, 5, 4)
    got = dict(iter_images(path, [3]))
    np.testing.assert_array_equal(got[3], data[3])  # LPS: rows P, columns L already
    # voxel x runs superior: slices step along x
    permuted = write_mha(tmp_path / "p.mha", data, "0 0 1 1 0 0 0 1 0")
    header = MetaImageReader().header(permuted)
    assert header.extra["slice_axis"] == 0 and header.num_images == 4
    got = images(permuted, MetaImageReader())
    np.testing.assert_array_equal(got[2], data[:, :, 2])


def test_nrrd_colour_axis_last(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, size=(4, 5, 2, 3)).astype(np.uint8)  # x, y, z, colour
    path = tmp_path / "rgb_last.nrrd"
    nrrd.write(
        str(path),
        rgb,
        {
            "encoding": "gzip",
            "kinds": ["domain", "domain", "domain", "RGB-color"],
            "space": "RAS",
            "space directions": np.vstack([np.eye(3), [np.nan] * 3]),
        },
    )
    got = images(path, NrrdReader())
    np.testing.assert_allclose(got[1], ras_axial(luminance(rgb), 1), atol=1e-3)
