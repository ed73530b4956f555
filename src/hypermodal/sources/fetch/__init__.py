"""Fetch planned series from IDC, TCIA or DICOMweb: journalled, verified, retried.

Modules, from the bottom up: :mod:`~.plan_rows` reads ``plan.parquet``; :mod:`~.reach` tells
an unreachable server from a failure worth retrying; :mod:`~.base` holds the options,
retrying, streamed writes and the :class:`Source` protocol; :mod:`~.archive` extracts zips
safely; :mod:`~.instance` reads and writes DICOM instances (with or without a file meta
header); :mod:`~.journal` keeps the SQLite journal; :mod:`~.verify` checks a downloaded series;
:mod:`~.query` (QIDO-RS filters: :class:`SeriesQuery`) and :mod:`~.wado` (WADO-RS as raw
bytes) serve DICOMweb; the sources :mod:`~.idc`, :mod:`~.tcia`, :mod:`~.dicomweb` build on
those only; and :mod:`~.run` drives them (:func:`fetch_plan`, :func:`dry_run`).
"""

from __future__ import annotations

from hypermodal.sources.fetch.archive import safe_extract_zip
from hypermodal.sources.fetch.base import (
    Download,
    FetchError,
    FetchOptions,
    PermanentFetchError,
    RetryPolicy,
    Source,
    UnsafeArchiveError,
    ZipLimits,
)
from hypermodal.sources.fetch.journal import FAILED, STATE_DIR, VERIFIED, Journal, lock_target
from hypermodal.sources.fetch.plan_rows import (
    TCIA_DEFAULT_URL,
    PlanRow,
    plan_rows,
    read_plan,
    split_capped,
)
from hypermodal.sources.fetch.query import SeriesInfo, SeriesQuery
from hypermodal.sources.fetch.reach import SourceUnreachableError
from hypermodal.sources.fetch.run import (
    FetchSummary,
    dry_run,
    fetch_plan,
    iter_verified,
    make_source,
)
from hypermodal.sources.fetch.verify import verify_series

__all__ = [
    "Download",
    "FAILED",
    "FetchError",
    "FetchOptions",
    "FetchSummary",
    "Journal",
    "PermanentFetchError",
    "PlanRow",
    "RetryPolicy",
    "STATE_DIR",
    "SeriesInfo",
    "SeriesQuery",
    "Source",
    "SourceUnreachableError",
    "TCIA_DEFAULT_URL",
    "UnsafeArchiveError",
    "VERIFIED",
    "ZipLimits",
    "dry_run",
    "fetch_plan",
    "iter_verified",
    "lock_target",
    "make_source",
    "plan_rows",
    "read_plan",
    "safe_extract_zip",
    "split_capped",
    "verify_series",
]
