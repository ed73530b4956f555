"""Crash-isolated work: a worker process's death costs only the item it was working on.

Decoders run native code (GDCM, OpenJPEG, CharLS, pylibjpeg's Rust codecs) that can abort,
segfault, panic, allocate without bound or never return on a hostile file, and no ``except``
catches an abort. :class:`~hypermodal.common.pool.WorkerPool` (behind
:class:`~hypermodal.common.engines.LocalEngine`) runs each item in a worker process, one item
per worker at a time, and watches it:

- a worker that dies (abort, segfault, killed from outside) or runs past its time limit is
  replaced, and its item's result is a :class:`Crashed` with the reason (``decoder crashed:
  SIGABRT``, ``timed out after 120 s``, ``over the memory limit (4096 MB)``); the run goes on;
- each worker has a memory ceiling (``RLIMIT_AS``) and a time limit that each
  :func:`heartbeat` renews (:class:`DecodeLimits`): the stages beat before each file and each
  image, so the limit is per file and a file of many frames is not cut short while it moves;
- a ``MemoryError`` or a ``BaseException`` (pyo3's ``PanicException``) that escapes the worker
  function, and a result or an exception that cannot be pickled, become a :class:`Crashed`:
  nothing unpicklable crosses over. A picklable ``Exception`` (a bug) is raised in the caller;
- workers die with the calling process (``PR_SET_PDEATHSIG`` on Linux, and a thread that
  watches it), so a ``kill -9`` of a run leaves none behind;
- what a worker prints (a decoder's complaints, ``faulthandler``'s dump) goes to a file of its
  own: the lines before a crash join the reason, the rest is logged at DEBUG level.

Workers are forked from the ``forkserver`` (a fresh interpreter that imported the worker
function's module once; ``spawn`` where there is none), never from the calling process, which
may hold threads, a GPU context or a large heap; they get its environment as it is when they
start. :func:`map_chunks` runs a chunk whose worker died again one file at a time. The worker
side, :func:`heartbeat` and :func:`failure_reason` are in :mod:`hypermodal.common.worker`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypermodal.common.errors import EngineError
from hypermodal.common.worker import failure_reason, heartbeat  # noqa: F401 - for the stages

log = logging.getLogger(__name__)

#: the time limit per file when none is given
DEFAULT_TIMEOUT_S = 120.0
#: the memory ceiling per worker when none is given (less on a machine with little memory)
DEFAULT_MEMORY_MB = 4096
#: the smallest ceiling accepted: a worker's interpreter and libraries take about 750 MB of
#: address space before it decodes anything, so less would fail every file
MIN_MEMORY_MB = 1024


def default_memory_mb() -> int:
    """4 GiB, or half of this machine's memory when that is less (never under 1 GiB)."""
    try:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not a POSIX system
        return DEFAULT_MEMORY_MB
    return max(MIN_MEMORY_MB, min(DEFAULT_MEMORY_MB, total_mb // 2))


@dataclass(frozen=True)
class DecodeLimits:
    """What one decoding worker may use.

    Attributes:
        timeout_s: Seconds a worker may go without a :func:`heartbeat` (the stages beat
            before each file and each image it yields); past it the worker is killed and the
            file reported as ``timed out after N s``.
        memory_mb: Address-space ceiling of each worker in MB (``RLIMIT_AS``); ``None``: none.
            An allocation past it fails in the worker, and the file is reported as ``over the
            memory limit (N MB)``.
        in_process: Run every item in the calling process, without isolation (for debugging
            with a debugger or a profiler: a crash then ends the run).

    Raises:
        EngineError: A time limit that is not a positive number, or a ceiling under 1024 MB.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int | None = field(default_factory=default_memory_mb)
    in_process: bool = False

    def __post_init__(self) -> None:
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise EngineError(f"the time limit per file must be positive seconds, not {timeout!r}")
        memory = self.memory_mb
        if memory is not None and (
            isinstance(memory, bool) or not isinstance(memory, int) or memory < MIN_MEMORY_MB
        ):
            raise EngineError(
                f"the memory limit per worker must be at least {MIN_MEMORY_MB} MB, not {memory!r}"
            )

    @classmethod
    def from_options(cls, timeout_s: float | None, memory_mb: int | None) -> DecodeLimits:
        """The limits of the CLI's ``--timeout`` and ``--memory-limit`` (None: the default;
        a memory limit of 0: no ceiling)."""
        return cls(
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
            memory_mb=default_memory_mb() if memory_mb is None else (memory_mb or None),
        )


@dataclass(frozen=True)
class Crashed:
    """The result of an item whose worker died, ran out of time or memory, or raised something
    that cannot cross the process boundary; ``reason`` says which."""

    reason: str


def map_chunks(
    engine: Any,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    split: Callable[[Any], list[Any]],
    merge: Callable[[Any, list[Any]], Any],
) -> Iterator[tuple[int, Any]]:
    """``engine.map_unordered(fn, items)`` over chunks of files, where a chunk whose worker died
    costs only the file that killed it.

    A chunk whose result is a :class:`Crashed` is run again one file at a time (each in a
    worker of its own, after the other chunks), and ``merge(chunk, results)`` builds its result
    from the per-file ones, where a file that crashed again has a :class:`Crashed`. Every good
    file of the chunk gets the result it would have had without the bad one.

    Args:
        engine: An :class:`~hypermodal.common.engines.Engine`.
        fn: The module-level worker function; it takes a chunk.
        items: The chunks.
        split: A chunk -> one chunk per file, in order.
        merge: ``(chunk, per-file results)`` -> the chunk's result.

    Yields:
        ``(position, result)`` as chunks finish.
    """
    again: dict[int, list[Any]] = {}
    for k, result in engine.map_unordered(fn, items):
        if not isinstance(result, Crashed):
            yield k, result
            continue
        singles = split(items[k])
        if len(singles) <= 1:
            yield k, merge(items[k], [result] * len(singles))
            continue
        log.info("chunk %d: %s; running its %d files one at a time", k, result.reason, len(singles))
        again[k] = singles
    flat = [(k, j) for k, singles in again.items() for j in range(len(singles))]
    got: dict[int, dict[int, Any]] = {k: {} for k in again}
    for position, result in engine.map_unordered(fn, [again[k][j] for k, j in flat]):
        k, j = flat[position]
        got[k][j] = result
        if len(got[k]) == len(again[k]):
            yield k, merge(items[k], [got[k][i] for i in range(len(again[k]))])
            del got[k]
