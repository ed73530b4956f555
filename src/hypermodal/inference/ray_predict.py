"""``predict`` with the model on the workers (``--engine ray``), and for ``s3://`` inputs.

The steps are those of :func:`~hypermodal.inference.predict.classify` — every header first, the
files grouped into series, a sample of each series decoded (:class:`~.decoding.Sampler`, the
same rounds) — but the decoding and the model run where the files are read:

- on Ray, an :class:`~hypermodal.inference.ray_actors.ActorPool` (one model per actor, loaded
  once) reads, decodes, preprocesses and classifies chunks of files and sends back rows only
  (probabilities, intensity statistics, header values);
- on the local engine (``s3://`` inputs without Ray), the crash-isolated decoding processes read
  the objects and the model runs here, as for local files.

The driver fuses the rows and builds the tables exactly as the local path does
(:func:`~hypermodal.inference.results.finish`), in input order, so the same inputs give the
same tables whichever engine ran them (probabilities equal to float rounding: the network sees
other batches).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.engines import Engine, engine_scope
from hypermodal.common.isolation import Crashed, DecodeLimits
from hypermodal.common.progress import progress_bar
from hypermodal.common.rejects import error_record
from hypermodal.inference.decoding import Sampler
from hypermodal.inference.remote_inputs import (
    RemoteOptions,
    is_remote,
    list_inputs,
    normalise,
    remote_decode,
    remote_header_info,
)
from hypermodal.inference.sampling import (
    EmptyInputError,
    SharedValues,
    file_info,
    group_series,
)

#: files per header call
HEADER_CHUNK = 64
#: chunks per worker a round is cut into at least (so every worker has work)
CHUNKS_PER_WORKER = 4


def runs_on_workers(engine: str | Engine, inputs: Sequence[Any]) -> bool:
    """Whether :func:`classify_on_workers` classifies these inputs: Ray, or an ``s3://`` input."""
    name = engine if isinstance(engine, str) else getattr(engine, "name", "")
    return name.strip().lower() == "ray" or any(is_remote(i) for i in inputs)


class LocalRunner:
    """The local engine's decoding processes for headers and decoding (``s3://`` objects
    included), the model in this process: the interface of
    :class:`~hypermodal.inference.ray_actors.ActorPool`."""

    size: int

    def __init__(self, engine: Engine, loaded: Any, opts: RemoteOptions) -> None:
        self.engine = engine
        self.loaded = loaded
        self.opts = opts
        self.size = engine.workers

    def run(self, method: str, chunks: Sequence[list[Any]]) -> Iterator[list[dict[str, Any]]]:
        """Every file of every chunk on the engine (look-ahead across chunks), the model on
        each chunk's images here; the results of each chunk, in chunk order."""
        from hypermodal.inference.model import predict_proba

        pre = self.loaded.preprocess.to_dict()
        if method == "headers":
            fn: Any = remote_header_info
            args: list[Any] = [(loc, size, self.opts) for c in chunks for loc, size in c]
        else:
            fn = remote_decode
            args = [(loc, wanted, pre, self.opts) for c in chunks for loc, wanted in c]
        results = iter(self.engine.map(fn, args))
        for chunk in chunks:
            got = []
            for item in chunk:
                r = next(results)
                got.append(
                    {"path": str(item[0]), "error": r.reason} if isinstance(r, Crashed) else r
                )
            good = [] if method == "headers" else [r for r in got if "error" not in r]
            if good:
                batch = np.concatenate([r["images"] for r in good])
                p = np.asarray(predict_proba(self.loaded, batch))
                start = 0
                for r in good:
                    n = len(r.pop("images"))
                    r["probs"] = p[start : start + n]
                    start += n
            yield got

    def close(self) -> None:
        """Nothing of its own to release (the engine is the caller's)."""


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def _decode_chunks(
    plan: list[tuple[str, list[int] | None]], images_of: dict[str, int], cap: int, workers: int
) -> list[list[tuple[str, list[int] | None]]]:
    """A round's files in order, cut into chunks of at most ``cap`` images (fewer when that
    leaves workers idle), one file at least each."""
    total = sum(images_of[p] if w is None else len(w) for p, w in plan)
    cap = max(1, min(cap, -(-total // (workers * CHUNKS_PER_WORKER))))
    chunks: list[list[tuple[str, list[int] | None]]] = []
    current: list[tuple[str, list[int] | None]] = []
    count = 0
    for path, wanted in plan:
        current.append((path, wanted))
        count += images_of[path] if wanted is None else len(wanted)
        if count >= cap:
            chunks.append(current)
            current, count = [], 0
    if current:
        chunks.append(current)
    return chunks


def classify_on_workers(
    inputs: Sequence[Path | str],
    checkpoint: Path | str | None,
    *,
    slices: int | None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    engine: str | Engine = "ray",
    ray_address: str | None = None,
    limits: DecodeLimits | None = None,
    skip: Sequence[Path | str] = (),
    remote: RemoteOptions | None = None,
) -> Any:
    """:func:`~hypermodal.inference.predict.classify` with decoding and the model on the
    workers (Ray) or with ``s3://`` inputs read by the decoding processes (local engine).

    Returns:
        A :class:`~hypermodal.inference.predict.PredictResult`.

    Raises:
        FileNotFoundError: An input (file, folder, or ``s3://`` prefix) holds nothing.
        EmptyInputError: The inputs hold no file at all.
        ObjectStoreError: The object store cannot be listed.
    """
    from hypermodal.inference.model import load_model
    from hypermodal.inference.results import META_COLUMNS, finish
    from hypermodal.inference.summary import PredictSummary, default_model_path, model_warnings

    start = time.perf_counter()
    checkpoint = Path(checkpoint) if checkpoint is not None else default_model_path()
    opts = remote or RemoteOptions.from_environment()
    limits = limits or DecodeLimits()
    locations, sizes = list_inputs(inputs, opts, skip)
    if not locations:
        named = ", ".join(normalise(i) for i in inputs)
        raise EmptyInputError(f"no files under {named}: nothing to classify")
    name = engine if isinstance(engine, str) else engine.name
    on_ray = name.strip().lower() == "ray"
    # the driver fuses; on Ray it never runs the network, so it loads it on the CPU
    loaded = load_model(checkpoint, device="cpu" if on_ray else device)
    summary = PredictSummary(files_seen=len(locations), model=str(checkpoint), slices=slices)
    summary.warnings = model_warnings(loaded)
    errors: list[dict[str, Any]] = []
    meta_rows: list[dict[str, Any]] = []
    stats: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    with engine_scope(engine, workers=workers, address=ray_address, limits=limits) as runner:
        if on_ray:
            from hypermodal.inference.ray_actors import ActorPool

            actor_device = device if str(device).startswith("cuda") else "cpu"
            pool: Any = ActorPool(checkpoint, workers, opts, limits.timeout_s, actor_device)
        else:
            pool = LocalRunner(runner, loaded, opts)
        try:
            items = [(loc, sizes.get(loc)) for loc in locations]
            infos, failed, shared = [], [], SharedValues()
            bar = progress_bar(len(items), progress, desc="headers", unit="file")
            chunks = _chunks(items, HEADER_CHUNK)
            for chunk, results in zip(chunks, pool.run("headers", chunks), strict=True):
                bar.update(len(chunk))
                for (loc, _), rec in zip(chunk, results, strict=True):
                    if "error" in rec:
                        failed.append((loc, rec["error"]))
                    else:
                        infos.append(file_info(rec, shared))
            bar.close()
            errors += [error_record(path, "predict", reason) for path, reason in failed]
            groups = group_series(infos)
            sampler = Sampler(groups, slices, {loc: i for i, loc in enumerate(locations)})
            key_of = {f.path: s.key for s in groups for f in s.files}
            images_of = {f.path: f.images for s in groups for f in s.files}
            bar = progress_bar(0, progress, desc="predict", unit="file")
            while plan := sampler.next_round():
                bar.total = (bar.total or 0) + len(plan)
                bar.refresh()
                chunks = _decode_chunks(plan, images_of, batch_size, pool.size)
                for chunk, results in zip(chunks, pool.run("classify", chunks), strict=True):
                    bar.update(len(chunk))
                    for (path, _), item in zip(chunk, results, strict=True):
                        if "error" in item:
                            errors.append(error_record(path, "predict", item["error"]))
                            continue
                        sampler.done(key_of[path])
                        item["series"] = key_of[path]
                        summary.files_predicted += 1
                        same = {k: item.get(k) for k in META_COLUMNS if k not in ("index", "path")}
                        meta_rows += [
                            {**same, "path": path, "index": idx} for idx in item["indices"]
                        ]
                        stats.append(item["stats"])
                        probs.append(np.asarray(item["probs"], dtype=np.float32))
            bar.close()
        finally:
            pool.close()
    p = np.concatenate(probs) if probs else None
    return finish(
        loaded, meta_rows, stats, p, groups, errors, summary,
        sampled_out=len(infos) - sampler.files_tried(),
        where=", ".join(normalise(i) for i in inputs),
        start=start,
    )  # fmt: skip
