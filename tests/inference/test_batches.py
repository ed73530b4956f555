import threading
import time

import numpy as np
import pytest

from hypermodal.inference.batches import BatchQueue


def test_batches_come_back_in_order_and_run_off_the_calling_thread():
    threads = set()

    def model(batch):
        threads.add(threading.current_thread().name)
        time.sleep(0.01 * (3 - batch[0, 0] % 3))  # later batches finish sooner if run at once
        return batch.astype(np.float32)

    with BatchQueue(model, depth=2) as q:
        for k in range(6):
            q.submit(np.full((2, 1), k, dtype=np.uint8))
        out = q.results()
    assert out.ravel().tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert threads and threading.current_thread().name not in threads


def test_at_most_depth_batches_wait_and_the_caller_goes_on_meanwhile():
    started = threading.Event()
    release = threading.Event()

    def model(batch):
        started.set()
        release.wait(5)
        return batch

    q = BatchQueue(model, depth=2)
    t0 = time.perf_counter()
    q.submit(np.zeros((1, 1)))
    q.submit(np.zeros((1, 1)))  # both accepted at once while the first one runs
    assert started.wait(5) and time.perf_counter() - t0 < 1
    waiter = threading.Thread(target=q.submit, args=(np.zeros((1, 1)),))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # a third batch waits for the oldest
    release.set()
    waiter.join(5)
    assert not waiter.is_alive()
    assert len(q.results()) == 3


def test_a_model_error_reaches_the_caller_and_nothing_submitted_gives_none():
    def model(batch):
        raise ValueError("bad batch")

    q = BatchQueue(model, depth=1)
    q.submit(np.zeros((1, 1)))
    with pytest.raises(ValueError, match="bad batch"):
        q.results()
    assert BatchQueue(model).results() is None
