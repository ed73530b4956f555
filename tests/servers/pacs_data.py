"""A small PACS of real DICOM for the DICOMweb tests: series with known classes, dates, patients.

The series (all real pixel data and tags; copies of one file get distinct SOPInstanceUIDs, a
new SeriesInstanceUID and InstanceNumbers 1..n):

* ``ct``: pydicom's ``CT_small.dcm`` × 5, StudyDate 20200105, PatientID HM-CT;
* ``mr``: pydicom's ``MR_small.dcm`` × 4, StudyDate 20210310, PatientID HM-MR;
* ``bare``: ``MR_small.dcm`` × 2 written as bare data sets, without preamble or file meta header
  (one implicit, one explicit VR), StudyDate 20220701, PatientID HM-BARE: what Orthanc holds
  when such files were uploaded;
* ``multi``: a real five-slice CT series of pydicom's ``dicomdirtests`` (98892001/CT5N), as is;
* ``us``: pydicom-data's ``US1_UNCR.dcm`` (ultrasound: class OTHER), when pydicom-data is there.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import pydicom_file
from tests.servers.orthanc import Orthanc, orthanc_server

#: Orthanc configuration of the PACS tests: a named metadata key for the answers
USER_METADATA = {"hypermodal": 1024}


@dataclass
class PacsSeries:
    name: str
    expected: str  # the class the default model must give
    study: str = ""
    series: str = ""
    patient: str = ""
    modality: str = ""
    study_date: str = ""
    files: list[Path] = field(default_factory=list)
    bare: bool = False


def _copies(out: Path, source: Path, s: PacsSeries, n: int, bare: bool = False) -> PacsSeries:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    s.series = generate_uid(entropy_srcs=[s.name, "series"])
    s.study = generate_uid(entropy_srcs=[s.name, "study"])
    s.modality = str(ds.Modality)
    folder = out / s.name
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[s.name, str(k), "sop"])
        ds.SeriesInstanceUID, ds.StudyInstanceUID = s.series, s.study
        ds.PatientID, ds.StudyDate, ds.InstanceNumber = s.patient, s.study_date, k + 1
        path = folder / f"{k + 1:04d}.dcm"
        if bare:
            bare_ds = pydicom.Dataset(ds)
            bare_ds.preamble = None
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, bare_ds, implicit_vr=k % 2 == 0, little_endian=True)
            path.write_bytes(buf.getvalue())
        else:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(path, enforce_file_format=True)
        s.files.append(path)
    s.bare = bare
    return s


def _as_is(folder: Path, s: PacsSeries) -> PacsSeries:
    import pydicom

    s.files = sorted(p for p in folder.iterdir() if p.is_file())
    ds = pydicom.dcmread(s.files[0], stop_before_pixels=True)
    s.series, s.study = str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
    s.patient, s.modality = str(ds.get("PatientID", "")), str(ds.Modality)
    s.study_date = str(ds.get("StudyDate", ""))
    return s


def make_pacs_corpus(out: Path) -> dict[str, PacsSeries]:
    """The series of the module doc, written under ``out``, by name."""
    from pydicom.data import get_testdata_file

    ct, mr = pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm")
    corpus = {
        "ct": _copies(out, ct, PacsSeries("ct", "CT", patient="HM-CT", study_date="20200105"), 5),
        "mr": _copies(out, mr, PacsSeries("mr", "MR", patient="HM-MR", study_date="20210310"), 4),
        "bare": _copies(
            out, mr, PacsSeries("bare", "MR", patient="HM-BARE", study_date="20220701"), 2, True
        ),
        "multi": _as_is(
            ct.parent / "dicomdirtests" / "98892001" / "CT5N", PacsSeries("multi", "CT")
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        us = get_testdata_file("US1_UNCR.dcm", download=False)
    if us is not None:
        s = PacsSeries("us", "OTHER", patient="HM-US", study_date="20190101")
        corpus["us"] = _copies(out, Path(str(us)), s, 1)
    return corpus


@contextmanager
def loaded_pacs(workdir: Path) -> Iterator[tuple[Orthanc, dict[str, PacsSeries]]]:
    """A real Orthanc on loopback holding :func:`make_pacs_corpus`."""
    corpus = make_pacs_corpus(workdir / "corpus")
    (workdir / "server").mkdir()
    with orthanc_server(workdir / "server", extra={"UserMetadata": USER_METADATA}) as srv:
        for s in corpus.values():
            for path in s.files:
                srv.upload(path)
        yield srv, corpus


def series_metadata(srv: Orthanc, series_uid: str, key: str) -> dict | None:
    """The JSON a series holds under metadata ``key`` on ``srv`` (None when unset)."""
    import requests

    hits = requests.post(f"{srv.base}/tools/lookup", data=series_uid, timeout=10).json()
    sid = next(h["ID"] for h in hits if h["Type"] == "Series")
    r = requests.get(f"{srv.base}/series/{sid}/metadata/{key}", timeout=10)
    return json.loads(r.text) if r.ok else None
