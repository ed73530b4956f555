"""Names from header text are one safe path component; layouts keep different series apart."""

import math

import pytest

from hypermodal.sort.layout import folder_parts, series_folders
from hypermodal.sort.names import MAX_NAME_BYTES, numbered, safe_name, split_suffix


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("..", "unknown-patient"),
        (".", "unknown-patient"),
        ("", "unknown-patient"),
        (None, "unknown-patient"),
        (math.nan, "unknown-patient"),
        ("\x00\x1f\x7f", "unknown-patient"),  # control characters only
        ("  T1  MPRAGE \t sag ", "T1 MPRAGE sag"),
        ("bell\x07here", "bell_here"),
        ('what?*:"<>|', "what"),
        ("caf\udce9.dcm", "caf_.dcm"),  # a byte that was not UTF-8 in the file name
        (".hidden", "hidden"),
        ("trailing dots...", "trailing dots"),
    ],
)
def test_safe_name(text, expected):
    got = safe_name(text, "unknown-patient")
    assert got == expected
    assert "/" not in got and got not in (".", "..") and got.isprintable()


def test_long_names_are_capped_in_bytes_and_keep_their_suffix():
    name = safe_name("é" * 300 + ".nii.gz", "x")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.endswith(".nii.gz") and name.startswith("éé")
    assert safe_name("x" * 1000, "y") == "x" * MAX_NAME_BYTES


def test_numbered_alternatives_keep_compound_suffixes():
    assert split_suffix("scan.nii.gz") == ("scan", ".nii.gz")
    assert numbered("scan.nii.gz", 2) == "scan_2.nii.gz"
    assert numbered("IM0001", 3) == "IM0001_3"
    assert numbered("1.2.840.113619.2.55", 2) == "1.2.840.113619.2_2.55"  # a UID as a name


def _row(key, **values):
    return {"series": key, "prediction": "CT", **values}


def test_folders_from_headers_and_what_exports_lack():
    row = _row(
        "1.2.3",
        PatientID="../../root",
        StudyDate="20240102",
        StudyDescription="CT/chest",
        SeriesDescription="",
        SeriesInstanceUID="1.2.3",
    )
    assert folder_parts(row) == ("CT", "root", "20240102 CT_chest", "1.2.3")
    export = {"series": "/data/brain.nii", "prediction": math.nan}
    assert folder_parts(export) == ("UNKNOWN", "unknown-patient", "unknown-study", "unknown-series")


def test_different_series_and_studies_with_one_name_stay_apart():
    rows = [
        _row(
            "1.9",
            PatientID="p",
            StudyInstanceUID="2.1",
            SeriesInstanceUID="1.9",
            SeriesDescription="T1",
        ),
        _row(
            "1.5",
            PatientID="p",
            StudyInstanceUID="2.1",
            SeriesInstanceUID="1.5",
            SeriesDescription="T1",
        ),
        _row(
            "1.7",
            PatientID="p",
            StudyInstanceUID="2.2",
            SeriesInstanceUID="1.7",
            SeriesDescription="T1",
        ),
        _row("/a/x.nii", PatientID=None),
        _row("/b/x.nii", PatientID=None),
    ]
    for r in rows[:3]:
        r["StudyDate"] = "20240102"
    folders = series_folders(rows)
    # by UID order, whichever order the rows came in
    assert folders["1.5"] == ("CT", "p", "20240102", "T1")
    assert folders["1.9"] == ("CT", "p", "20240102", "T1_2")
    assert folders["1.7"] == ("CT", "p", "20240102_2", "T1")
    assert folders == series_folders(rows[::-1])
    # volumes without a series UID share one folder (their files keep their names)
    assert (
        folders["/a/x.nii"]
        == folders["/b/x.nii"]
        == ("CT", "unknown-patient", "unknown-study", "unknown-series")
    )
