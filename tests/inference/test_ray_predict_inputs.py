"""Objects read in memory give what the same files give on disk; the work is cut evenly."""

from __future__ import annotations

import pytest

from hypermodal.inference.decoding import decode_file
from hypermodal.inference.ray_predict import _decode_chunks, runs_on_workers
from hypermodal.inference.remote_inputs import is_remote, memory_file, normalise, split_s3
from hypermodal.inference.sampling import header_info
from hypermodal.preprocess import PreprocessConfig
from tests.helpers import pydicom_file

FILES = ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "emri_small_jpeg_2k_lossless.dcm"]


def test_s3_urls_survive_pathlib_and_pick_the_worker_path():
    from pathlib import Path

    assert normalise(Path("s3://idc-open-data/abc/")) == "s3://idc-open-data/abc"
    assert is_remote(Path("s3://b/k")) and not is_remote("/data/s3/x.dcm")
    assert split_s3("s3://idc-open-data/uuid/*") == ("idc-open-data", "uuid/")
    with pytest.raises(ValueError):
        split_s3("s3:///key")
    assert runs_on_workers("ray", ["/x"]) and runs_on_workers("local", ["s3://b/p/"])
    assert not runs_on_workers("local", ["/x"])


@pytest.mark.parametrize("name", FILES)
def test_header_from_the_head_of_an_object_equals_the_file_header(name):
    """The first 64 KB in a memory file of the object's size: the header pass's record."""
    path = pydicom_file(name)
    data = path.read_bytes()
    on_disk = header_info(str(path))
    with memory_file(data[: 1 << 16], len(data)) as alias:
        head = header_info(alias)
    assert "error" not in head
    for key in ("images", "series", "position", "instance", "text"):
        assert head[key] == on_disk[key], key


def test_a_head_too_short_fails_so_the_object_is_read_whole():
    """Encapsulated pixel data is checked fragment by fragment: a hole there is an error."""
    path = pydicom_file("emri_small_jpeg_2k_lossless.dcm")
    data = path.read_bytes()
    with memory_file(data[:4096], len(data)) as alias:
        assert "error" in header_info(alias)


@pytest.mark.parametrize("name", FILES)
def test_decoding_from_memory_equals_decoding_the_file(name):
    import numpy as np

    path = pydicom_file(name)
    pre = PreprocessConfig().to_dict()
    disk = decode_file((str(path), None, pre))
    with memory_file(path.read_bytes()) as alias:
        mem = decode_file((alias, None, pre))
    assert np.array_equal(disk["images"], mem["images"])
    assert np.array_equal(disk["stats"], mem["stats"], equal_nan=True)
    assert (disk["series"], disk["modality"], disk["rows"]) == (
        mem["series"],
        mem["modality"],
        mem["rows"],
    )


def test_decode_chunks_keep_order_and_give_every_worker_work():
    plan = [(f"f{i}", None) for i in range(10)] + [("multi", [0, 4, 9])]
    images = {f"f{i}": 1 for i in range(10)} | {"multi": 10}
    chunks = _decode_chunks(plan, images, cap=64, workers=2)
    assert [item for c in chunks for item in c] == plan
    assert len(chunks) >= 4 and all(chunks)
    assert len(_decode_chunks(plan, images, cap=64, workers=1)) >= 3
