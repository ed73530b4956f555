"""The work ``predict`` hands to its engine: a header pass over every file, then the decoding of
the images each series' sample picked.

Both run on an engine (a local process pool or a Ray cluster,
:mod:`hypermodal.common.engines`), in input order, so the results are the same whichever engine
ran them. A file whose worker died or went past its limits is an error with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.engines import Engine
from hypermodal.common.isolation import Crashed, failure_reason, heartbeat
from hypermodal.common.progress import progress_bar
from hypermodal.evidence.features import header_geometry, image_stats
from hypermodal.inference.sampling import (
    FileInfo,
    Series,
    SharedValues,
    file_info,
    header_info,
    plan_series,
)
from hypermodal.io import ImageReadError, iter_images, read_header
from hypermodal.preprocess import PreprocessConfig, to_uint8


def decode_file(args: tuple[str, list[int] | None, dict]) -> dict[str, Any]:
    """Worker: header + the asked-for 2D images of one file (None: all), preprocessed to uint8,
    with the intensity statistics of each decoded image and the file's header geometry (the
    feature model's evidence, computed from the same decode)."""
    path, wanted, pre_dict = args
    pre = PreprocessConfig.from_dict(pre_dict)
    try:
        h = read_header(Path(path))
        indices: list[int] = []
        images: list[np.ndarray] = []
        stats: list[np.ndarray] = []
        for idx, img in iter_images(Path(path), wanted):
            heartbeat()  # a file of many images is not cut short while it makes progress
            indices.append(idx)
            images.append(to_uint8(img, pre))
            stats.append(image_stats(img))
    except ImageReadError as exc:
        return {"path": path, "error": exc.reason}
    except BaseException as exc:  # noqa: BLE001 - a strange image or a decoder's panic
        return {"path": path, "error": failure_reason(exc)}
    if not images:
        return {"path": path, "error": "file holds no images"}
    return {
        "path": path,
        "indices": indices,
        "images": np.stack(images),
        "stats": np.stack(stats),
        "series": h.series or path,
        "modality": h.modality,
        "sop_class": h.extra.get("sop_class"),
        "localizer": h.localizer,
        "rows": h.rows,
        "columns": h.columns,
        **header_geometry(h.format, h.num_images, h.extra),
    }


def _mapped(fn: Any, args: list[Any], engine: Engine) -> Iterator[tuple[Any, Any]]:
    yield from zip(args, engine.map(fn, args), strict=True)


#: files per header task: one round trip to a worker per chunk, not per file (a header costs
#: ~0.3 ms, the round trip about as much)
HEADER_CHUNK = 32


def header_chunk(paths: list[str]) -> list[dict[str, Any]]:
    """Worker: :func:`~hypermodal.inference.sampling.header_info` of each of ``paths``."""
    out = []
    for path in paths:
        heartbeat()
        out.append(header_info(path))
    return out


def read_headers(
    files: Sequence[Path | str], engine: Engine, progress: bool
) -> tuple[list[FileInfo], list[tuple[str, str]]]:
    """Every file's header (no pixel data): the readable ones, and ``(path, reason)`` for the
    others, both in input order.

    Headers are read :data:`HEADER_CHUNK` files to a task; a chunk whose worker died or went
    past its limits is read again file by file, so that the file to blame is the only one lost.
    """
    paths = [str(f) for f in files]
    chunks = [paths[i : i + HEADER_CHUNK] for i in range(0, len(paths), HEADER_CHUNK)]
    done: list[list[FileInfo | str]] = []  # per chunk: a FileInfo or the reason, per file
    shared = SharedValues()
    again: list[int] = []
    bar = progress_bar(len(files), progress, desc="headers", unit="file")
    for chunk, result in _mapped(header_chunk, chunks, engine):
        if isinstance(result, Crashed):
            again.append(len(done))
            done.append([])
        else:
            done.append([_info_or_reason(item, shared) for item in result])
            bar.update(len(chunk))
    for k in again:  # each file of a crashed chunk alone: a crash costs its own file only
        done[k] = [_info_or_reason(x, shared) for x in engine.map(header_info, chunks[k])]
        bar.update(len(chunks[k]))
    bar.close()
    infos: list[FileInfo] = []
    failed: list[tuple[str, str]] = []
    for chunk, results in zip(chunks, done, strict=True):
        for path, item in zip(chunk, results, strict=True):
            if isinstance(item, str):
                failed.append((path, item))
            else:
                infos.append(item)
    return infos, failed


def _info_or_reason(item: Any, shared: SharedValues) -> FileInfo | str:
    if isinstance(item, Crashed):
        return item.reason
    return item["error"] if "error" in item else file_info(item, shared)


@dataclass
class Sampler:
    """Rounds of decoding over the series: first the sample of each series; then, for a series
    none of whose sampled files could be read, a sample of its files not yet tried, until each
    series has a decoded image or no untried file.

    Attributes:
        series: Every series, its files in order.
        slices: Images per series (None: all).
        order: Each file's place in the input (the files of a round are decoded in this order).
    """

    series: list[Series]
    slices: int | None
    order: dict[str, int]
    tried: dict[str, set[str]] = field(default_factory=dict)
    decoded: dict[str, int] = field(default_factory=dict)

    def next_round(self) -> list[tuple[str, list[int] | None]]:
        """The files to decode next with their image numbers (None: all), in input order."""
        plan: list[tuple[str, list[int] | None]] = []
        for s in self.series:
            tried = self.tried.setdefault(s.key, set())
            if self.decoded.get(s.key) or len(tried) == len(s.files):
                continue
            picks = plan_series(s, self.slices, exclude=tuple(tried))
            for f in s.files:
                if f.path in picks:
                    everything = self.slices is None or len(picks[f.path]) == f.images
                    plan.append((f.path, None if everything else picks[f.path]))
                    tried.add(f.path)
        plan.sort(key=lambda item: self.order[item[0]])
        return plan

    def done(self, key: str) -> None:
        """One more file of series ``key`` decoded."""
        self.decoded[key] = self.decoded.get(key, 0) + 1

    def files_tried(self) -> int:
        return sum(len(t) for t in self.tried.values())


def decode_rounds(
    sampler: Sampler, pre: PreprocessConfig, engine: Engine, progress: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(series key, decoded file or {"path", "error"})`` for every file the sampler picks."""
    key_of = {f.path: s.key for s in sampler.series for f in s.files}
    bar = progress_bar(0, progress, desc="predict", unit="file")
    while plan := sampler.next_round():
        bar.total = (bar.total or 0) + len(plan)
        bar.refresh()
        args = [(path, wanted, pre.to_dict()) for path, wanted in plan]
        for (path, _, _), item in _mapped(decode_file, args, engine):
            bar.update(1)
            if isinstance(item, Crashed):
                item = {"path": path, "error": item.reason}
            elif "error" not in item:
                sampler.done(key_of[path])
                item["series"] = key_of[path]  # the series it was grouped in by the header pass
            yield key_of[path], item
    bar.close()
