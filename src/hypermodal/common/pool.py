"""The parent side of crash isolation: a pool of worker processes that it watches.

See :mod:`hypermodal.common.isolation` for what isolation guarantees and
:mod:`hypermodal.common.worker` for the worker's side. Each worker runs one item at a time; the
pool waits on every busy worker's pipe and process at once, with the nearest deadline as its
timeout, so a death or a timeout is noticed as soon as it happens.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import connection
from typing import Any

from hypermodal.common import worker as workerproc
from hypermodal.common.errors import EngineError
from hypermodal.common.isolation import Crashed, DecodeLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Raised:
    error: BaseException


#: thread counts of numeric libraries in a worker: a pool of N workers already uses N cores
_SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _context(preload: str) -> Any:
    """The ``forkserver`` context (started here, with ``preload`` imported and single-threaded
    numeric libraries, unless it runs already), or ``spawn`` where there is none."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(sorted({workerproc.__name__, preload}))
    saved = {name: os.environ.get(name) for name in _SINGLE_THREADED}
    try:
        for name, value in _SINGLE_THREADED.items():
            os.environ.setdefault(name, value)
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return ctx


class _Worker:
    """One worker process, its pipe, and the file that holds its stdout/stderr."""

    def __init__(self, ctx: Any, memory_mb: int | None) -> None:
        here, there = ctx.Pipe(duplex=True)
        self.log_fd = workerproc.anonymous_file()
        env = {**_SINGLE_THREADED, **os.environ}
        args = (there, workerproc.InheritedFd(self.log_fd), os.getpid(), memory_mb, env)
        self.proc = ctx.Process(target=workerproc.serve, args=args, daemon=True)
        self.proc.name = "hypermodal-worker"
        try:
            self.proc.start()
        except OSError as exc:
            os.close(self.log_fd)
            raise EngineError(f"cannot start a worker process: {exc}") from None
        finally:
            there.close()
        self.conn = here
        self.deadline = math.inf
        self.retiring = False

    def send(self, fn: Callable[[Any], Any], item: Any, timeout_s: float) -> None:
        self.conn.send_bytes(pickle.dumps((fn, item), protocol=5))
        self.deadline = time.monotonic() + timeout_s

    def receive(self, timeout_s: float, memory_mb: int | None) -> tuple[bool, Any]:
        """Read what the worker sent: ``(True, outcome)`` once its item is finished, ``(False,
        None)`` while it is still working (heartbeats renew its deadline)."""
        while True:
            if not self.conn.poll():
                if self.proc.is_alive():
                    return False, None
                if not self.conn.poll():  # dead, and nothing of it left in the pipe
                    return True, self.died(memory_mb)
            done, outcome = self._read(timeout_s, memory_mb)
            if done:
                return True, outcome

    def _read(self, timeout_s: float, memory_mb: int | None) -> tuple[bool, Any]:
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            return True, self.died(memory_mb)
        try:
            kind, value, self.retiring = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - a result that pickles but does not unpickle
            return True, Crashed(f"the result could not be read: {type(exc).__name__}: {exc}")
        if kind == "beat":
            self.deadline = time.monotonic() + timeout_s
            return False, None
        self.relay_output()
        if kind == "raise":
            return True, _Raised(value)
        return True, Crashed(value) if kind == "failed" else value

    def died(self, memory_mb: int | None) -> Crashed:
        """The reason of a worker that ended without a result (and its process reaped)."""
        self.proc.join(5)
        if self.proc.exitcode is None:  # pragma: no cover - closed its pipe but lives on
            self.kill()
        text = workerproc.read_output(self.log_fd)
        return Crashed(workerproc.death_reason(self.proc.exitcode, text, memory_mb))

    def relay_output(self) -> None:
        for line in workerproc.read_output(self.log_fd).splitlines():
            if line.strip():
                log.debug("worker %s: %s", self.proc.pid, line)

    def kill(self) -> None:
        if self.proc.exitcode is None:
            self.proc.kill()
        self.proc.join(5)

    def close(self) -> None:
        self.kill()
        self.conn.close()
        os.close(self.log_fd)


class WorkerPool:
    """Up to ``size`` worker processes, started when needed and replaced when they die.

    Args:
        size: How many items run at once.
        limits: The time limit per item and the memory ceiling of each worker.
        window: How far ahead of the consumer an ordered map may run (finished results wait
            in this process for their turn).
    """

    def __init__(self, size: int, limits: DecodeLimits, window: int) -> None:
        self.size = max(1, size)
        self.limits = limits
        self.window = max(1, window)
        self._idle: list[_Worker] = []
        self._ctx: Any = None

    def run(
        self, fn: Callable[[Any], Any], items: Sequence[Any], ordered: bool
    ) -> Iterator[tuple[int, Any]]:
        """``(position, fn(item))`` per item: in item order when ``ordered``, else as they finish.

        A result is a :class:`Crashed` when the item's worker could not give one; an exception
        ``fn`` raised is raised here. Work still running when the consumer stops is killed.
        """
        n = len(items)
        busy: dict[_Worker, int] = {}
        finished: dict[int, Any] = {}
        sent = emitted = 0
        try:
            while emitted < n:
                while (
                    sent < n
                    and len(busy) < self.size
                    and (not ordered or sent < emitted + self.window)
                ):
                    worker = self._worker(fn)
                    try:
                        worker.send(fn, items[sent], self.limits.timeout_s)
                    except BaseException:  # an item that cannot be pickled: a bug, raised here
                        self._idle.append(worker)
                        raise
                    busy[worker] = sent
                    sent += 1
                for worker, outcome in self._wait(busy):
                    position = busy.pop(worker)
                    self._release(worker)
                    if ordered:
                        finished[position] = outcome
                        continue
                    emitted += 1
                    yield position, _unwrap(outcome)
                while ordered and emitted in finished:
                    yield emitted, _unwrap(finished.pop(emitted))
                    emitted += 1
        finally:
            for worker in busy:
                worker.close()

    def _worker(self, fn: Callable[[Any], Any]) -> _Worker:
        if self._idle:
            return self._idle.pop()
        if self._ctx is None:
            target = getattr(fn, "func", fn)  # a functools.partial: its function
            self._ctx = _context(getattr(target, "__module__", None) or __name__)
        return _Worker(self._ctx, self.limits.memory_mb)

    def _release(self, worker: _Worker) -> None:
        if worker.retiring or not worker.proc.is_alive():
            worker.close()
        else:
            self._idle.append(worker)

    def _wait(self, busy: dict[_Worker, int]) -> list[tuple[_Worker, Any]]:
        """Block until at least one busy worker is done (finished, dead or out of time)."""
        limits = self.limits
        while True:
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            handles = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = set(connection.wait(handles, timeout=wait_s))
            out: list[tuple[_Worker, Any]] = []
            for worker in busy:
                if worker.conn in ready or worker.proc.sentinel in ready:
                    done, outcome = worker.receive(limits.timeout_s, limits.memory_mb)
                    if done:
                        out.append((worker, outcome))
            now = time.monotonic()
            for worker in busy:
                late = now >= worker.deadline and all(w is not worker for w, _ in out)
                if late and not worker.conn.poll():
                    worker.kill()
                    worker.relay_output()
                    out.append((worker, Crashed(f"timed out after {limits.timeout_s:g} s")))
            if out:
                return out

    def close(self) -> None:
        """Stop every idle worker (busy ones are stopped by their :meth:`run`)."""
        while self._idle:
            self._idle.pop().close()


def _unwrap(outcome: Any) -> Any:
    if isinstance(outcome, _Raised):
        raise outcome.error
    return outcome
