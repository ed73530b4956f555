"""Where per-chunk and per-file work runs: a local process pool, or a Ray cluster.

The long stages (:func:`~hypermodal.catalog.build_catalog`,
:func:`~hypermodal.store.build.build_store`, :func:`~hypermodal.inference.predict.predict`) cut
their work into independent items (a chunk of files, a chunk of rows, one file) and hand a
module-level worker function plus the items to an :class:`Engine`. The driver (the calling
process) keeps every side effect that must happen once: journals, part files, the store's
``images.u8``, the model. Results come back to it; workers only read input files and compute.

Two engines:

- :class:`LocalEngine` (``"local"``, the default): crash-isolated worker processes on this
  machine (:class:`~hypermodal.common.pool.WorkerPool`), at least one however few the
  workers or items: a worker that aborts, segfaults, panics, runs out of memory or out of time
  is replaced and its item's result is a :class:`~hypermodal.common.isolation.Crashed` with the
  reason, so the stage records that file and goes on. ``DecodeLimits(in_process=True)`` runs
  the items in the calling process instead, without isolation, for debugging.
- :class:`RayEngine` (``"ray"``): Ray Data. Items are pickled into a dataset of one row each,
  ``map_batches`` runs the worker function on the cluster (one CPU per task), and results stream
  back to the driver under Ray Data's back-pressure. ``address=None`` starts a private local Ray
  instance (and shuts it down on :meth:`~RayEngine.close`); ``"auto"`` or ``"ray://host:10001"``
  joins an existing cluster. Every node must have ``hypermodal`` installed and see the input
  files at the same paths (see ``docs/ray.md``).

Example:
    >>> from hypermodal.common.engines import get_engine
    >>> with get_engine("local", workers=1) as engine:
    ...     list(engine.map(abs, [-1, 2, -3]))
    [1, 2, 3]
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from hypermodal.common.errors import EngineError
from hypermodal.common.isolation import DecodeLimits
from hypermodal.common.pool import WorkerPool

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


@runtime_checkable
class Engine(Protocol):
    """Runs a module-level function over a sequence of picklable items.

    Attributes:
        name: ``"local"`` or ``"ray"``.
        workers: how many items run at once (cluster CPUs for Ray).
        shares_filesystem: True when workers run on this machine and may write into files the
            driver prepared (the store's memory map); False when results must come back to the
            driver to be written.
    """

    name: str
    workers: int
    shares_filesystem: bool

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``fn(item)`` for every item, in item order, computed ahead with bounded look-ahead
        (a :class:`~hypermodal.common.isolation.Crashed` for an item whose worker died)."""
        ...

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        """``(position, fn(item))`` pairs as they finish (any order; a
        :class:`~hypermodal.common.isolation.Crashed` for an item whose worker died)."""
        ...

    def close(self) -> None:
        """Release processes / the Ray instance this engine started."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalEngine:
    """Worker processes on this machine, each item crash-isolated in one of them.

    The workers start at the first map and are reused until :meth:`close`; a worker that dies
    is replaced. Each runs one item at a time under ``limits`` (time per item, memory ceiling),
    and an item whose worker died gives a :class:`~hypermodal.common.isolation.Crashed`
    instead of a result. An ordered :meth:`map` runs at most ``max_in_flight`` items (default
    ``4 × workers``) ahead of the consumer, so a stage that returns images never holds more
    than that many results in memory. With ``limits.in_process`` every item runs in the calling
    process, one after the other.
    """

    name = "local"
    shares_filesystem = True

    def __init__(
        self,
        workers: int | None = None,
        max_in_flight: int | None = None,
        limits: DecodeLimits | None = None,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_in_flight = max(1, max_in_flight or 4 * self.workers)
        self.limits = limits or DecodeLimits()
        self._pool: WorkerPool | None = None

    def _workers(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self.workers, self.limits, self.max_in_flight)
        return self._pool

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        if self.limits.in_process:
            yield from map(fn, items)
            return
        for _, result in self._workers().run(fn, items, ordered=True):
            yield result

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if self.limits.in_process:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        yield from self._workers().run(fn, items, ordered=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalEngine(workers={self.workers}, limits={self.limits})"


def _apply_pickled(batch: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """Ray Data batch function: unpickle each item, run ``fn``, pickle each result.

    Items and results travel as pickled bytes so that any picklable value (dataclasses, dicts of
    lists, numpy arrays, ``None``) crosses Ray Data unchanged, without Arrow type inference.
    """
    return {
        "i": batch["i"],
        "y": [pickle.dumps(fn(pickle.loads(x)), protocol=5) for x in batch["x"]],
    }


class RayEngine:
    """Ray Data on a Ray cluster, or on a local Ray instance started here.

    Args:
        address: ``None`` starts a private local instance with ``workers`` CPUs (shut down on
            :meth:`close`); ``"auto"`` joins the cluster this machine belongs to (``ray start``);
            ``"ray://host:10001"`` joins a remote cluster through Ray Client. When Ray is already
            initialised in this process, that instance is used and left running.
        workers: CPUs of the local instance; ignored when joining a cluster (all its CPUs are
            used).
        blocks_per_worker: how many dataset blocks per cluster CPU at most. Each task handles
            one block, so more blocks balance better and fewer cost less scheduling.
    """

    name = "ray"
    shares_filesystem = False

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        blocks_per_worker: int = 16,
    ) -> None:
        try:
            import ray
            import ray.data  # noqa: F401 - fail here, not inside the first map
        except ImportError as exc:
            raise EngineError(
                "--engine ray needs Ray Data: pip install 'hypermodal[cluster]' "
                f"(or 'ray[data]'); import failed: {exc}"
            ) from None
        self._owns = False
        if ray.is_initialized():
            if address:
                log.info("Ray is already initialised in this process: using it, not %s", address)
        else:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
            }
            if address:
                try:
                    ray.init(address=address, **kwargs)
                except ConnectionError as exc:
                    raise EngineError(
                        f"cannot join the Ray cluster at {address!r}: {exc} "
                        "(start one with `ray start --head`, or leave --ray-address out to "
                        "start a local Ray instance)"
                    ) from None
            else:
                ray.init(num_cpus=max(1, workers or os.cpu_count() or 1), **kwargs)
            self._owns = True
        self.address = address
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.blocks_per_worker = max(1, blocks_per_worker)

    def _dataset(self, fn: Callable[[Any], Any], items: Sequence[Any], ordered: bool) -> Any:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
        ctx.execution_options.preserve_order = ordered
        ctx.enable_progress_bars = False  # the stages draw their own progress bar
        try:
            rows = [{"i": i, "x": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
            blocks = max(1, min(len(rows), self.workers * self.blocks_per_worker))
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            return ds.map_batches(
                functools.partial(_apply_pickled, fn=fn),
                batch_size=1,
                num_cpus=1,
                batch_format="numpy",
            )
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        if not items:
            return
        for row in self._dataset(fn, items, ordered=True).iter_rows():
            yield pickle.loads(row["y"])

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        for row in self._dataset(fn, items, ordered=False).iter_rows():
            yield int(row["i"]), pickle.loads(row["y"])

    def close(self) -> None:
        if self._owns:
            import ray

            ray.shutdown()
            self._owns = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r}, workers={self.workers})"


def get_engine(
    name: str = "local",
    workers: int | None = None,
    address: str | None = None,
    limits: DecodeLimits | None = None,
) -> Engine:
    """The engine called ``name`` (``"local"`` or ``"ray"``).

    ``address`` is the Ray cluster address (``"auto"``, ``"ray://host:10001"``); ``None`` with
    ``"ray"`` starts a local Ray instance. ``limits`` are the local workers' time limit and
    memory ceiling (default :class:`~hypermodal.common.isolation.DecodeLimits`); Ray runs its
    tasks under its own.
    """
    key = name.strip().lower()
    if key == "local":
        if address:
            raise EngineError(
                "a Ray address was given but the engine is 'local' (use --engine ray)"
            )
        return LocalEngine(workers, limits=limits)
    if key == "ray":
        return RayEngine(address=address, workers=workers)
    raise EngineError(f"unknown engine {name!r}; expected one of {ENGINES}")


class engine_scope:
    """Context manager: an :class:`Engine` given by name (opened and closed here, with
    ``limits``) or by instance (borrowed, with its own limits: the caller closes it).

    Example:
        >>> with engine_scope("local", workers=1) as engine:
        ...     engine.name
        'local'
    """

    def __init__(
        self,
        engine: str | Engine,
        workers: int | None = None,
        address: str | None = None,
        limits: DecodeLimits | None = None,
    ) -> None:
        if isinstance(engine, str):
            self._engine: Engine = get_engine(
                engine, workers=workers, address=address, limits=limits
            )
            self._owned = True
        else:
            self._engine = engine
            self._owned = False

    def __enter__(self) -> Engine:
        return self._engine

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self._engine.close()
