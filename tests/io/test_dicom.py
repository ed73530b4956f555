"""DICOM reader on real files: pydicom's test files (wheel + pydicom-data) and nibabel's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.sequence import Sequence

from hypermodal.io import CorruptFileError, UnsupportedFileError
from hypermodal.io.dicom import DicomReader, sniff_dicom
from tests.helpers import copy_as, luminance, nibabel_file, pydicom_file, truncate_copy

READER = DicomReader()


def frames(path: Path, indices: list[int] | None = None) -> dict[int, np.ndarray]:
    return dict(READER.images(path, indices))


def only(path: Path) -> np.ndarray:
    images = frames(path)
    assert list(images) == [0]
    return images[0]


# --- header -------------------------------------------------------------------------------


def test_header_fields_ct_small() -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    header = READER.header(path)
    assert header.format == "dicom"
    assert header.path == str(path)
    assert (header.num_images, header.rows, header.columns) == (1, 128, 128)
    assert header.modality == "CT"
    assert header.patient == ds.PatientID
    assert header.study == ds.StudyInstanceUID
    assert header.series == ds.SeriesInstanceUID
    assert header.instance == ds.SOPInstanceUID
    assert header.body_part is None  # not in this file
    assert header.photometric == "MONOCHROME2"
    assert header.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian
    assert header.localizer is False
    assert header.extra["sop_class"] == ds.SOPClassUID
    assert header.to_dict()["modality"] == "CT"


def test_localizer_flagged(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.BodyPartExamined = "CHEST"
    path = tmp_path / "scout.dcm"
    ds.save_as(path)
    header = READER.header(path)
    assert header.localizer is True
    assert header.body_part == "CHEST"
    assert READER.header(pydicom_file("CT_small.dcm")).localizer is False


def test_header_reads_no_pixels() -> None:
    # the pixel data of this file cannot be decoded by anyone: a sequence delimiter sits inside
    # its codestream's SIZ marker. The header sees that from the codestream's first bytes,
    # without decoding
    path = pydicom_file("JPEG2000-embedded-sequence-delimiter.dcm")
    with pytest.raises(CorruptFileError, match="codestream at byte 3050 says 1024×3722445056"):
        READER.header(path)
    with pytest.raises(CorruptFileError, match="header says 1024×256"):
        frames(path)


# --- pixel values ---------------------------------------------------------------------------


def test_ct_rescale_gives_hounsfield_units() -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    image = only(path)
    assert image.dtype == np.float32 and image.shape == (128, 128)
    np.testing.assert_array_equal(image, expected.astype(np.float32))
    assert image.min() < -800  # air is about -1000 HU: the intercept was applied


def test_monochrome1_is_inverted() -> None:
    path = pydicom_file("RG3_UNCR.dcm")  # CR, MONOCHROME1, 10 bits stored, no rescale
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = ds.pixel_array.astype(np.float32)
    image = only(path)
    np.testing.assert_array_equal(image, (2**ds.BitsStored - 1) - raw)


def test_monochrome1_inversion_stays_in_modality_range(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    stored_lo, stored_hi = (-(2**15), 2**15 - 1) if ds.PixelRepresentation else (0, 2**16 - 1)
    stored_lo, stored_hi = stored_lo * 2 - 100, stored_hi * 2 - 100
    expected = (stored_lo + stored_hi) - (ds.pixel_array.astype(np.float64) * 2 - 100)
    np.testing.assert_array_equal(only(path), expected.astype(np.float32))


def test_monochrome1_compressed_matches_uncompressed() -> None:
    np.testing.assert_array_equal(
        only(pydicom_file("RG3_J2KR.dcm")), only(pydicom_file("RG3_UNCR.dcm"))
    )


def test_rgb_becomes_luminance() -> None:
    path = pydicom_file("SC_rgb.dcm")
    rgb = pydicom.dcmread(path).pixel_array
    np.testing.assert_allclose(only(path), luminance(rgb), atol=1e-3)


def test_ybr_full_becomes_luma() -> None:
    # Y of YBR_FULL is BT.601 luminance: close to the RGB original's (rounding of Y only)
    ybr = only(pydicom_file("SC_ybr_full_uncompressed.dcm"))
    rgb = only(pydicom_file("SC_rgb.dcm"))
    assert np.abs(ybr - rgb).max() <= 1.5


def test_palette_color_becomes_luminance() -> None:
    path = pydicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    expected = luminance(apply_color_lut(ds.pixel_array, ds))
    image = only(path)
    assert image.shape == (ds.Rows, ds.Columns)
    np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-2)


# --- multi-frame ----------------------------------------------------------------------------


def test_multiframe_frame_by_frame() -> None:
    path = pydicom_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    header = READER.header(path)
    assert header.num_images == ds.NumberOfFrames == 10
    images = frames(path)
    assert list(images) == list(range(10))
    for i, image in images.items():
        assert image.shape == (64, 64) and image.dtype == np.float32
        np.testing.assert_array_equal(image, ds.pixel_array[i])


def test_multiframe_one_index_yields_only_that_frame() -> None:
    path = pydicom_file("emri_small.dcm")
    got = list(READER.images(path, [7]))
    assert [i for i, _ in got] == [7]
    np.testing.assert_array_equal(got[0][1], pixel_array(path, index=7))
    assert [i for i, _ in READER.images(path, [3, 1])] == [3, 1]  # order as asked
    assert list(READER.images(path, [])) == []


def test_multiframe_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        list(READER.images(pydicom_file("emri_small.dcm"), [10]))
    with pytest.raises(IndexError):
        list(READER.images(pydicom_file("CT_small.dcm"), [-1]))


def test_unrequested_frames_are_not_decoded(tmp_path: Path) -> None:
    # cut the JPEG 2000 multi-frame file inside its last frame: earlier frames still decode
    src = pydicom_file("emri_small_jpeg_2k_lossless.dcm")
    path = truncate_copy(src, tmp_path / "cut.dcm", src.stat().st_size - 2000)
    reference = pixel_array(pydicom_file("emri_small.dcm"), index=0)
    np.testing.assert_array_equal(frames(path, [0])[0], reference)
    with pytest.raises(CorruptFileError):
        frames(path, [9])


def test_rtdose_multiframe_in_wheel() -> None:
    path = pydicom_file("rtdose.dcm")  # 15 frames, ships with pydicom itself
    ds = pydicom.dcmread(path)
    assert READER.header(path).num_images == 15
    np.testing.assert_array_equal(frames(path, [14])[14], ds.pixel_array[14])


def test_enhanced_ct_shared_functional_group_rescale() -> None:
    path = pydicom_file("eCT_Supplemental.dcm")  # rescale only in the shared groups
    ds = pydicom.dcmread(path)
    assert "RescaleIntercept" not in ds
    images = frames(path)
    assert len(images) == 2
    np.testing.assert_array_equal(images[1], ds.pixel_array[1].astype(np.float32) - 1024)


def test_enhanced_per_frame_rescale(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    for item, (slope, intercept) in zip(
        ds.PerFrameFunctionalGroupsSequence, [(1.0, -1024.0), (2.0, -500.0)], strict=True
    ):
        transform = Dataset()
        transform.RescaleSlope = slope
        transform.RescaleIntercept = intercept
        transform.RescaleType = "HU"
        item.PixelValueTransformationSequence = Sequence([transform])
    path = tmp_path / "per_frame.dcm"
    ds.save_as(path)
    images = frames(path)
    raw = ds.pixel_array.astype(np.float32)
    np.testing.assert_array_equal(images[0], raw[0] - 1024)
    np.testing.assert_array_equal(images[1], raw[1] * 2 - 500)


def test_enhanced_mr_gzip_from_nibabel() -> None:
    path = nibabel_file("philips_mprage.dcm.gz", "nicom/tests/data")
    header = READER.header(path)
    assert header.num_images == 176 and header.modality == "MR"
    assert header.extra["gzip"] is True
    got = list(READER.images(path, [100]))
    assert [i for i, _ in got] == [100] and got[0][1].shape == (256, 256)


# --- compressed transfer syntaxes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("compressed", "reference", "tolerance"),
    [
        ("SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb.dcm", 2.0),  # JPEG baseline, RGB
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb.dcm", 2.0),  # JPEG baseline, YBR_FULL_422
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", 0.0),  # JPEG lossless SV1
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", 0.0),  # JPEG-LS lossless
        ("SC_rgb_jls_lossy_line.dcm", "SC_rgb.dcm", 3.0),  # JPEG-LS near-lossless
        ("MR_small_jp2klossless.dcm", "MR_small.dcm", 0.0),  # JPEG 2000 lossless
        ("693_J2KR.dcm", "693_UNCR.dcm", 0.0),  # JPEG 2000 lossless, 512² CT with rescale
        ("MR_small_RLE.dcm", "MR_small.dcm", 0.0),  # RLE lossless
        ("SC_rgb_rle.dcm", "SC_rgb.dcm", 0.0),  # RLE, colour
        ("image_dfl.dcm", None, 0.0),  # deflated explicit VR little endian
    ],
)
def test_compressed_matches_uncompressed(
    compressed: str, reference: str | None, tolerance: float
) -> None:
    path = pydicom_file(compressed)
    image = only(path)
    if reference is None:
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array.astype(np.float32)
    else:
        expected = only(pydicom_file(reference))
    assert image.shape == expected.shape
    assert np.abs(image - expected).max() <= tolerance


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
    ],
)
def test_compressed_multiframe_matches_uncompressed(compressed: str, reference: str) -> None:
    got, expected = frames(pydicom_file(compressed)), frames(pydicom_file(reference))
    assert list(got) == list(expected) == list(range(10))
    for i in got:
        np.testing.assert_array_equal(got[i], expected[i])


def test_jpeg_baseline_multiframe_ybr() -> None:
    path = pydicom_file("examples_ybr_color.dcm")  # 30 frames, JPEG baseline YBR_FULL_422
    ds = pydicom.dcmread(path)
    got = frames(path, [29])
    # grey is the Y channel itself …
    np.testing.assert_array_equal(got[29], pixel_array(path, index=29, raw=True)[..., 0])
    # … which is the luminance of pydicom's RGB conversion up to rounding and gamut clipping
    assert np.abs(got[29] - luminance(pixel_array(path, index=29))).mean() < 0.5
    assert READER.header(path).num_images == ds.NumberOfFrames == 30


def test_missing_codec_names_transfer_syntax_and_extra() -> None:
    from pydicom.pixels import get_decoder

    path = pydicom_file("JPGExtended.dcm")  # 12-bit JPEG extended: only GPL libjpeg decodes
    if "pylibjpeg" in get_decoder(pydicom.uid.JPEGExtended12Bit).available_plugins:
        assert only(path).shape == (1024, 256)  # the opt-in GPL extra is installed
        return
    with pytest.raises(UnsupportedFileError) as info:
        READER.header(path)
    reason = info.value.reason
    assert "1.2.840.10008.1.2.4.51" in reason and "JPEG Extended" in reason
    assert "pylibjpeg-libjpeg" in reason and "hypermodal[gpl]" in reason
    with pytest.raises(UnsupportedFileError):
        frames(path)


# --- files that are not images, broken files ------------------------------------------------


@pytest.mark.parametrize("name", ["rtstruct.dcm", "test-SR.dcm", "rtplan.dcm", "waveform_ecg.dcm"])
def test_no_pixel_data_is_unsupported(name: str) -> None:
    path = pydicom_file(name)
    with pytest.raises(UnsupportedFileError) as info:
        READER.header(path)
    assert info.value.reason == "no pixel data"
    with pytest.raises(UnsupportedFileError, match="no pixel data"):
        frames(path)


def test_truncated_native_pixel_data() -> None:
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(CorruptFileError, match="truncated"):
        READER.header(path)
    with pytest.raises(CorruptFileError):
        frames(path)


@pytest.mark.parametrize("keep", [200, 400, 1200, 20000])
def test_truncated_copies_are_corrupt(tmp_path: Path, keep: int) -> None:
    # cut inside the file meta, inside the dataset, inside the pixel data
    path = truncate_copy(pydicom_file("CT_small.dcm"), tmp_path / "cut.dcm", keep)
    with pytest.raises(CorruptFileError):
        READER.header(path)


def test_too_short_jpeg2000_still_decodes_exactly() -> None:
    # Only the closing sequence delimiter is missing (pydicom's own dcmread drops the pixel
    # data for it); every frame is intact, so the reader returns them rather than failing.
    got = frames(pydicom_file("emri_small_jpeg_2k_lossless_too_short.dcm"))
    expected = frames(pydicom_file("emri_small.dcm"))
    assert list(got) == list(range(10))
    for i in got:
        np.testing.assert_array_equal(got[i], expected[i])


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_invalid_number_of_frames_is_corrupt() -> None:
    with pytest.raises(CorruptFileError, match="NumberOfFrames"):
        READER.header(pydicom_file("badVR.dcm"))


def test_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnsupportedFileError, match="not a DICOM file"):
        READER.header(path)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedFileError, match="empty"):
        READER.header(empty)


# --- variants of the container --------------------------------------------------------------


def test_gzip_wrapped_dicom() -> None:
    path = pydicom_file("zipMR.gz")
    header = READER.header(path)
    assert header.modality == "MR" and header.extra["gzip"] is True
    np.testing.assert_array_equal(only(path), only(pydicom_file("MR_small.dcm")))


def test_bare_dataset_without_preamble(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    path = tmp_path / "bare"
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    head = path.read_bytes()[:1024]
    assert head[128:132] != b"DICM" and sniff_dicom(head)
    header = READER.header(path)
    assert header.modality == "CT" and header.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian
    np.testing.assert_array_equal(only(path), only(pydicom_file("CT_small.dcm")))


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_other_native_syntaxes(name: str) -> None:
    np.testing.assert_array_equal(only(pydicom_file(name)), only(pydicom_file("MR_small.dcm")))


def test_gzip_wrapped_copy_of_ct(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "ct.dcm.gz"
    path.write_bytes(gzip.compress(pydicom_file("CT_small.dcm").read_bytes()))
    np.testing.assert_array_equal(only(path), only(pydicom_file("CT_small.dcm")))
    copy = copy_as(path, tmp_path / "no_suffix")
    assert READER.header(copy).num_images == 1
