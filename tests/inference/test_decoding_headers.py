"""The header pass of ``predict`` reads files in chunks; a crash costs its own file only."""

from __future__ import annotations

from hypermodal.common.engines import LocalEngine
from hypermodal.inference import decoding
from hypermodal.inference.decoding import read_headers
from tests.common import crash_files as cf
from tests.helpers import copy_as, make_ct_series, pydicom_file


def test_headers_in_chunks_come_back_in_input_order(tmp_path):
    files = make_ct_series(tmp_path / "ct", 7)
    files.insert(3, copy_as(pydicom_file("MR_small.dcm"), tmp_path / "mr.dcm"))
    (tmp_path / "junk.dcm").write_bytes(b"not an image")
    files.insert(5, tmp_path / "junk.dcm")
    with LocalEngine(2) as engine:
        infos, failed = read_headers(files, engine, progress=False)
    assert [i.path for i in infos] == [str(f) for f in files if f.name != "junk.dcm"]
    assert [p for p, _ in failed] == [str(tmp_path / "junk.dcm")]
    assert [i.images for i in infos] == [1] * 8
    assert len({i.series for i in infos}) == 2


def test_a_worker_crash_in_a_chunk_costs_its_file_only(tmp_path):
    files = make_ct_series(tmp_path / "ct", 5)
    crash = copy_as(pydicom_file("CT_small.dcm"), tmp_path / "b-abort-after.dcm")
    files.insert(2, crash)  # one chunk holds all six files
    assert decoding.HEADER_CHUNK >= len(files)
    with cf.NativeDecodingEngine(2) as engine:
        infos, failed = read_headers(files, engine, progress=False)
    assert [i.path for i in infos] == [str(f) for f in files if f != crash]
    assert len(failed) == 1 and failed[0][0] == str(crash)
    assert failed[0][1].startswith("decoder crashed: SIGABRT")
