"""Inside a decoding worker process (see :mod:`hypermodal.common.isolation`, its other side).

:func:`serve` is the worker's main loop: it receives ``(fn, item)``, sends back what ``fn(item)``
gave, and turns whatever escaped ``fn`` into something that can cross the process boundary.
:func:`heartbeat` and :func:`failure_reason` are for the stages' worker functions; both also
work in the calling process (``DecodeLimits(in_process=True)``), where a heartbeat does nothing.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

#: this process's pipe to the calling process, when it is a worker
_conn: Connection | None = None
#: this worker's memory ceiling in MB (None: none, or not a worker)
_memory_mb: int | None = None
#: set when the worker must not take another item (after a panic or a MemoryError)
_retire = False
#: exceptions that stop the calling process's run rather than cost one file
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)
_BEAT = pickle.dumps(("beat", None, False), protocol=5)
#: the shortest time between two heartbeats sent (the limit is renewed that late at most)
BEAT_EVERY_S = 0.1
_last_beat = 0.0
_PR_SET_PDEATHSIG = 1


def heartbeat() -> None:
    """Say that this worker is making progress (a next file, a next image): its time limit
    starts again. At most one beat per :data:`BEAT_EVERY_S` is sent; nothing outside a worker.
    """
    global _last_beat
    if _conn is not None:
        now = time.monotonic()
        if now - _last_beat >= BEAT_EVERY_S:
            _conn.send_bytes(_BEAT)
            _last_beat = now


def memory_reason() -> str:
    """The reason of a file that needed more memory than a worker may use."""
    if _memory_mb:
        return f"over the memory limit ({_memory_mb} MB)"
    return "out of memory"


def failure_reason(exc: BaseException) -> str:
    """The reason recorded for a file whose decoding raised ``exc``.

    A ``MemoryError`` is ``over the memory limit (N MB)``, a Rust panic (pyo3's
    ``PanicException``) ``decoder panicked: …``, anything else ``<type>: <message>``. After a
    ``MemoryError`` or a ``BaseException`` that is not an ``Exception`` (a panic may leave the
    decoder's state poisoned) the worker finishes its item and is replaced.

    Raises:
        KeyboardInterrupt, SystemExit, GeneratorExit: ``exc`` itself, in the calling process
            (those stop a run; in a worker they cost the file).
    """
    global _retire
    if isinstance(exc, _PASS_THROUGH) and _conn is None:
        raise exc
    message = " ".join(str(exc).split())[:300]
    if isinstance(exc, MemoryError):
        _retire = _conn is not None
        return memory_reason()
    if not isinstance(exc, Exception):
        _retire = _conn is not None
        if type(exc).__name__ == "PanicException":
            return f"decoder panicked: {message or 'no message'}"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ----------------------------------------------------------------------------- the worker
class InheritedFd:
    """A file descriptor handed to a worker at its start (its stdout/stderr file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup: Any) -> int:
    return int(dup.detach())


def anonymous_file() -> int:
    """A file with no name (removed at once), open for reading and writing."""
    fd, path = tempfile.mkstemp(prefix="hypermodal-worker-")
    os.unlink(path)
    return fd


def read_output(fd: int, keep: int = 65536) -> str:
    """What a worker wrote since the last call (its last ``keep`` bytes); empties the file."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, min(size, keep), max(0, size - keep))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)  # the worker shares this offset: it writes from 0 again
    return data.decode("utf-8", "replace")


#: what a worker that died of an allocation past its ceiling printed last (C++, Rust, Python)
_OUT_OF_MEMORY = ("std::bad_alloc", "memory allocation of", "Cannot allocate", "MemoryError")


def death_reason(exitcode: int | None, output: str, memory_mb: int | None) -> str:
    """The reason of a file whose worker ended without a result (``exitcode`` as
    :attr:`multiprocessing.Process.exitcode`: ``-N`` for signal ``N``)."""
    if any(s in output for s in _OUT_OF_MEMORY):
        return f"over the memory limit ({memory_mb} MB)" if memory_mb else "out of memory"
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        reason = f"decoder crashed: {name}"
        if name == "SIGKILL":
            reason += " (killed from outside the run, e.g. by the out-of-memory killer)"
    elif exitcode:
        reason = f"decoder exited with status {exitcode}"
    else:
        reason = "decoder ended without a result"
    detail = _crash_detail(output)
    return f"{reason} ({detail})" if detail else reason


def _crash_detail(output: str) -> str:
    """The native message before Python's fatal-error dump, and the innermost Python frame."""
    native, _, dump = output.partition("Fatal Python error")
    lines = [line.strip() for line in native.splitlines() if line.strip()]
    text = " ".join(lines[-3:])
    frames = [line.strip() for line in dump.splitlines() if line.strip().startswith("File ")]
    if frames:
        text = f"{text}; at {frames[0]}" if text else f"at {frames[0]}"
    return text[:400]


def serve(
    conn: Connection, out_fd: int, parent: int, memory_mb: int | None, env: dict[str, str]
) -> None:
    """A worker's life: set up, then ``fn(item)`` for every ``(fn, item)`` received."""
    global _conn, _memory_mb
    _setup(out_fd, parent, memory_mb, env)
    _conn, _memory_mb = conn, memory_mb
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the calling process is gone or closed the pool
            os._exit(0)
        _answer(conn, data)
        if _retire:
            os._exit(0)


def _answer(conn: Connection, data: bytes) -> None:
    global _retire, _last_beat
    try:
        fn, item = pickle.loads(data)  # may import fn's module: not counted in the time limit
        conn.send_bytes(_BEAT)
        _last_beat = time.monotonic()
        message: tuple[str, Any] = ("ok", fn(item))
    except MemoryError:
        _retire = True
        message = ("failed", memory_reason())
    except Exception as exc:  # noqa: BLE001 - raised in the calling process when it pickles
        message = _raised(exc)
    except BaseException as exc:  # noqa: BLE001 - a panic: this item's reason, not the run's end
        message = ("failed", failure_reason(exc))
    fn = item = None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        payload = pickle.dumps((*message, _retire), protocol=5)
    except MemoryError:
        _retire = True
        payload = pickle.dumps(("failed", memory_reason(), True))
    except BaseException as exc:  # noqa: BLE001 - an unpicklable result never crosses over
        reason = f"the result could not be sent back: {type(exc).__name__}: {exc}"
        payload = pickle.dumps(("failed", reason[:400], _retire))
    del message
    conn.send_bytes(payload)


def _raised(exc: Exception) -> tuple[str, Any]:
    """An exception to raise in the calling process, with this worker's traceback as a note."""
    tb = "".join(traceback.format_exception(exc))
    try:
        copy = pickle.loads(pickle.dumps(exc, protocol=5))
        copy.add_note(f"raised in worker process {os.getpid()}:\n{tb}")
        pickle.dumps(copy, protocol=5)
        return "raise", copy
    except Exception:  # noqa: BLE001 - cannot cross the boundary: it becomes a reason
        return "failed", failure_reason(exc)


def _setup(out_fd: int, parent: int, memory_mb: int | None, env: dict[str, str]) -> None:
    """Die with the calling process, leave Ctrl-C to it, capture output, apply the ceiling."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    faulthandler.enable(file=sys.stderr, all_threads=False)
    os.environ.clear()
    os.environ.update(env)
    from hypermodal.common.logs import quiet_decoders

    quiet_decoders()  # the decoders stay as quiet as in the calling process (``--verbose``)
    if memory_mb is not None:
        _set_ceiling(memory_mb)


def _set_ceiling(memory_mb: int) -> None:
    """Cap this process's address space (``RLIMIT_AS``), where the system has one."""
    try:
        import resource

        soft = memory_mb * 2**20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (ImportError, OSError, ValueError):  # pragma: no cover - no RLIMIT_AS here
        pass


def _die_with(parent: int) -> None:
    """Be killed when the calling process ends, however it ends."""
    _release_forkserver()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watch below
            pass
    if not _alive(parent):
        os._exit(1)
    threading.stack_size(256 * 1024)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()
    threading.stack_size(0)


def _release_forkserver() -> None:
    """Close this worker's end of the forkserver's "alive" pipe, so that the forkserver (the
    worker's parent) ends as soon as the calling process does, and with it, the worker."""
    try:
        from multiprocessing import forkserver

        server: Any = forkserver._forkserver  # type: ignore[attr-defined]
        if server._forkserver_alive_fd is not None:
            os.close(server._forkserver_alive_fd)
            server._forkserver_alive_fd = None
    except (AttributeError, ImportError, OSError):  # pragma: no cover - not a forkserver child
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:  # a zombie has ended: state Z
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _watch(parent: int) -> None:
    """The fallback where there is no ``PR_SET_PDEATHSIG``: poll the calling process."""
    while True:
        time.sleep(0.5)
        if not _alive(parent):
            os._exit(1)
