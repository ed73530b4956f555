"""A PACS classified in place on Ray: each batch of series is retrieved and classified on a
worker, and only its rows come back to the driver.

The driver lists the series (QIDO-RS, one cheap query), cuts them into batches — at most
``batch_series`` series each, and at least one batch per CPU of the cluster while there are
series enough — and runs :meth:`~hypermodal.inference.pacs_batch.BatchJob.run` of each as a Ray task
(one CPU each). The task retrieves its sample of instances through WADO-RS into the worker's
own temporary folder, classifies them with the model loaded there (ONNX Runtime or PyTorch, as
on the local path; the decoding stays crash-isolated in a process of its own), deletes the
instances and returns the rows. Nothing retrieved crosses the cluster and the driver never runs
the model. A task whose worker died is retried once by Ray; a batch that still fails, or whose
task raised (a model the worker cannot load), gives its series a row with the reason, and the
run goes on.

Every worker must reach the server at ``url``, have this package installed (the bundled model
comes with it) and see ``checkpoint`` at the same path when one is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hypermodal.common.isolation import failure_reason
from hypermodal.inference.pacs_batch import BatchJob, series_row
from hypermodal.inference.pacs_retrieve import Retrieved
from hypermodal.sources.fetch.query import SeriesInfo

__all__ = ["batches", "classify_on_ray"]

#: batches in flight per CPU of the cluster (the rest wait on the driver: bounded memory)
IN_FLIGHT_PER_CPU = 2


def batches(n: int, batch_series: int, cpus: int) -> list[tuple[int, int]]:
    """``(first, stop)`` of each batch of ``n`` series: at most ``batch_series`` each, and
    enough of them that every CPU gets one while there are series enough."""
    if n <= 0:
        return []
    k = max(math.ceil(n / max(1, batch_series)), min(n, max(1, cpus)))
    cuts = [n * i // k for i in range(k + 1)]  # k near-equal runs, in order
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _run_batch(job: BatchJob, batch: list[SeriesInfo], first: int) -> dict[str, Any]:
    return job.run(batch, first)


def _failed(batch: Sequence[SeriesInfo], reason: str) -> dict[str, Any]:
    why = f"batch failed on its worker: {reason}"
    rows = [series_row(Retrieved(info=s, folder=Path(), error=why), None, []) for s in batch]
    return {"rows": rows, "instances_in_series": 0, "instances_retrieved": 0, "bytes": 0}


def classify_on_ray(
    job: BatchJob,
    series: Sequence[SeriesInfo],
    batch_series: int,
    address: str | None = None,
    workers: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The results of :meth:`BatchJob.run` for every batch of ``series``, in order, each run
    as a Ray task (a local Ray instance of ``workers`` CPUs, or the cluster at ``address``)."""
    import dataclasses

    import ray

    from hypermodal.common.engines import engine_scope

    # a task holds one CPU: one decoding process beside its model
    job = dataclasses.replace(job, options={**job.options, "workers": 1})

    with engine_scope("ray", workers=workers, address=address) as engine:
        cpus = max(1, int(getattr(engine, "workers", 1)))
        task = ray.remote(num_cpus=1, max_retries=1)(_run_batch)
        cuts = batches(len(series), batch_series, cpus)
        window = max(1, cpus * IN_FLIGHT_PER_CPU)
        pending: list[tuple[list[SeriesInfo], Any]] = []
        nxt = 0
        while nxt < len(cuts) or pending:
            while nxt < len(cuts) and len(pending) < window:
                first, stop = cuts[nxt]
                batch = list(series[first:stop])
                pending.append((batch, task.remote(job, batch, first)))
                nxt += 1
            batch, ref = pending.pop(0)
            try:
                yield ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a worker lost twice: its series say why
                # an error raised in the task comes wrapped (RayTaskError): report what it was
                yield _failed(batch, failure_reason(getattr(exc, "cause", None) or exc))
