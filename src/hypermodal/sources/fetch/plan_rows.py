"""THE reader of ``plan.parquet``: one :class:`PlanRow` per fetchable series, for fetch and build.

The plan is a Parquet file with one row per series (written by ``hypermodal plan``). Columns used:

=========== ======== =================================================================
column      required meaning
=========== ======== =================================================================
series      yes      SeriesInstanceUID (or a ``SeriesInstanceUID`` column)
source      yes      ``idc`` | ``tcia`` | ``dicomweb``; other rows (``external``) are skipped
url         yes      IDC: ``s3://bucket/<crdc_series_uuid>/*`` (or ``series_aws_url``);
                     TCIA: base URL of the NBIA v4 API (default: TCIA's public one);
                     DICOMweb: base URL of the server
dataset     no       folder name for the series (default: ``source``)
study       no       StudyInstanceUID (or ``StudyInstanceUID``; DICOMweb looks it up if absent)
patient     no       PatientID (or ``PatientID``; reported only)
images      no       expected instance count; checked when present
size_MB     no       expected size (or ``series_size_MB``); for ``--dry-run`` and the progress bar
split       no       train | validate | test (``val`` → ``validate``); used by the stream build
kept_images no       images to keep after the plan's caps (the stream build keeps that many)
=========== ======== =================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypermodal.common.errors import PermanentFetchError
from hypermodal.split import split_name

log = logging.getLogger(__name__)

SOURCES = ("idc", "tcia", "dicomweb")
TCIA_DEFAULT_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v4"

#: Plan columns and the other names they may carry (``hypermodal plan`` writes IDC's names).
ALIASES = {
    "series": ("series", "SeriesInstanceUID"),
    "study": ("study", "StudyInstanceUID"),
    "patient": ("patient", "PatientID"),
    "size_MB": ("size_MB", "series_size_MB"),
    "url": ("url", "series_aws_url"),
}


@dataclass(frozen=True)
class PlanRow:
    """One planned series: where to fetch it, what to expect, its split and its cap."""

    series: str
    source: str
    url: str
    dataset: str = ""
    study: str | None = None
    patient: str | None = None
    images: int | None = None
    size_MB: float | None = None
    split: str | None = None  # lower-case, aliases resolved; None: the plan has no split
    kept_images: int | None = None  # None: no caps given, keep every image

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.series}"


def _clean(value: Any) -> Any:
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def safe_name(text: str, what: str, error: type[Exception] = PermanentFetchError) -> str:
    """``text`` as one folder name; ``error`` if it is empty, ``.``, ``..`` or has a separator."""
    name = str(text).strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise error(f"{what} {text!r} cannot be used as a folder name")
    return name


def _get(rec: Mapping[str, Any], name: str) -> Any:
    for key in ALIASES.get(name, (name,)):
        value = _clean(rec.get(key))
        if value not in (None, ""):
            return value
    return None


def _split(value: Any) -> str | None:
    if value is None:
        return None
    return split_name(str(value).strip())


def plan_rows(
    records: Iterable[Mapping[str, Any]], skipped: list[dict[str, Any]] | None = None
) -> list[PlanRow]:
    """Plan rows from mappings (e.g. ``df.to_dict("records")``); missing optional keys are fine.

    Rows whose source cannot be fetched (``external`` datasets of a plan, unknown sources) are
    left out, logged, and appended to ``skipped`` with their row number. A TCIA row without a URL
    uses TCIA's public NBIA v4 API. A series listed twice is taken once.
    """
    rows: list[PlanRow] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        source = str(_get(rec, "source") or "").strip().lower()
        series = _get(rec, "series")
        url = _get(rec, "url")
        if source not in SOURCES:
            log.warning("plan row %d (%s): source %r cannot be fetched", i, series, source)
            if skipped is not None:
                skipped.append({"row": i, "series": series, "source": source})
            continue
        if url is None and source == "tcia":
            url = TCIA_DEFAULT_URL
        missing = [c for c, v in (("series", series), ("url", url)) if v is None]
        if missing:
            raise ValueError(f"plan row {i} ({source}) lacks {missing}")
        images, size = _get(rec, "images"), _get(rec, "size_MB")
        study, patient = _get(rec, "study"), _get(rec, "patient")
        kept = _get(rec, "kept_images")
        row = PlanRow(
            series=safe_name(str(series), "series", ValueError),
            source=source,
            url=str(url).strip(),
            dataset=safe_name(str(_get(rec, "dataset") or source), "dataset", ValueError),
            study=str(study) if study else None,
            patient=str(patient) if patient else None,
            images=int(images) if images is not None else None,
            size_MB=float(size) if size is not None else None,
            split=_split(_get(rec, "split")),
            kept_images=int(kept) if kept is not None else None,
        )
        if row.key in seen:
            continue
        seen.add(row.key)
        rows.append(row)
    return rows


def split_capped(rows: list[PlanRow]) -> tuple[list[PlanRow], list[PlanRow]]:
    """``(to fetch, capped out)``: the rows whose ``kept_images`` is 0 (the plan's caps leave
    none of their images) are not fetched, by ``fetch`` as by ``build``."""
    return [r for r in rows if r.kept_images != 0], [r for r in rows if r.kept_images == 0]


def read_plan(plan: Path | str | Any, skipped: list[dict[str, Any]] | None = None) -> list[PlanRow]:
    """The fetchable series of a plan Parquet file (or a DataFrame of one), in plan order."""
    import pandas as pd

    if isinstance(plan, pd.DataFrame):
        return plan_rows(plan.to_dict("records"), skipped)
    path = Path(plan)
    if not path.exists():
        raise FileNotFoundError(f"plan {path} does not exist")
    return plan_rows(pd.read_parquet(path).to_dict("records"), skipped)
