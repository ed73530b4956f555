"""Crash isolation: a worker's death, by any means, costs only the item it was working on.

Every crash here is real: the worker process aborts, segfaults, is killed, allocates past its
ceiling, sleeps past its limit, or runs GDCM and pylibjpeg-rle on the files that crash them.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import pytest

from hypermodal.common.engines import LocalEngine, get_engine
from hypermodal.common.errors import EngineError
from hypermodal.common.isolation import Crashed, DecodeLimits, heartbeat, map_chunks
from tests.common import crash_files as cf
from tests.helpers import REPO

# generous enough that starting a worker on a loaded 2-core machine is never taken for a hang
FAST = DecodeLimits(timeout_s=10.0, memory_mb=2048)


def mixed(x: int) -> int:
    """A square for most items; item 3 aborts, 5 segfaults, 7 is killed, 9 hangs."""
    deaths = {3: cf.abort, 5: cf.segfault, 7: cf.killed, 9: cf.stuck}
    if x in deaths:
        deaths[x](x)
    return x * x


def test_each_death_costs_its_item_only_and_the_worker_is_replaced():
    with LocalEngine(2, limits=FAST) as engine:
        got = list(engine.map(mixed, range(12)))
        assert sorted(engine.map_unordered(mixed, [0, 3, 4])) == [
            (0, 0),
            (1, Crashed(got[3].reason)),
            (2, 16),
        ]
    assert [g for i, g in enumerate(got) if i not in (3, 5, 7, 9)] == [
        i * i for i in range(12) if i not in (3, 5, 7, 9)
    ]
    reasons = {i: got[i].reason for i in (3, 5, 7, 9)}
    assert reasons[3].startswith("decoder crashed: SIGABRT")
    assert reasons[5].startswith("decoder crashed: SIGSEGV")
    assert reasons[7].startswith("decoder crashed: SIGKILL (killed from outside the run")
    assert reasons[9] == "timed out after 10 s"
    assert "crash_files.py" in reasons[3]  # the innermost frame of the crash is in the reason


def test_memory_ceiling_is_per_worker():
    with LocalEngine(1, limits=FAST) as engine:
        small, big, after = engine.map(cf.allocate, [100, 3000, 100])
    assert small == after == 100 * 2**20
    assert big == Crashed("over the memory limit (2048 MB)")


def test_time_limit_is_per_item_and_a_heartbeat_renews_it():
    with LocalEngine(2, limits=DecodeLimits(timeout_s=1.5)) as engine:
        start = time.monotonic()
        got = list(engine.map(slow_steps, [(4, 0.5, True), (4, 0.5, False), (1, 60, False)]))
        took = time.monotonic() - start
    assert got[0] == 4  # 2 s in all, but never 1.5 s without a heartbeat
    assert got[1] == got[2] == Crashed("timed out after 1.5 s")
    assert took < 10  # the sleeper was killed, not waited for


def slow_steps(args: tuple[int, float, bool]) -> int:
    steps, pause, beat = args
    for _ in range(steps):
        if beat:
            heartbeat()
        time.sleep(pause)
    return steps


def test_real_decoder_abort_and_panic(tmp_path):
    jls = cf.jls_abort_file(tmp_path / "jls-128.dcm")
    rle = cf.rle_panic_file(tmp_path / "rle-32.dcm")
    good = str(cf.pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    with LocalEngine(2, limits=FAST) as engine:
        got = list(engine.map(cf.native_decode, [good, str(jls), str(rle), good]))
    assert got[0] == got[3] == 64 * 64
    assert got[1].reason.startswith("decoder crashed: SIGABRT")
    assert "gdcm" in got[1].reason.lower()  # GDCM's own message, from the worker's stderr
    assert got[2].reason.startswith("decoder panicked: index out of bounds")


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling calls __init__(msg): fails
        super().__init__(f"{a}/{b}")


def raise_unpicklable(_: object) -> None:
    raise Unpicklable(1, 2)


def return_unpicklable(_: object) -> object:
    return lambda: None


def raise_base(_: object) -> None:
    raise SystemExit("a decoder called exit")


def test_nothing_unpicklable_crosses_and_base_exceptions_never_escape():
    with LocalEngine(1, limits=FAST) as engine:
        got = list(engine.map(call, [raise_unpicklable, return_unpicklable, raise_base, abs]))
    assert got[0] == Crashed("Unpicklable: 1/2")
    assert got[1].reason.startswith("the result could not be sent back: ")
    assert got[2] == Crashed("SystemExit: a decoder called exit")
    assert got[3] == 5


def call(fn):  # the worker function of the test above: each item says what to do
    return fn(-5)


def test_an_ordinary_exception_is_raised_in_the_caller_with_the_worker_traceback():
    with LocalEngine(2, limits=FAST) as engine:
        with pytest.raises(TypeError) as info:
            list(engine.map(abs, [1, "x"]))
        assert "raised in worker process" in info.value.__notes__[0]
        assert list(engine.map(abs, [-1, -2])) == [1, 2]  # the engine still works


def test_a_consumer_that_stops_early_leaves_nothing_running():
    with LocalEngine(2, limits=FAST) as engine:
        it = engine.map(cf.sleep, [0.01, 30, 30])
        assert next(it) == 0.01
        pool = engine._workers()
        it.close()  # the worker sleeping on the second item is killed, not left working
        assert [w.proc.is_alive() for w in pool._idle] == [True]
        start = time.monotonic()
        assert list(engine.map(cf.square, [3, 4])) == [9, 16]
        assert time.monotonic() - start < 10


def test_one_worker_and_one_item_still_run_in_a_worker_unless_in_process():
    with get_engine("local", workers=1) as engine:
        assert list(engine.map(os.getpid, [])) == []
        (pid,) = engine.map(getpid, [0])
    assert pid != os.getpid()
    with LocalEngine(1, limits=DecodeLimits(in_process=True)) as engine:
        assert list(engine.map(getpid, [0])) == [os.getpid()]


def getpid(_: object) -> int:
    return os.getpid()


def test_map_chunks_reruns_a_crashed_chunk_one_item_at_a_time():
    chunks = [["a", "b"], ["c", "abort", "d"], ["abort"], ["e"]]
    with LocalEngine(2, limits=FAST) as engine:
        got = dict(map_chunks(engine, upper_chunk, chunks, split_chunk, merge_chunk))
    assert got[0] == ["A", "B"] and got[3] == ["E"]
    assert got[1][0::2] == ["C", "D"] and got[1][1].startswith("lost: decoder crashed: SIGABRT")
    assert got[2][0].startswith("lost: decoder crashed: SIGABRT")


def upper_chunk(chunk: list[str]) -> list[str]:
    if "abort" in chunk:
        os.abort()
    return [x.upper() for x in chunk]


def split_chunk(chunk: list[str]) -> list[list[str]]:
    return [[x] for x in chunk]


def merge_chunk(chunk: list[str], results: list) -> list[str]:
    return [f"lost: {r.reason}" if isinstance(r, Crashed) else r[0] for r in results]


def test_decode_limits_are_checked():
    assert DecodeLimits.from_options(None, None) == DecodeLimits()
    assert DecodeLimits.from_options(5, 0) == DecodeLimits(timeout_s=5, memory_mb=None)
    for bad in ({"timeout_s": 0}, {"timeout_s": -1}, {"memory_mb": 100}, {"memory_mb": True}):
        with pytest.raises(EngineError):
            DecodeLimits(**bad)
    assert pickle.loads(pickle.dumps(Crashed("x"))) == Crashed("x")


@pytest.mark.slow
def test_workers_die_with_their_parent_even_when_stuck_holding_the_gil():
    """kill -9 of the calling process: the workers, stuck in C code, are gone within seconds."""
    script = (
        "from hypermodal.common.engines import LocalEngine\n"
        "from tests.common import crash_files as cf\n"
        "with LocalEngine(2) as engine:\n"
        "    list(engine.map(cf.stuck, [0, 1]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        # the forkserver and two stuck workers under it (plus the resource tracker)
        assert cf.wait_until(lambda: len(cf.descendants(proc.pid)) >= 4, 60)
        children = cf.descendants(proc.pid)
        proc.kill()
        proc.wait()
        assert cf.wait_until(lambda: not any(cf.alive(p) for p in children), 5), children
    finally:
        proc.kill()


def test_a_native_allocation_failure_reads_as_over_the_memory_limit():
    from hypermodal.common.worker import death_reason

    gdcm = (
        "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc"
    )
    rust = "memory allocation of 34359738368 bytes failed"
    for output in (gdcm, rust):
        assert death_reason(-6, output, 2048) == "over the memory limit (2048 MB)"
    assert death_reason(-11, "", 2048) == "decoder crashed: SIGSEGV"
    assert death_reason(3, "", None) == "decoder exited with status 3"
