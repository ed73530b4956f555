"""Fetch planned series from IDC, TCIA or DICOMweb: journalled, verified, retried."""

from __future__ import annotations

from hypermodal.sources.fetch.plan_rows import TCIA_DEFAULT_URL, PlanRow, plan_rows, read_plan
from hypermodal.sources.fetch.run import (
    FAILED,
    VERIFIED,
    Download,
    FetchError,
    FetchOptions,
    Journal,
    PermanentFetchError,
    RetryPolicy,
    UnsafeArchiveError,
    ZipLimits,
    dry_run,
    fetch_plan,
    iter_verified,
    safe_extract_zip,
    verify_series,
)

__all__ = [
    "Download",
    "FAILED",
    "FetchError",
    "FetchOptions",
    "Journal",
    "PermanentFetchError",
    "PlanRow",
    "RetryPolicy",
    "TCIA_DEFAULT_URL",
    "UnsafeArchiveError",
    "VERIFIED",
    "ZipLimits",
    "dry_run",
    "fetch_plan",
    "iter_verified",
    "plan_rows",
    "read_plan",
    "safe_extract_zip",
    "verify_series",
]
