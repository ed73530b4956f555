"""Which series of a DICOMweb server to take: QIDO-RS filters, a limit, and a sample.

One :class:`SeriesQuery` serves ``fetch --dicomweb`` (download the series) and
:func:`hypermodal.inference.pacs.classify_dicomweb` (classify them in place)::

    query = SeriesQuery.from_options(modality="CT,MR", study_date="20200101-20201231", limit=50)
    series = search_series(client, query)   # one SeriesInfo per matching series

Filters go to the server as QIDO-RS matching keys on ``/series`` (so a PACS of a million
series returns only the matches): ``Modality`` (one query per modality), ``StudyDate`` (a
``YYYYMMDD-YYYYMMDD`` range; either end may be left open), ``PatientID`` and
``StudyInstanceUID`` (several, comma-separated: one query each). ``limit`` keeps at most that
many series: the first ones in the server's order (``sample="first"``, paging stops early) or a
seeded random sample of all matches (``sample="random"``).
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PAGE",
    "SAMPLES",
    "SERIES_FIELDS",
    "SeriesInfo",
    "SeriesQuery",
    "search_series",
    "tag_value",
]

#: series asked for per QIDO-RS request
PAGE = 500
SAMPLES = ("first", "random")
#: QIDO-RS ``includefield`` values of a series search
SERIES_FIELDS = (
    "StudyInstanceUID",
    "PatientID",
    "Modality",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^[0-9]{8}$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")


def tag_value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` (8 hex digits) in a DICOM JSON object, or None; a person name
    comes back as its text."""
    vals = item.get(tag, {}).get("Value") or [None]
    value = vals[0]
    if isinstance(value, dict):  # PN: {"Alphabetic": "..."}
        return value.get("Alphabetic")
    return value


@dataclass(frozen=True)
class SeriesInfo:
    """One series as QIDO-RS describes it."""

    study: str
    series: str
    patient: str | None = None
    modality: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    instances: int | None = None  # NumberOfSeriesRelatedInstances, when the server gives it

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> SeriesInfo:
        """A series from one DICOM JSON object of a QIDO-RS answer.

        Raises:
            ValueError: the object has no SeriesInstanceUID or StudyInstanceUID.
        """
        series, study = tag_value(item, "0020000E"), tag_value(item, "0020000D")
        if not series or not study:
            raise ValueError("a QIDO-RS series lacks its SeriesInstanceUID or StudyInstanceUID")
        n, number = tag_value(item, "00201209"), tag_value(item, "00200011")

        def text(tag: str) -> str | None:
            v = tag_value(item, tag)
            return str(v) if v not in (None, "") else None

        return cls(
            study=str(study),
            series=str(series),
            patient=text("00100020"),
            modality=text("00080060"),
            study_date=text("00080020"),
            study_description=text("00081030"),
            series_description=text("0008103E"),
            series_number=int(number) if number is not None else None,
            instances=int(n) if n is not None else None,
        )


def _words(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(w.strip() for w in items if w and w.strip()))


def _date(text: str, what: str) -> str:
    if not _DATE.match(text):
        raise ValueError(f"{what}: {text!r} is not a date YYYYMMDD")
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a calendar date") from None
    return text


def parse_date_range(text: str | None) -> tuple[str | None, str | None] | None:
    """``YYYYMMDD-YYYYMMDD`` (``YYYYMMDD-`` and ``-YYYYMMDD`` leave an end open; one date is a
    single day) as ``(first, last)``; None for no range.

    Raises:
        ValueError: not a range of real dates, or the first date after the last.
    """
    if text is None or not text.strip():
        return None
    t = text.strip()
    what = "--study-date"
    if "-" not in t:
        day = _date(t, what)
        return day, day
    first, sep, last = t.partition("-")
    if not sep or "-" in last or (not first and not last):
        raise ValueError(f"{what}: expected YYYYMMDD-YYYYMMDD, got {text!r}")
    lo = _date(first, what) if first else None
    hi = _date(last, what) if last else None
    if lo and hi and lo > hi:
        raise ValueError(f"{what}: {lo} is after {hi}")
    return lo, hi


@dataclass(frozen=True)
class SeriesQuery:
    """QIDO-RS filters and a limit on the series taken from a DICOMweb server.

    Attributes:
        modalities: DICOM Modality values (``CT``, ``MR``, ...); empty: any.
        study_dates: ``(first, last)`` StudyDate, either end None for open; None: any date.
        patients: PatientID values; empty: any.
        studies: StudyInstanceUID values; empty: any.
        limit: at most this many series; None: all.
        sample: with a limit, ``first`` (the server's order) or ``random`` (seeded, of all
            matches).
        seed: the seed of a random sample.
    """

    modalities: tuple[str, ...] = ()
    study_dates: tuple[str | None, str | None] | None = None
    patients: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()
    limit: int | None = None
    sample: str = "first"
    seed: int = 0
    page: int = field(default=PAGE, compare=False)

    def __post_init__(self) -> None:
        if self.sample not in SAMPLES:
            raise ValueError(f"--sample must be one of {', '.join(SAMPLES)}, got {self.sample!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if self.page < 1:
            raise ValueError(f"page must be at least 1, got {self.page}")
        for m in self.modalities:
            if not _MODALITY.match(m):
                raise ValueError(f"--modality: {m!r} is not a DICOM modality (CT, MR, PT, CR...)")
        for uid in self.studies:
            if not _UID.match(uid) or len(uid) > 64:
                raise ValueError(f"--study: {uid!r} is not a StudyInstanceUID")
        for pid in self.patients:
            if any(c in pid for c in "*?\\") or len(pid) > 64:
                raise ValueError(f"--patient: {pid!r} is not a PatientID (no wildcards)")

    @classmethod
    def from_options(
        cls,
        modality: str | None = None,
        study_date: str | None = None,
        patient: str | None = None,
        study: str | None = None,
        limit: int | None = None,
        sample: str = "first",
        seed: int = 0,
    ) -> SeriesQuery:
        """A query from command-line text: comma-separated lists, a date range.

        Raises:
            ValueError: one line naming the option that is wrong.
        """
        return cls(
            modalities=tuple(m.upper() for m in _words(modality)),
            study_dates=parse_date_range(study_date),
            patients=_words(patient),
            studies=_words(study),
            limit=limit,
            sample=(sample or "first").strip().lower(),
            seed=seed,
        )

    def filter_sets(self) -> Iterator[dict[str, str]]:
        """The QIDO-RS matching keys of each request (one per modality × patient × study)."""
        base: dict[str, str] = {}
        if self.study_dates is not None:
            lo, hi = self.study_dates
            base["StudyDate"] = lo if lo == hi and lo else f"{lo or ''}-{hi or ''}"
        for m in self.modalities or (None,):
            for p in self.patients or (None,):
                for s in self.studies or (None,):
                    keys = dict(base)
                    if m:
                        keys["Modality"] = m
                    if p:
                        keys["PatientID"] = p
                    if s:
                        keys["StudyInstanceUID"] = s
                    yield keys

    def matches(self, info: SeriesInfo) -> bool:
        """Whether a series the server returned meets the query (servers differ in how
        strictly they match; this is the check that holds everywhere)."""
        if self.modalities and (info.modality or "").upper() not in self.modalities:
            return False
        if self.patients and info.patient not in self.patients:
            return False
        if self.studies and info.study not in self.studies:
            return False
        if self.study_dates is not None:
            lo, hi = self.study_dates
            d = (info.study_date or "")[:8]
            if not d or (lo and d < lo) or (hi and d > hi):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        """The query as plain values (for summaries)."""
        return {
            "modality": list(self.modalities) or None,
            "study_date": "-".join(x or "" for x in self.study_dates) if self.study_dates else None,
            "patient": list(self.patients) or None,
            "study": list(self.studies) or None,
            "limit": self.limit,
            "sample": self.sample,
            "seed": self.seed if self.sample == "random" else None,
        }


def _search(client: Any, keys: dict[str, str], page: int, offset: int) -> list[dict[str, Any]]:
    items = client.search_for_series(
        search_filters=keys or None, offset=offset, limit=page, fields=list(SERIES_FIELDS)
    )
    if not isinstance(items, list) or any(not isinstance(i, dict) for i in items):
        raise TypeError("not a QIDO-RS answer (a list of DICOM JSON objects)")
    return items


def search_series(client: Any, query: SeriesQuery | None = None) -> list[SeriesInfo]:
    """Every series of the server behind ``client`` (a ``DICOMwebClient``) that ``query``
    matches, in the server's order (or its random sample), each once.

    Raises:
        TypeError: the server's answer is not QIDO-RS JSON (the caller says what that means).
    """
    query = query or SeriesQuery()
    stop_at = query.limit if query.sample == "first" else None
    found: dict[str, SeriesInfo] = {}
    for keys in query.filter_sets():
        offset = 0
        while stop_at is None or len(found) < stop_at:
            items = _search(client, keys, query.page, offset)
            for item in items:
                info = SeriesInfo.from_json(item)
                if query.matches(info):
                    found.setdefault(info.series, info)
            if len(items) < query.page:
                break
            offset += len(items)
    series = list(found.values())
    if query.limit is not None and len(series) > query.limit:
        if query.sample == "random":
            picked = sorted(random.Random(query.seed).sample(range(len(series)), query.limit))
            series = [series[i] for i in picked]
        else:
            series = series[: query.limit]
    return series
