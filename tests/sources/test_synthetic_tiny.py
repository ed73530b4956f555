import warnings

import pydicom
import pytest

from hypermodal.io import iter_images, read_header
from hypermodal.sources.synthetic_tiny import write_tiny_dicom


def test_tiny_files_are_valid_dicom_with_their_own_uids_and_series(tmp_path):
    assert write_tiny_dicom(tmp_path, 250, series_size=100, side=8) == 250
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 250 and not list(tmp_path.rglob("*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"series_{k:06d}" for k in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # invalid UIDs or values would warn
        sets = [pydicom.dcmread(p) for p in (files[0], files[99], files[100], files[-1])]
    assert len({ds.SOPInstanceUID for ds in sets}) == 4
    assert sets[0].SOPInstanceUID == sets[0].file_meta.MediaStorageSOPInstanceUID
    assert sets[0].SeriesInstanceUID == sets[1].SeriesInstanceUID != sets[2].SeriesInstanceUID
    assert [int(ds.InstanceNumber) for ds in sets] == [1, 100, 1, 50]
    assert sets[0].pixel_array.shape == (8, 8)
    h = read_header(files[100])
    assert (h.modality, h.series, h.rows) == ("CT", sets[2].SeriesInstanceUID, 8)
    assert [i for i, _ in iter_images(files[100])] == [0]


def test_tiny_files_refuse_impossible_counts(tmp_path):
    with pytest.raises(ValueError):
        write_tiny_dicom(tmp_path, -1)
    with pytest.raises(ValueError):
        write_tiny_dicom(tmp_path, 5, series_size=0)
