"""Series from headers, and the images of each series that ``predict`` decodes.

Headers are cheap (a few thousand files a second per core) and decoding is not, so ``predict``
reads every file's header first, groups the files into series (DICOM SeriesInstanceUID; a
NIfTI/NRRD/MetaImage volume, a multi-frame DICOM without a series UID or a picture is a series
of its own), orders each series in space (ImagePositionPatient along the slice normal, else
InstanceNumber, else the file name; the frames of a file in their order) and picks the images
to decode: ``n`` spread evenly through the series, the middle one always among them
(:func:`spread_indices`), or all of them. Files of a series that no pick falls on are *sampled
out*: they count in the series' number of images but are never opened again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypermodal.common.errors import HypermodalError
from hypermodal.common.isolation import failure_reason
from hypermodal.io import ImageReadError, read_header

#: header values a series row carries, as (column, where the header keeps it)
SERIES_TEXT = (
    ("PatientID", "patient"),
    ("StudyDate", "study_date"),
    ("StudyDescription", "study_description"),
    ("SeriesDescription", "series_description"),
    ("SeriesInstanceUID", "series"),
    ("StudyInstanceUID", "study"),
    ("Modality", "modality"),
)


class EmptyInputError(HypermodalError, FileNotFoundError):
    """The inputs named hold no file at all (an empty folder): there is nothing to classify."""


@dataclass(slots=True)
class FileInfo:
    """What the header pass learns of one file: enough to group, order and describe it."""

    path: str
    images: int
    series: str
    order: tuple[float, float, str]
    text: dict[str, str | None]


def header_info(path: str) -> dict[str, Any]:
    """Worker: the header of one file as a small plain record, or ``{"path", "error"}``.

    Only headers are read (no pixel data), so a whole archive is grouped into series cheaply.
    """
    try:
        h = read_header(Path(path))
    except ImageReadError as exc:
        return {"path": path, "error": exc.reason}
    except BaseException as exc:  # noqa: BLE001 - a strange file or a parser's panic
        return {"path": path, "error": failure_reason(exc)}
    extra = h.extra or {}
    values = {
        "patient": h.patient,
        "study": h.study,
        "series": h.series,
        "modality": h.modality,
        "study_date": extra.get("study_date"),
        "study_description": extra.get("study_description"),
        "series_description": extra.get("series_description"),
    }
    return {
        "path": path,
        "images": int(h.num_images),
        "series": h.series,
        "position": extra.get("slice_position"),
        "instance": extra.get("instance_number"),
        "text": {column: values[key] for column, key in SERIES_TEXT},
    }


class SharedValues:
    """One copy of what the files of a series repeat (their header text, their series key),
    so that the header pass over a million files holds each value once, not once per file."""

    def __init__(self) -> None:
        self._texts: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}

    def text(self, text: dict[str, Any]) -> dict[str, Any]:
        """The shared dict equal to ``text`` (never mutated: files and series only read it)."""
        return self._texts.setdefault(tuple(text.items()), text)

    @staticmethod
    def key(value: str) -> str:
        return sys.intern(value)


def file_info(record: dict[str, Any], shared: SharedValues | None = None) -> FileInfo:
    """A :func:`header_info` record (without an error) as a :class:`FileInfo` (its repeated
    values taken from ``shared`` when given)."""
    nan = float("nan")
    position = record.get("position")
    instance = record.get("instance")
    order = (
        float(position) if position is not None else nan,
        float(instance) if instance is not None else nan,
        Path(record["path"]).name,
    )
    series = record.get("series") or record["path"]
    text = record.get("text") or {}
    if shared is not None:
        series, text = shared.key(series), shared.text(text)
    return FileInfo(
        path=record["path"],
        images=int(record["images"]),
        series=series,
        order=order,
        text=text,
    )


@dataclass
class Series:
    """One series or volume: its files in spatial order, and how many images they hold."""

    key: str
    files: list[FileInfo] = field(default_factory=list)
    #: the header values of :data:`SERIES_TEXT`, from the series' first file met
    text: dict[str, str | None] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        """Images in the series by its headers (every file counts, decoded or not)."""
        return sum(f.images for f in self.files)

    def ordered(self) -> None:
        """Sort the files by slice position, else InstanceNumber, else name.

        Positions are used only when every file has one (a series with a few positionless
        files is ordered by InstanceNumber instead), likewise instance numbers.
        """

        def usable(i: int) -> bool:
            return all(f.order[i] == f.order[i] for f in self.files)  # no NaN

        if usable(0):
            self.files.sort(key=lambda f: (f.order[0], f.order[1] if usable(1) else 0, f.order[2]))
        elif usable(1):
            self.files.sort(key=lambda f: (f.order[1], f.order[2]))
        else:
            self.files.sort(key=lambda f: f.order[2])


_NO_TEXT: dict[str, str | None] = {}  # read only


def group_series(infos: Iterable[FileInfo]) -> list[Series]:
    """Files grouped into series, in the order each series is first met, each in space order."""
    groups: dict[str, Series] = {}
    for info in infos:
        series = groups.get(info.series)
        if series is None:
            series = groups[info.series] = Series(info.series, text=info.text)
        series.files.append(info)
        info.text = _NO_TEXT  # kept once per series, not once per file
    for series in groups.values():
        series.ordered()
    return list(groups.values())


def spread_indices(total: int, n: int | None) -> list[int]:
    """``n`` image numbers spread evenly over ``0 .. total-1``, the middle one always among them.

    Args:
        total: Images in the series.
        n: How many to pick; None (or at least ``total``): all of them.

    Returns:
        Sorted distinct numbers: the first and the last (when ``n ≥ 2``), evenly spaced ones
        between, and ``(total - 1) // 2``.

    Examples:
        >>> spread_indices(200, 3)
        [0, 99, 199]
        >>> spread_indices(10, 4)
        [0, 4, 6, 9]
    """
    if total <= 0:
        return []
    if n is None or n >= total:
        return list(range(total))
    middle = (total - 1) // 2
    if n <= 1:
        return [middle]
    picks = sorted({round(i * (total - 1) / (n - 1)) for i in range(n)})
    if middle not in picks:
        nearest = min(range(len(picks)), key=lambda i: (abs(picks[i] - middle), i))
        picks[nearest] = middle
    return sorted(picks)


def plan_series(series: Series, n: int | None, exclude: Sequence[str] = ()) -> dict[str, list[int]]:
    """The images of ``series`` to decode: file path -> image numbers within that file.

    Args:
        series: The series, its files in order.
        n: Images to pick through the series (None: every image).
        exclude: Files already tried (a second round picks among the others only).

    Returns:
        The picked files, in series order, each with its sorted image numbers.
    """
    skip = set(exclude)
    files = [f for f in series.files if f.path not in skip]
    flat: list[tuple[int, int]] = []  # (file number, image number in that file)
    for k, f in enumerate(files):
        flat.extend((k, i) for i in range(f.images))
    plan: dict[str, list[int]] = {}
    for pick in spread_indices(len(flat), n):
        k, i = flat[pick]
        plan.setdefault(files[k].path, []).append(i)
    return plan
