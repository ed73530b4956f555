"""Model calls on a thread of their own, so that decoding goes on while the model runs.

``predict`` pulls decoded files from its engine in the main thread; the engine sends a worker
its next file only when the main thread asks for a result. With the model called in the main
thread, every worker sat idle for the whole of each model call (decode and model took turns).
:class:`BatchQueue` hands each full batch to one background thread (ONNX Runtime and PyTorch
release the GIL while they compute) and returns at once, so the main thread keeps the workers
fed. At most ``depth`` batches wait or run at a time (memory stays bounded: a batch is a few
MB of uint8 images); the probabilities come back in submission order, so they are the same as
with calls made one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class BatchQueue:
    """Runs ``fn(batch)`` on one background thread, in order, at most ``depth`` calls ahead.

    Args:
        fn: The model call: a uint8 batch in, probabilities ``(B, C)`` out.
        depth: Batches that may be waiting or running at once (≥ 1); submitting another waits
            for the oldest.

    Example:
        >>> q = BatchQueue(lambda b: b.astype(np.float32) / 2)
        >>> q.submit(np.ones((2, 1), dtype=np.uint8))
        >>> q.results().ravel().tolist()
        [0.5, 0.5]
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], depth: int = 2) -> None:
        self.fn = fn
        self.depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypermodal-model")
        self._calls: list[Future[np.ndarray]] = []
        self._done = 0

    def submit(self, batch: np.ndarray) -> None:
        """Queue one batch; waits while ``depth`` batches are already waiting or running."""
        while len(self._calls) - self._done >= self.depth:
            self._calls[self._done].result()  # raises the model's error here, if any
            self._done += 1
        self._calls.append(self._pool.submit(self._call, batch))

    def _call(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(batch))

    def results(self) -> np.ndarray | None:
        """Every batch's probabilities, in submission order (None: nothing was submitted)."""
        try:
            out = [f.result() for f in self._calls]
        finally:
            self.close()
        return np.concatenate(out) if out else None

    def close(self) -> None:
        """Stop the thread (after the call that runs, if any); calls still waiting are dropped."""
        for f in self._calls:
            f.cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> BatchQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
