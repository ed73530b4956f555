"""The store build's unit of work: a chunk of rows, decoded and preprocessed by one worker.

When a chunk's worker dies, :func:`one_file_chunks` and :func:`merge_files` let
:func:`~hypermodal.common.isolation.map_chunks` decode its files again one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.isolation import Crashed, failure_reason, heartbeat
from hypermodal.common.rejects import error_record
from hypermodal.evidence.features import image_stats
from hypermodal.io import ImageReadError, iter_images
from hypermodal.preprocess import PreprocessConfig, to_uint8

#: The files of a chunk: (path, image indices in the file, store rows), one entry per file.
ChunkFiles = list[tuple[str, list[int], list[int]]]


def chunk_bounds(paths: Sequence[Any], target: int) -> list[tuple[int, int]]:
    """Split rows into runs of about ``target`` images that never cut a file in two."""
    bounds: list[tuple[int, int]] = []
    n = len(paths)
    start = 0
    while start < n:
        end = min(start + target, n)
        while end < n and paths[end] == paths[end - 1]:
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def chunk_files(paths: Any, indices: np.ndarray, lo: int, hi: int) -> ChunkFiles:
    """Rows ``lo:hi`` grouped by file (consecutive rows of one file form one entry).

    Args:
        paths: the plan's ``path`` column array (sliced per chunk, not one str per row).
        indices: the plan's ``index`` column (image index within its file).
        lo, hi: the chunk's rows.
    """
    files: ChunkFiles = []
    chunk_paths = np.asarray(paths[lo:hi], dtype=object)
    for row, path in zip(range(lo, hi), chunk_paths, strict=True):
        if files and files[-1][0] == path:
            files[-1][1].append(int(indices[row]))
            files[-1][2].append(row)
        else:
            files.append((str(path), [int(indices[row])], [row]))
    return files


def build_chunk(args: tuple[str, int, int, int, ChunkFiles, dict]) -> dict:
    """Worker: decode and preprocess one chunk of rows.

    ``args`` is ``(images_path, n, size, chunk_id, files, preprocess dict)``. With an
    ``images_path`` the pixels go straight into that shared ``images.u8`` of ``n`` rows (workers
    on this machine; only the chunk's rows are mapped, so a worker's memory ceiling does not
    depend on the store's size). With an empty one they come back in the result as ``lo``
    (first row) and ``images`` (uint8, one per row of the chunk, zeros for failed rows), for the
    driver to write (workers on other machines). The result also holds ``chunk``, the ``ok``
    rows, their intensity ``stats`` (:func:`~hypermodal.evidence.image_stats` of the decoded
    image, in ``ok`` order) and the ``errors`` records. Whatever a file's decoding raises (a
    ``MemoryError``, a decoder's panic) costs that file's images only.
    """
    images_path, n, size, chunk_id, files, pre_dict = args
    pre = PreprocessConfig.from_dict(pre_dict)
    lo, hi = _row_span(files)
    arr = _rows_array(images_path, n, size, lo, hi)
    ok: list[int] = []
    stats: list[list[float]] = []
    errors: list[dict] = []
    for path, indices, rows in files:
        heartbeat()  # the time limit runs per file, renewed by each image it yields
        wanted = dict(zip(indices, rows, strict=True))
        done: set[int] = set()
        try:
            for idx, img in iter_images(Path(path), indices):
                heartbeat()
                row = wanted.get(idx)
                if row is None:
                    continue
                try:
                    arr[row - lo] = to_uint8(img, pre)
                    row_stats = image_stats(img)
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
                    reason = f"preprocess: {failure_reason(exc)}"
                    errors.append(error_record(path, "store", reason, index=idx))
                    done.add(idx)
                    continue
                ok.append(row)
                stats.append([float(v) for v in row_stats])
                done.add(idx)
        except ImageReadError as exc:
            reason = exc.reason
        except IndexError as exc:  # the file holds fewer images than the catalog says
            reason = f"image index out of range: {exc}"
        except BaseException as exc:  # noqa: BLE001 - a decoder's panic costs this file only
            reason = failure_reason(exc)
        else:
            reason = "image not found in file"
        for idx in indices:
            if idx not in done:
                errors.append(error_record(path, "store", reason, index=idx))
                arr[wanted[idx] - lo] = 0
    result = {"chunk": chunk_id, "ok": ok, "stats": stats, "errors": errors}
    return _finish(result, arr, images_path, lo)


def _row_span(files: ChunkFiles) -> tuple[int, int]:
    """The first row and one past the last row of ``files``."""
    rows = [r for _, _, file_rows in files for r in file_rows]
    return (min(rows), max(rows) + 1) if rows else (0, 0)


def _rows_array(images_path: str, n: int, size: int, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of the store: mapped from ``images.u8``, or zeros to send back."""
    if images_path and hi > lo:
        offset = lo * size * size
        return np.memmap(images_path, np.uint8, "r+", offset=offset, shape=(hi - lo, size, size))
    return np.zeros((hi - lo, size, size), dtype=np.uint8)


def _finish(result: dict[str, Any], arr: np.ndarray, images_path: str, lo: int) -> dict[str, Any]:
    """Flush the rows written into ``images.u8``, or put them into the result to send back."""
    if not images_path:
        result["lo"] = lo
        result["images"] = arr
    elif isinstance(arr, np.memmap):
        arr.flush()
    return result


def one_file_chunks(args: tuple[str, int, int, int, ChunkFiles, dict]) -> list[tuple]:
    """A chunk's work as one chunk per file, in order."""
    images_path, n, size, chunk_id, files, pre_dict = args
    return [(images_path, n, size, chunk_id, [f], pre_dict) for f in files]


def merge_files(args: tuple[str, int, int, int, ChunkFiles, dict], results: list[Any]) -> dict:
    """A chunk's result from its files' results: a file that crashed its worker is an error for
    each of its images, and its rows are zeros (what the dead worker wrote there is erased)."""
    images_path, n, size, chunk_id, files, _ = args
    lo, hi = _row_span(files)
    merged: dict[str, Any] = {"chunk": chunk_id, "ok": [], "stats": [], "errors": []}
    arr = _rows_array(images_path, n, size, lo, hi)
    for (path, indices, rows), result in zip(files, results, strict=True):
        if isinstance(result, Crashed):
            merged["errors"].extend(
                error_record(path, "store", result.reason, index=i) for i in indices
            )
            for row in rows:
                arr[row - lo] = 0
            continue
        for key in ("ok", "stats", "errors"):
            merged[key].extend(result[key])
        if "images" in result:
            start = int(result["lo"]) - lo
            arr[start : start + len(result["images"])] = result["images"]
    return _finish(merged, arr, images_path, lo)


class LazyItems(Sequence[Any]):
    """A sequence whose items are made when asked for: a local pool holds only the chunks in
    flight, not a file list for every chunk of the store."""

    def __init__(self, n: int, make: Callable[[int], Any]) -> None:
        self._n = n
        self._make = make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> Any:  # type: ignore[override]
        if not -self._n <= k < self._n:
            raise IndexError(k)
        return self._make(k % self._n)
