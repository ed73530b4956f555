"""A PACS classified in place: a real Orthanc on loopback holding real DICOM, the default model.

Series are listed by QIDO-RS, a few instances of each retrieved by WADO-RS into a private
temporary folder, classified, the folder deleted, and the answers written back to Orthanc.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from hypermodal.common.errors import PermanentFetchError
from hypermodal.inference.orthanc_labels import OrthancWriter, label_for, rest_root
from hypermodal.inference.pacs import classify_dicomweb
from hypermodal.inference.pacs_retrieve import retrieve_sample, spread
from hypermodal.sources.fetch import RetryPolicy, SeriesQuery, SourceUnreachableError
from hypermodal.sources.fetch.dicomweb import make_client, query_server
from hypermodal.sources.fetch.wado import WadoClient
from tests.servers.dicom_data import free_port
from tests.servers.pacs_data import loaded_pacs, series_metadata


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with loaded_pacs(tmp_path_factory.mktemp("pacs")) as loaded:
        yield loaded


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_spread_takes_the_middle_and_both_halves():
    assert spread(100, 3) == [16, 50, 83]
    assert spread(5, 3) == [0, 2, 4]
    assert spread(10, 2) == [2, 5]  # an even count still holds the middle
    assert spread(9, 1) == [4]
    assert spread(2, 5) == [0, 1]
    for n in range(1, 40):
        for k in range(1, 8):
            picked = spread(n, k)
            assert len(picked) == min(n, k) and n // 2 in picked
            assert picked == sorted(set(picked)) and all(0 <= p < n for p in picked)


def test_instances_are_picked_by_instance_number(pacs, tmp_path):
    import pydicom

    srv, corpus = pacs
    info = next(s for s in query_server(srv.dicomweb) if s.series == corpus["ct"].series)
    client = make_client(srv.dicomweb, 10)
    done = retrieve_sample(
        lambda: client, WadoClient(srv.dicomweb, 10), srv.dicomweb, info, tmp_path, 3, RetryPolicy()
    )
    assert done.error is None and done.instances == 5
    numbers = [int(pydicom.dcmread(p).InstanceNumber) for p in done.files]
    assert numbers == [1, 3, 5]


def test_bare_instances_come_back_as_part10_files(pacs, tmp_path):
    import pydicom

    srv, corpus = pacs
    info = next(s for s in query_server(srv.dicomweb) if s.series == corpus["bare"].series)
    client = make_client(srv.dicomweb, 10)
    done = retrieve_sample(
        lambda: client, WadoClient(srv.dicomweb, 10), srv.dicomweb, info, tmp_path, 3, RetryPolicy()
    )
    assert done.error is None and len(done.files) == 2
    for path in done.files:
        assert path.read_bytes()[128:132] == b"DICM"
        ds = pydicom.dcmread(path)  # no force needed any more
        assert ds.SeriesInstanceUID == corpus["bare"].series and ds.pixel_array.size


@pytest.mark.slow
def test_classify_in_place_gives_every_class_and_leaves_nothing(pacs, tmp_path):
    srv, corpus = pacs
    scratch = tmp_path / "scratch"
    out = tmp_path / "pacs.csv"
    summary = classify_dicomweb(
        srv.dicomweb,
        None,
        None,
        out,
        per_series=3,
        write_labels=True,
        metadata_key="hypermodal",
        scratch=scratch,
        progress=False,
    )
    table = pd.read_csv(out).set_index("SeriesInstanceUID")
    assert summary.series == len(corpus) == len(table)
    for s in corpus.values():
        row = table.loc[s.series]
        assert row["prediction"] == s.expected, (s.name, row.to_dict())
        assert row["Modality"] == s.modality and row["StudyInstanceUID"] == s.study
        assert row["instances"] == len(s.files)
        assert row["retrieved"] == min(3, len(s.files)) and row["images_decoded"] >= 1
        assert row["agreement"] == "agree" and pd.isna(row["error"])
        assert 0.5 <= row["confidence"] <= 1.0
    assert summary.series_classified == len(corpus) and summary.series_failed == 0
    assert summary.instances_retrieved == int(table["retrieved"].sum())
    # nothing copied from the server is left: the temporary folder is gone, only out remains
    assert _files_under(scratch) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "pacs.csv",
        "scratch",
    ]
    # the answers are on the server: Orthanc 1.10 has no labels, so they are metadata
    assert summary.write_mode in ("labels", "metadata") and summary.written == len(corpus)
    for s in corpus.values():
        if summary.write_mode == "metadata":
            answer = series_metadata(srv, s.series, "hypermodal")
            assert answer is not None and answer["prediction"] == s.expected
            assert answer["header"] == s.modality and answer["agreement"] == "agree"
        else:
            assert label_for(s.expected) in _labels(srv, s.series)


def _labels(srv, series_uid: str) -> list[str]:
    hits = requests.post(f"{srv.base}/tools/lookup", data=series_uid, timeout=10).json()
    sid = next(h["ID"] for h in hits if h["Type"] == "Series")
    return requests.get(f"{srv.base}/series/{sid}/labels", timeout=10).json()


@pytest.mark.slow
def test_a_query_classifies_only_its_series(pacs, tmp_path):
    srv, corpus = pacs
    query = SeriesQuery.from_options(modality="CT", limit=1)
    out = tmp_path / "ct.parquet"
    summary = classify_dicomweb(srv.dicomweb, query, None, out, per_series=1, progress=False)
    table = pd.read_parquet(out)
    assert summary.series == 1 and len(table) == 1
    assert table["Modality"].tolist() == ["CT"] and table["prediction"].tolist() == ["CT"]
    assert table["retrieved"].tolist() == [1]
    assert summary.query["modality"] == ["CT"] and summary.query["limit"] == 1


def test_labels_fall_back_to_metadata_on_a_server_without_them(pacs):
    srv, corpus = pacs
    writer = OrthancWriter(rest_root(srv.dicomweb), metadata_key="1025")
    version = writer.connect()
    writer.mode = "labels"  # as a server that claims labels; 1.10 answers 404 to them
    if version == "labels":
        pytest.skip("this Orthanc has labels")
    written = writer.write(corpus["mr"].series, "MR", {"confidence": 0.9})
    assert written == "metadata 1025" and writer.mode == "metadata"
    assert series_metadata(srv, corpus["mr"].series, "1025")["prediction"] == "MR"


def test_orthanc_rest_root_and_labels():
    assert rest_root("http://pacs:8042/dicom-web/") == "http://pacs:8042"
    assert rest_root("http://h/orthanc/dicom-web") == "http://h/orthanc"
    assert rest_root("http://h/qido", "http://h:8042/") == "http://h:8042"
    with pytest.raises(ValueError, match="give the Orthanc URL"):
        rest_root("http://h/qido")
    assert label_for("CT") == "hypermodal-CT" and label_for("A B") == "hypermodal-A_B"
    with pytest.raises(ValueError, match="1024"):
        OrthancWriter("http://127.0.0.1:1", metadata_key="15")


def test_a_server_that_is_not_there_fails_at_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    start = time.monotonic()
    with pytest.raises(SourceUnreachableError, match="connection refused"):
        classify_dicomweb(url, None, None, tmp_path / "out.csv", progress=False)
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


def test_a_url_that_is_not_the_dicomweb_root_says_so(pacs, tmp_path):
    srv, _ = pacs
    with pytest.raises(PermanentFetchError, match="DICOMweb root"):
        classify_dicomweb(srv.base, None, None, tmp_path / "out.csv", progress=False)
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        classify_dicomweb(srv.dicomweb, None, None, tmp_path / "out.txt", progress=False)
