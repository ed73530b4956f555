"""Where each file goes: ``<class>/<patient>/<study>/<series>/<file name>``, from series rows.

The class is the series' decision (``UNKNOWN`` and ``OTHER`` are classes too); the patient is the
PatientID, the study its date and description (else its UID), the series its description (else
its UID); what a header lacks (NIfTI, PNG) is ``unknown-patient``, ``unknown-study``,
``unknown-series``. Two different studies (or series) whose readable names meet in one folder are
told apart by a number (``T1_2``), given in the order of their UIDs, so the same inputs always get
the same layout; files without a series UID (volumes, pictures) share their folder and keep
their own names.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from hypermodal.evidence.fusion import UNKNOWN
from hypermodal.sort.names import safe_name


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def folder_parts(row: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """``(class, patient, study, series)`` folder names for one series row, made safe."""
    klass = safe_name(_text(row, "prediction") or UNKNOWN, UNKNOWN)
    patient = safe_name(_text(row, "PatientID"), "unknown-patient")
    readable = " ".join(t for t in (_text(row, "StudyDate"), _text(row, "StudyDescription")) if t)
    study = safe_name(readable or _text(row, "StudyInstanceUID"), "unknown-study")
    series = safe_name(
        _text(row, "SeriesDescription") or _text(row, "SeriesInstanceUID"), "unknown-series"
    )
    return klass, patient, study, series


def series_folders(rows: list[Mapping[str, Any]]) -> dict[str, tuple[str, str, str, str]]:
    """Series key -> its four folder names, distinct studies and series kept apart.

    Args:
        rows: Series table rows (``series``, ``prediction``, ``PatientID``, ``StudyDate``,
            ``StudyDescription``, ``StudyInstanceUID``, ``SeriesDescription``,
            ``SeriesInstanceUID``).
    """
    parts = {str(r["series"]): folder_parts(r) for r in rows}
    study_uid = {str(r["series"]): _text(r, "StudyInstanceUID") for r in rows}
    has_uid = {str(r["series"]): bool(_text(r, "SeriesInstanceUID")) for r in rows}
    # studies: one readable name in one patient folder may hold several study UIDs
    studies: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for key, (klass, patient, study, _) in parts.items():
        studies[(klass, patient, study)].add(study_uid[key])
    study_name: dict[tuple[str, str, str, str], str] = {}
    for (klass, patient, study), uids in studies.items():
        for n, uid in enumerate(sorted(uids), start=1):
            study_name[(klass, patient, study, uid)] = study if n == 1 else f"{study}_{n}"
    renamed: dict[str, tuple[str, str, str, str]] = {}
    for key, (klass, patient, study, series) in parts.items():
        renamed[key] = (klass, patient, study_name[(klass, patient, study, study_uid[key])], series)
    # series: one readable name in one study folder may hold several series
    # (files without a series UID — volumes, pictures — share their folder, named by file)
    groups: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    out: dict[str, tuple[str, str, str, str]] = {}
    for key, folder in renamed.items():
        if has_uid[key]:
            groups[folder].append(key)
        else:
            out[key] = folder
    for (klass, patient, study, series), keys in groups.items():
        for n, key in enumerate(sorted(keys), start=1):
            out[key] = (klass, patient, study, series if n == 1 else f"{series}_{n}")
    return out
