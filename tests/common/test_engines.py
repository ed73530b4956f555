"""Execution engines: the local process pool and Ray Data give the same catalog, store and
predictions.

The Ray tests start one local Ray instance (2 CPUs, no dashboard) for the whole module and shut
it down at the end; they are marked slow because starting Ray and its first workers costs
≈ 15 s here. They are skipped only when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import operator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermodal.catalog import build_catalog, errors_path, read_catalog, summary_path
from hypermodal.common.engines import EngineError, LocalEngine, engine_scope, get_engine
from hypermodal.labels import ClassVocabulary
from hypermodal.preprocess import PreprocessConfig
from hypermodal.split import SplitPlan, apply_split
from hypermodal.store import ERRORS_FILE, IMAGES_FILE, MANIFEST_FILE, META_FILE, build_store
from tests.helpers import SPLIT, interrupt_after

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="ray is not installed (pip install 'hypermodal[cluster]')"
)


# ------------------------------------------------------------------------------ local engine
def test_local_engine_map_keeps_order_and_unordered_gives_positions():
    items = [-5, 3, -1, 8, -2, 0, 7]
    for workers in (1, 2):
        with LocalEngine(workers, max_in_flight=2) as engine:
            assert list(engine.map(abs, items)) == [abs(x) for x in items]
            got = dict(engine.map_unordered(abs, items))
            assert got == {i: abs(x) for i, x in enumerate(items)}
            assert list(engine.map(abs, [])) == [] and list(engine.map_unordered(abs, [])) == []


def test_local_engine_stops_early_and_reports_worker_errors():
    with LocalEngine(2, max_in_flight=2) as engine:
        it = engine.map(abs, list(range(-20, 0)))
        assert next(it) == 20
        it.close()  # the consumer stops: pending work is cancelled, nothing hangs
        with pytest.raises(TypeError):
            list(engine.map(abs, ["not a number", "nor this"]))
        with pytest.raises(TypeError):
            list(engine.map_unordered(operator.neg, ["x", "y"]))


def test_get_engine_names_and_errors(monkeypatch):
    assert get_engine("local", workers=3).workers == 3
    assert get_engine("LOCAL").name == "local"
    with pytest.raises(EngineError, match="unknown engine"):
        get_engine("spark")
    with pytest.raises(EngineError, match="--engine ray"):
        get_engine("local", address="auto")
    borrowed = LocalEngine(1)
    with engine_scope(borrowed) as engine:
        assert engine is borrowed
    if HAS_RAY:
        import ray

        if not ray.is_initialized():

            def no_cluster(*args, **kwargs):
                raise ConnectionError("Could not find any running Ray instance.")

            with monkeypatch.context() as m:
                m.setattr(ray, "init", no_cluster)
                with pytest.raises(EngineError, match="cannot join the Ray cluster at 'auto'"):
                    get_engine("ray", address="auto")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(EngineError, match=r"hypermodal\[cluster\]"):
        get_engine("ray")


def test_unknown_engine_is_a_clean_cli_error(real_corpus, tmp_path):
    from typer.testing import CliRunner

    from hypermodal.cli import app

    root, _ = real_corpus
    args = ["catalog", str(root), "--out", str(tmp_path / "c.parquet"), "--engine", "spark"]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 2 and "unknown engine" in result.output


class ReturningEngine(LocalEngine):
    """A process pool that behaves like a cluster: workers return pixels, the driver writes."""

    shares_filesystem = False


def test_store_written_by_the_driver_matches_workers_writing_the_memmap(selected, tmp_path):
    """The path Ray takes (pixels returned, written by the driver), without needing Ray."""
    df, plan = selected
    kwargs = dict(
        vocabulary=ClassVocabulary(),
        preprocess=PreprocessConfig(size=24),
        split_hash=plan.hash,
        chunk_images=5,
        progress=False,
    )
    build_store(df, tmp_path / "memmap", workers=2, **kwargs)
    with ReturningEngine(2) as engine:
        summary = build_store(df, tmp_path / "driver", engine=engine, **kwargs)
    assert summary.workers == 2 and summary.images_failed == 0
    _assert_same_store(tmp_path / "memmap", tmp_path / "driver")


# ---------------------------------------------------------------------------------- ray engine
@pytest.fixture(scope="module")
def ray_engine():
    if not HAS_RAY:
        pytest.skip("ray is not installed (pip install 'hypermodal[cluster]')")
    from hypermodal.common.engines import RayEngine

    engine = RayEngine(workers=2)  # a private local instance: ray.init(num_cpus=2, ...)
    yield engine
    engine.close()
    import ray

    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def selected(real_corpus, tmp_path_factory):
    root, _ = real_corpus
    out = tmp_path_factory.mktemp("engines-cat") / "catalog.parquet"
    build_catalog([root], out, workers=1, progress=False)
    plan = SplitPlan(assignments=SPLIT, method="file")
    return apply_split(read_catalog(out), plan), plan


@needs_ray
@pytest.mark.slow
def test_ray_engine_map_keeps_order(ray_engine):
    items = list(range(-12, 12))
    assert ray_engine.workers == 2
    assert list(ray_engine.map(abs, items)) == [abs(x) for x in items]
    got = dict(ray_engine.map_unordered(abs, items))
    assert got == {i: abs(x) for i, x in enumerate(items)}
    assert list(ray_engine.map(abs, [])) == []


@needs_ray
@pytest.mark.slow
def test_catalog_on_ray_matches_process_pool(real_corpus, ray_engine, tmp_path):
    root, _ = real_corpus
    local = build_catalog([root], tmp_path / "l.parquet", workers=2, chunk_files=3, progress=False)
    ray_s = build_catalog(
        [root], tmp_path / "r.parquet", chunk_files=3, progress=False, engine=ray_engine
    )
    pd.testing.assert_frame_equal(
        read_catalog(tmp_path / "l.parquet"), read_catalog(tmp_path / "r.parquet"), check_exact=True
    )
    assert errors_path(tmp_path / "l.parquet").read_text() == (
        errors_path(tmp_path / "r.parquet").read_text()
    )
    a, b = local.to_dict(), ray_s.to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    meta = json.loads(summary_path(tmp_path / "r.parquet").read_text())
    assert meta["summary"]["files_skipped"] == 3
    assert not (tmp_path / "r.parquet.parts").exists()


def _assert_same_store(a: Path, b: Path) -> None:
    assert (a / IMAGES_FILE).read_bytes() == (b / IMAGES_FILE).read_bytes()  # byte for byte
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / MANIFEST_FILE), pd.read_parquet(b / MANIFEST_FILE), check_exact=True
    )
    assert (a / ERRORS_FILE).read_text() == (b / ERRORS_FILE).read_text()
    ma, mb = (json.loads((p / META_FILE).read_text()) for p in (a, b))
    for m in (ma, mb):
        for key in ("seconds", "images_per_second", "workers", "resumed_chunks"):
            m["summary"].pop(key)
    assert ma == mb


@needs_ray
@pytest.mark.slow
def test_store_on_ray_matches_process_pool_byte_for_byte(selected, ray_engine, tmp_path):
    df, plan = selected
    df = df.copy()
    # one file broken after cataloguing: its rows fail (zeros + errors) on both engines alike
    broken = tmp_path / "broken.dcm"
    emri = df[df.dataset == "emri"]["path"].iloc[0]
    broken.write_bytes(Path(emri).read_bytes()[:5000])
    df.loc[df.dataset == "emri", "path"] = str(broken)
    kwargs = dict(
        vocabulary=ClassVocabulary(),
        preprocess=PreprocessConfig(size=48),
        split_hash=plan.hash,
        chunk_images=4,
        progress=False,
    )
    local = build_store(df, tmp_path / "local", workers=2, **kwargs)
    on_ray = build_store(df, tmp_path / "ray", engine=ray_engine, **kwargs)
    assert on_ray.images_failed == local.images_failed == 10 and on_ray.reconciles()
    assert on_ray.workers == 2
    _assert_same_store(tmp_path / "local", tmp_path / "ray")
    assert (tmp_path / "ray" / IMAGES_FILE).stat().st_size > 0
    assert not (tmp_path / "ray" / "journal").exists()


@needs_ray
@pytest.mark.slow
def test_store_interrupted_locally_resumes_on_ray(selected, ray_engine, tmp_path):
    df, _ = selected
    kwargs = dict(
        vocabulary=ClassVocabulary(),
        preprocess=PreprocessConfig(size=32),
        chunk_images=8,
        progress=False,
    )
    build_store(df, tmp_path / "clean", workers=1, **kwargs)

    dying = interrupt_after(2)  # interrupted after the second chunk is journaled
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_store(df, out, workers=1, on_chunk=dying, **kwargs)
    # garbage in an unfinished chunk's rows must be overwritten by the resumed build
    arr = np.memmap(out / IMAGES_FILE, dtype=np.uint8, mode="r+")
    arr[-32 * 32 :] = 7
    arr.flush()
    del arr
    summary = build_store(df, out, engine=ray_engine, **kwargs)
    assert summary.resumed_chunks == 2
    _assert_same_store(tmp_path / "clean", out)


@needs_ray
@pytest.mark.slow
def test_predict_on_ray_matches_process_pool(real_corpus, tiny_checkpoint, ray_engine, tmp_path):
    from hypermodal.inference import predict

    root, _ = real_corpus
    runs = {}
    for name, engine in (("local", "local"), ("ray", ray_engine)):
        out = tmp_path / f"{name}-series.parquet"
        images = tmp_path / f"{name}.parquet"
        s = predict(
            [root],
            tiny_checkpoint,
            out,
            images_out=images,
            batch_size=5,
            workers=2,
            device="cpu",
            progress=False,
            engine=engine,
        )
        runs[name] = (s, pd.read_parquet(images), pd.read_parquet(out), out)
    (sl, tl, serl, outl), (sr, tr, serr, outr) = runs["local"], runs["ray"]
    assert len(tl) > 10 and len(serl) > 5 and sr.files_skipped == sl.files_skipped > 0
    pd.testing.assert_frame_equal(tl, tr, check_exact=True)
    pd.testing.assert_frame_equal(serl, serr, check_exact=True)
    err = lambda p: p.with_name(p.name + ".errors.jsonl").read_text()  # noqa: E731
    assert err(outl) == err(outr)
    assert (sl.files_seen, sl.images, sl.series) == (sr.files_seen, sr.images, sr.series)


@needs_ray
@pytest.mark.slow
def test_cli_store_and_predict_with_engine_ray(
    real_corpus, selected, tiny_checkpoint, ray_engine, tmp_path
):
    """``--engine ray`` reaches the stages (Ray is already up in this process, so it is reused)."""
    from typer.testing import CliRunner

    from hypermodal.cli import app

    root, _ = real_corpus
    runner = CliRunner()
    cat = tmp_path / "catalog.parquet"
    r = runner.invoke(
        app, ["catalog", str(root), "--out", str(cat), "--engine", "ray", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    _, plan = selected
    plan.save(tmp_path / "split.json")
    store = tmp_path / "store"
    args = ["store", str(cat), "--split", str(tmp_path / "split.json"), "--out", str(store)]
    r = runner.invoke(app, [*args, "--size", "32", "--engine", "ray", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images_failed"] == 0
    out = tmp_path / "pred.csv"
    args = ["predict", str(root / "emri"), "--model", str(tiny_checkpoint), "--out", str(out)]
    r = runner.invoke(app, [*args, "--engine", "ray", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    (row,) = pd.read_csv(out).to_dict("records")  # one series of 10 frames, 8 decoded
    assert (row["num_images"], row["images_decoded"]) == (10, 8)
