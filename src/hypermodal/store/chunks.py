"""The store build's unit of work: a chunk of rows, decoded and preprocessed by one worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    ``images_path`` the pixels go straight into that shared memmap of ``n`` rows (workers on
    this machine). With an empty one they come back in the result as ``lo`` (first row) and
    ``images`` (uint8, one per row of the chunk, zeros for failed rows), for the driver to write
    (workers on other machines). The result also holds ``chunk``, the ``ok`` rows, their intensity
    ``stats`` (:func:`~hypermodal.evidence.image_stats` of the decoded image, in ``ok`` order)
    and the ``errors`` records.
    """
    images_path, n, size, chunk_id, files, pre_dict = args
    pre = PreprocessConfig.from_dict(pre_dict)
    all_rows = [r for _, _, rows in files for r in rows]
    lo = min(all_rows) if all_rows else 0
    hi = max(all_rows) + 1 if all_rows else 0
    if images_path:
        arr = np.memmap(images_path, dtype=np.uint8, mode="r+", shape=(n, size, size))
        offset = 0
    else:
        arr = np.zeros((hi - lo, size, size), dtype=np.uint8)
        offset = lo
    ok: list[int] = []
    stats: list[list[float]] = []
    errors: list[dict] = []
    for path, indices, rows in files:
        wanted = dict(zip(indices, rows, strict=True))
        done: set[int] = set()
        try:
            for idx, img in iter_images(Path(path), indices):
                row = wanted.get(idx)
                if row is None:
                    continue
                try:
                    arr[row - offset] = to_uint8(img, pre)
                    row_stats = image_stats(img)
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
                    errors.append(error_record(path, "store", f"preprocess: {exc}", index=idx))
                    done.add(idx)
                    continue
                ok.append(row)
                stats.append([float(v) for v in row_stats])
                done.add(idx)
        except ImageReadError as exc:
            reason = exc.reason
        except IndexError as exc:  # the file holds fewer images than the catalog says
            reason = f"image index out of range: {exc}"
        else:
            reason = "image not found in file"
        for idx in indices:
            if idx not in done:
                errors.append(error_record(path, "store", reason, index=idx))
                arr[wanted[idx] - offset] = 0
    result: dict[str, Any] = {"chunk": chunk_id, "ok": ok, "stats": stats, "errors": errors}
    if images_path:
        assert isinstance(arr, np.memmap)
        arr.flush()
        del arr
    else:
        result["lo"] = lo
        result["images"] = arr
    return result


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
