"""Real DICOM files for the fetch tests.

The files are pydicom's own test files (``CT_small.dcm``, ``MR_small.dcm``, ``emri_small.dcm``).
Series with several instances are copies of one real file that get distinct SOPInstanceUIDs
(and one shared, new SeriesInstanceUID): the pixel data and every other tag stay real.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import pydicom_file

SOURCES = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")


@dataclass
class Series:
    dataset: str
    series: str
    study: str
    patient: str
    files: list[Path] = field(default_factory=list)
    sops: list[str] = field(default_factory=list)

    @property
    def size_MB(self) -> float:
        return sum(p.stat().st_size for p in self.files) / 1e6


def make_series(out: Path, source: str, n: int, dataset: str = "demo", index: int = 0) -> Series:
    """``n`` instances of one real file, one new series; written under ``out``."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(pydicom_file(source))
    series_uid = generate_uid(entropy_srcs=[source, str(index), "series"])
    study_uid = generate_uid(entropy_srcs=[source, str(index), "study"])
    s = Series(dataset, series_uid, study_uid, str(ds.get("PatientID", "") or f"P{index}"))
    folder = out / series_uid
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        sop = generate_uid(entropy_srcs=[source, str(index), str(k), "sop"])
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.InstanceNumber = k + 1
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        s.files.append(path)
        s.sops.append(sop)
    return s


def make_corpus(out: Path, n_series: int, per_series: int, dataset: str = "demo") -> list[Series]:
    return [
        make_series(out, SOURCES[i % len(SOURCES)], per_series, dataset, i) for i in range(n_series)
    ]


def plan_records(series: list[Series], source: str, url_of) -> list[dict]:
    return [
        {
            "dataset": s.dataset,
            "series": s.series,
            "study": s.study,
            "patient": s.patient,
            "images": len(s.files),
            "size_MB": s.size_MB,
            "source": source,
            "url": url_of(s),
        }
        for s in series
    ]


def write_plan(path: Path, records: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(records).to_parquet(path)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
