"""Fetch planned series from IDC, TCIA or DICOMweb: journalled, verified, retried.

Modules, from the bottom up: :mod:`~.plan_rows` reads ``plan.parquet``; :mod:`~.base` holds the
options, retrying, streamed writes and the :class:`Source` protocol; :mod:`~.archive` extracts
zips safely; :mod:`~.journal` keeps the SQLite journal; :mod:`~.verify` checks a downloaded
series; the sources :mod:`~.idc`, :mod:`~.tcia`, :mod:`~.dicomweb` build on ``base`` only; and
:mod:`~.run` drives them (:func:`fetch_plan`, :func:`dry_run`).
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
from hypermodal.sources.fetch.plan_rows import TCIA_DEFAULT_URL, PlanRow, plan_rows, read_plan
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
    "Source",
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
    "verify_series",
]
