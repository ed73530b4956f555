"""The checks a downloaded series must pass before it is published."""

from __future__ import annotations

from pathlib import Path

from hypermodal.sources.fetch.base import Download, FetchError, md5_file
from hypermodal.sources.fetch.instance import read_instance_file
from hypermodal.sources.fetch.plan_rows import PlanRow, safe_name


def verify_series(row: PlanRow, download: Download) -> list[tuple[Path, str]]:
    """Check a staged series; return ``[(file, SOPInstanceUID)]`` or raise :class:`FetchError`.

    Checked: the MD5s the server gave, that every file parses as DICOM (a bare data set
    without a file meta header included: :func:`~.instance.read_instance_file`) and belongs to
    the planned series, that no SOPInstanceUID repeats, and that the count matches the plan's
    ``images`` and the server's own count where either is known.
    """
    problems: list[str] = []
    for path, expected in download.md5.items():
        got = md5_file(path)
        if got.lower() != expected.lower():
            problems.append(f"MD5 mismatch for {path.name}: {got} != {expected}")
    if problems:
        raise FetchError("; ".join(problems[:3]))
    seen: dict[str, Path] = {}
    out: list[tuple[Path, str]] = []
    for path in download.files:
        ds = read_instance_file(path)  # a data set without a file meta header is accepted
        sop = str(ds.get("SOPInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        if not sop:
            raise FetchError(f"{path.name} has no SOPInstanceUID")
        if series != row.series:
            raise FetchError(f"{path.name} belongs to series {series}, not {row.series}")
        if sop in seen:
            raise FetchError(f"SOPInstanceUID {sop} appears twice ({seen[sop].name}, {path.name})")
        safe_name(sop, "SOPInstanceUID")
        seen[sop] = path
        out.append((path, sop))
    n = len(out)
    if not n:
        raise FetchError("no instances downloaded")
    if row.images is not None and n != row.images:
        raise FetchError(f"{n} instances on disk, plan expects {row.images}")
    if download.server_count is not None and n != download.server_count:
        raise FetchError(f"{n} instances on disk, server lists {download.server_count}")
    return out
