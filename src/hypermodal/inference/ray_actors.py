"""Inference on the workers: a pool of Ray actors, each holding one model, loaded once.

Each :class:`InferenceWorker` actor (one CPU) loads the model when it starts (ONNX Runtime for a
bundle, PyTorch for a ``.pt`` checkpoint; one intra-op thread, since the cluster runs one actor
per CPU), then reads, decodes, preprocesses and classifies the files it is sent — local paths
or ``s3://`` objects (:mod:`~hypermodal.inference.remote_inputs`) — and returns only rows:
per image the probabilities of the CNN, the intensity statistics and the header values the
fusion needs. No image goes back to the driver.

:class:`ActorPool` sends the work in chunks of a few files, a bounded number in flight per
actor, and gives the results back in chunk order. Crash isolation on Ray: an actor that dies
(a decoder's abort, out of memory) or runs past the time limit is replaced, and each file of
the lost chunk is sent again, alone; a file whose second try dies too is an error with the
reason, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.inference.remote_inputs import RemoteOptions, remote_decode, remote_header_info

log = logging.getLogger(__name__)

#: chunks queued per actor (one running, the next ready)
IN_FLIGHT_PER_ACTOR = 2


class InferenceWorker:
    """What one actor does: load the model once, then classify files sent to it.

    Args:
        model_path: The checkpoint or bundle, as the driver sees it.
        model_bytes: Its bytes, used when ``model_path`` is not on this node.
        opts: How to reach ``s3://`` objects.
        device: ``cpu`` (``cuda`` for an actor given a GPU).
    """

    def __init__(
        self,
        model_path: str,
        model_bytes: bytes | None,
        opts: RemoteOptions,
        device: str = "cpu",
    ) -> None:
        from hypermodal.inference.model import load_model

        self.opts = opts
        path = Path(model_path)
        if path.is_file() or model_bytes is None:
            self.loaded = load_model(path, device=device, threads=1)
        else:  # another node: the model from the object store, in a private folder
            folder = tempfile.mkdtemp(prefix="hypermodal-model-")
            try:
                local = Path(folder) / path.name
                local.write_bytes(model_bytes)
                self.loaded = load_model(local, device=device, threads=1)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        if self.loaded.backend == "torch":
            import torch

            torch.set_num_threads(1)

    def ready(self) -> dict[str, Any]:
        """Where this actor runs and with what (waited on before work is sent)."""
        return {"pid": os.getpid(), "backend": self.loaded.backend}

    def headers(self, items: list[tuple[str, int | None]]) -> list[dict[str, Any]]:
        """:func:`~hypermodal.inference.remote_inputs.remote_header_info` of each
        ``(location, size)``."""
        return [remote_header_info((loc, size, self.opts)) for loc, size in items]

    def classify(self, items: list[tuple[str, list[int] | None]]) -> list[dict[str, Any]]:
        """Decode each ``(location, image numbers or None)`` and run the model on the images
        of all of them at once.

        Returns:
            Per file, :func:`~hypermodal.inference.decoding.decode_file`'s record with
            ``"probs"`` (images × classes) in place of ``"images"``, or ``{"path", "error"}``.
        """
        from hypermodal.inference.model import predict_proba

        pre = self.loaded.preprocess.to_dict()
        records = [remote_decode((loc, wanted, pre, self.opts)) for loc, wanted in items]
        good = [r for r in records if "error" not in r]
        if good:
            p = np.asarray(predict_proba(self.loaded, np.concatenate([r["images"] for r in good])))
            start = 0
            for r in good:
                n = len(r.pop("images"))
                r["probs"] = p[start : start + n]
                start += n
        return records


@dataclass
class _Task:
    chunk: int  # which chunk of the caller's
    items: list[Any]
    positions: list[int]  # the items' places in their chunk
    retry: bool  # the second try of a file, alone
    actor: int
    started: float


class ActorPool:
    """Ray actors of :class:`InferenceWorker`, one per cluster CPU (at most ``workers``).

    Ray must be initialised (:class:`~hypermodal.common.engines.RayEngine` does it). Actors
    start at the first call and live until :meth:`close`.

    Args:
        model_path: The checkpoint or bundle.
        workers: Actors at most (default: the cluster's CPUs).
        opts: How actors reach ``s3://`` objects.
        timeout_s: Seconds one chunk may run; past it its actor is killed (and the files of the
            chunk tried again, alone).
        device: The actors' device (``cpu``; ``cuda`` gives each actor a GPU).
        worker_cls: The actor class (:class:`InferenceWorker` or a subclass: a test's hook).
    """

    def __init__(
        self,
        model_path: Path | str,
        workers: int | None = None,
        opts: RemoteOptions | None = None,
        timeout_s: float = 120.0,
        device: str = "cpu",
        worker_cls: type[InferenceWorker] = InferenceWorker,
    ) -> None:
        import ray

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.size = max(1, min(workers or cpus, cpus))
        self.opts = opts or RemoteOptions.from_environment()
        self.timeout_s = float(timeout_s)
        self.device = device
        self.worker_cls = worker_cls
        path = Path(model_path)
        self._model = (str(path), ray.put(path.read_bytes()))
        self._actors: list[Any] = []
        self._load: list[int] = []
        self.restarts = 0

    def _spawn(self) -> Any:
        import ray

        gpus = 1 if self.device.startswith("cuda") else 0
        cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(self.worker_cls)
        path, ref = self._model
        return cls.remote(path, ref, self.opts, self.device)

    def start(self, needed: int) -> None:
        """Start the actors (no more than ``needed``) and wait until each has its model."""
        import ray

        while len(self._actors) < min(self.size, max(1, needed)):
            self._actors.append(self._spawn())
            self._load.append(0)
        ray.get([a.ready.remote() for a in self._actors])

    def run(self, method: str, chunks: Sequence[list[Any]]) -> Iterator[list[dict[str, Any]]]:
        """``method`` (``"headers"`` or ``"classify"``) on every chunk; the results of each
        chunk, in chunk order. A file lost twice with its actor gives ``{"path", "error"}``."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        if not chunks:
            return
        self.start(len(chunks))
        todo: deque[tuple[int, list[Any], list[int], bool]] = deque(
            (i, list(c), list(range(len(c))), False) for i, c in enumerate(chunks)
        )
        parts: dict[int, dict[int, dict[str, Any]]] = {i: {} for i in range(len(chunks))}
        running: dict[Any, _Task] = {}
        next_out = 0

        def submit() -> None:
            while todo:
                k = min(range(len(self._actors)), key=lambda j: self._load[j])
                if self._load[k] >= IN_FLIGHT_PER_ACTOR:
                    return
                chunk, items, positions, retry = todo.popleft()
                ref = getattr(self._actors[k], method).remote(items)
                running[ref] = _Task(chunk, items, positions, retry, k, time.monotonic())
                self._load[k] += 1

        def lost(task: _Task, reason: str) -> None:
            if task.retry:  # a file alone, on its second try: an error
                parts[task.chunk][task.positions[0]] = {
                    "path": _location(task.items[0]),
                    "error": f"worker lost twice ({reason})",
                }
                return
            for pos, item in zip(task.positions, task.items, strict=True):
                todo.append((task.chunk, [item], [pos], True))

        def replace(k: int, reason: str) -> None:
            ray.kill(self._actors[k], no_restart=True)
            self._actors[k] = self._spawn()
            self._load[k] = 0
            self.restarts += 1
            for ref, task in list(running.items()):  # its other chunks are lost with it
                if task.actor == k:
                    del running[ref]
                    lost(task, reason)

        while running or todo:
            submit()
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            if not ready:
                now = time.monotonic()
                late = {t.actor for t in running.values() if now - t.started > self.timeout_s}
                for k in late:
                    log.warning("a worker ran past %.0f s: replaced", self.timeout_s)
                    replace(k, f"timed out after {self.timeout_s:g} s")
                continue
            task = running.pop(ready[0])
            self._load[task.actor] -= 1
            for other in running.values():  # the actor's next chunk starts now
                if other.actor == task.actor:
                    other.started = max(other.started, time.monotonic())
            try:
                results = ray.get(ready[0])
            except RayActorError as exc:  # the actor died: a crash, an abort, out of memory
                log.warning("a worker died (%s): replaced", type(exc).__name__)
                running[ready[0]] = task  # lost with the others of its actor
                self._load[task.actor] += 1
                replace(task.actor, "the worker died")
                continue
            except RayTaskError as exc:  # raised in the worker, which lives on
                reason = f"{type(exc.cause).__name__}: {exc.cause}" if exc.cause else str(exc)
                results = [{"path": _location(i), "error": reason} for i in task.items]
            parts[task.chunk].update(zip(task.positions, results, strict=True))
            while next_out < len(chunks) and len(parts[next_out]) == len(chunks[next_out]):
                done = parts.pop(next_out)
                yield [done[i] for i in range(len(chunks[next_out]))]
                next_out += 1
        while next_out < len(chunks):  # the last chunks may end in errors, not results
            done = parts.pop(next_out)
            yield [done[i] for i in range(len(chunks[next_out]))]
            next_out += 1

    def close(self) -> None:
        """Stop the actors."""
        import ray

        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors.clear()

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _location(item: Any) -> str:
    """The location of a work item (a ``(location, ...)`` tuple, or a retried ``(item, pos)``)."""
    while isinstance(item, tuple):
        item = item[0]
    return str(item)
