"""A few instances of each series, spread through it, from a DICOMweb server to a folder.

For :func:`hypermodal.inference.pacs.classify_dicomweb`: QIDO-RS lists a series' instances
with their InstanceNumber (:func:`list_instances`), :func:`spread` picks a few of them evenly
through the series (the middle one always among them), and :func:`retrieve_sample` fetches
just those through WADO-RS into ``folder`` as Part 10 files (an instance stored without a file
meta header is accepted and written with one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypermodal.sources.fetch.base import RetryPolicy, with_retries
from hypermodal.sources.fetch.dicomweb import qido_call
from hypermodal.sources.fetch.instance import write_instance
from hypermodal.sources.fetch.query import SeriesInfo, tag_value
from hypermodal.sources.fetch.reach import describe_source
from hypermodal.sources.fetch.wado import WadoClient

__all__ = ["Retrieved", "list_instances", "retrieve_sample", "spread"]

PAGE = 1000


@dataclass
class Retrieved:
    """What was retrieved of one series."""

    info: SeriesInfo
    folder: Path
    instances: int = 0  # instances QIDO-RS lists in the series
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    error: str | None = None


def spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` positions of ``range(n)`` spread evenly through it, the middle one
    (``n // 2``) always among them, in order.

    Example:
        >>> spread(100, 3), spread(10, 2), spread(2, 5)
        ([16, 50, 83], [2, 5], [0, 1])
    """
    if k >= n:
        return list(range(n))
    picked = {(2 * i + 1) * n // (2 * k) for i in range(k)}
    if n // 2 not in picked:  # an even k straddles the middle: move the nearest pick onto it
        picked.remove(min(picked, key=lambda p: (abs(p - n // 2), p)))
        picked.add(n // 2)
    return sorted(picked)


def _number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def list_instances(client: Any, url: str, info: SeriesInfo) -> list[str]:
    """The SOPInstanceUIDs of a series, ordered by InstanceNumber (instances without one come
    last, by UID)."""
    found: list[tuple[bool, int, str]] = []
    offset = 0
    while True:
        items = qido_call(
            client,
            url,
            lambda offset=offset: client.search_for_instances(
                study_instance_uid=info.study,
                series_instance_uid=info.series,
                fields=["InstanceNumber"],
                offset=offset,
                limit=PAGE,
            ),
        )
        for item in items:
            sop = tag_value(item, "00080018")
            if sop:
                number = _number(tag_value(item, "00200013"))
                found.append((number is None, number or 0, str(sop)))
        if len(items) < PAGE:
            break
        offset += len(items)
    return [sop for _, _, sop in sorted(found)]


def retrieve_sample(
    clients: Callable[[], Any],
    wado: WadoClient,
    url: str,
    info: SeriesInfo,
    folder: Path,
    per_series: int,
    retry: RetryPolicy,
) -> Retrieved:
    """Retrieve ``per_series`` instances of the series ``info``, spread through it, into
    ``folder``; a failure of this series is its ``error`` (a server that cannot be reached
    raises :class:`~hypermodal.sources.fetch.reach.SourceUnreachableError`). ``clients()``
    gives this thread's QIDO-RS client."""
    from hypermodal.common.errors import FetchError, PermanentFetchError
    from hypermodal.sources.fetch.reach import SourceUnreachableError

    done = Retrieved(info=info, folder=folder)
    where = describe_source(url)
    client = clients()
    try:
        sops = with_retries(lambda: list_instances(client, url, info), retry, info.series, where)
        done.instances = len(sops)
        if not sops:
            raise FetchError("QIDO-RS lists no instances in the series")
        for j, pos in enumerate(spread(len(sops), per_series)):
            dest = folder / f"i{j:04d}.dcm"

            def get(sop: str = sops[pos], dest: Path = dest) -> int:
                parts = list(wado.retrieve(info.study, info.series, sop))
                if len(parts) != 1:
                    raise FetchError(f"WADO-RS sent {len(parts)} parts for instance {sop}")
                write_instance(parts[0], dest, f"instance {sop}")
                return dest.stat().st_size

            done.bytes += with_retries(get, retry, info.series, where)
            done.files.append(dest)
    except SourceUnreachableError:
        raise
    except (FetchError, PermanentFetchError, OSError) as exc:
        done.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - an HTTP error after the retries: this series only
        done.error = f"{type(exc).__name__}: {exc}"
    return done
