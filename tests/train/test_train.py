"""Training mechanics on tiny synthetic stores (32×32, class-dependent patterns).

Synthetic data checks the machinery only (loss falls, resume is exact, checkpoints are complete);
it says nothing about accuracy on real images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hypermodal.inference import load_model, predict_proba, read_checkpoint, to_model_input
from hypermodal.store import SliceStore
from hypermodal.store.loader import BatchFeeder, batch_plan, epoch_order
from hypermodal.train import (
    HISTORY_COLUMNS,
    CheckpointError,
    ResumeError,
    TrainConfig,
    train,
    validate,
)
from tests.helpers import CLASSES, make_store

TIME_COLUMNS = {"train_seconds", "val_seconds", "seconds", "elapsed_seconds", "images_per_s"}


def quick(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"epochs": 3, "batch_size": 16, "lr": 0.02, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SliceStore:
    return make_store(tmp_path_factory.mktemp("store") / "s")


@pytest.fixture(scope="module")
def trained(store: SliceStore, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("run")
    summary = train(store.path, out, quick(epochs=3, batch_size=32, keep_epochs=2), progress=False)
    return {"out": out, "summary": summary}


# ------------------------------------------------------------------------------ config


def test_config_defaults_are_the_paper_recipe() -> None:
    c = TrainConfig()
    assert (c.model, c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs, c.seed) == (
        "resnet18",
        0.1,
        0.9,
        0.005,
        128,
        10,
        0,
    )
    assert c.plateau_factor == 0.1 and not c.balance and c.max_images_per_epoch is None


def test_config_round_trip_and_validation() -> None:
    c = TrainConfig(model="vgg16", train_size=112, workers=2)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="resnet18"):
        TrainConfig(model="alexnet")
    with pytest.raises(ValueError):
        TrainConfig(amp="int8")


# -------------------------------------------------------------------------------- data


def test_epoch_order_is_seeded_by_seed_and_epoch() -> None:
    rows = np.arange(100)
    labels = np.zeros(100, dtype=np.int64)
    a = epoch_order(rows, labels, epoch=3, seed=1)
    assert np.array_equal(a, epoch_order(rows, labels, epoch=3, seed=1))
    assert not np.array_equal(a, epoch_order(rows, labels, epoch=4, seed=1))
    assert not np.array_equal(a, epoch_order(rows, labels, epoch=3, seed=2))
    assert sorted(a) == list(rows)
    assert len(epoch_order(rows, labels, 0, 0, max_images=10)) == 10
    assert np.array_equal(epoch_order(rows, labels, 0, 0, shuffle=False), rows)


def test_balanced_sampling_evens_out_classes() -> None:
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    order = epoch_order(np.arange(1000), labels, epoch=0, seed=0, balance=True)
    counts = np.bincount(labels[order], minlength=3)
    assert len(order) == 1000
    assert np.all(np.abs(counts - 333) < 60), counts


def test_batches_sorted_and_singleton_dropped() -> None:
    order = np.array([5, 1, 9, 3, 7])
    plan = batch_plan(order, 2, drop_singleton=True)
    assert [b.tolist() for b in plan] == [[1, 5], [3, 9]]
    assert len(batch_plan(order, 2)) == 3


def test_feeder_reads_uint8_and_workers_give_same_batches(store: SliceStore) -> None:
    rows = store.rows("train")
    kwargs = {"shuffle": True, "seed": 5}
    f0 = BatchFeeder(store.images, store.labels(), rows, 16, workers=0, **kwargs)
    f1 = BatchFeeder(store.images, store.labels(), rows, 16, workers=1, **kwargs)
    b0, b1 = list(f0.epoch(2)), list(f1.epoch(2))
    assert len(b0) == len(f0) == len(b1)
    for (x0, y0, r0), (x1, y1, r1) in zip(b0, b1, strict=True):
        assert x0.dtype == torch.uint8 and x0.shape[1:] == (32, 32)
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(r0, r1)
        assert torch.equal(x0, torch.from_numpy(store.images[r0.numpy()]))
        assert torch.equal(y0, torch.from_numpy(store.labels()[r0.numpy()]))
    seen = np.concatenate([r.numpy() for _, _, r in b0])
    assert sorted(seen) == sorted(rows)


def test_to_model_input_scales_and_resizes() -> None:
    batch = torch.full((2, 40, 40), 255, dtype=torch.uint8)
    x = to_model_input(batch, "cpu")
    assert x.shape == (2, 1, 40, 40) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))
    y = to_model_input(batch.numpy(), "cpu", train_size=32)
    assert y.shape == (2, 1, 32, 32) and torch.allclose(y, torch.ones_like(y), atol=1e-6)
    with pytest.raises(TypeError):
        to_model_input(batch.float(), "cpu")


# ------------------------------------------------------------------------------- train


def test_training_loss_falls_and_outputs_are_written(trained: dict, store: SliceStore) -> None:
    out: Path = trained["out"]
    summary = trained["summary"]
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == list(HISTORY_COLUMNS)
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_loss"].notna().all() and (hist["images_per_s"] > 0).all()
    assert summary["completed_epochs"] == 3 and summary["best_metric"] == "val_loss"
    assert summary["best_epoch"] == int(hist["val_loss"].idxmin()) + 1
    for name in ("last.pt", "best.pt", "epoch-002.pt", "epoch-003.pt"):
        assert (out / "checkpoints" / name).is_file(), name
    assert not (out / "checkpoints" / "epoch-001.pt").exists()  # keep_epochs=2
    assert any((out / "tensorboard").iterdir())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["split_hash"] == store.split_hash
    assert cfg["config"]["device"] == "cpu" and cfg["config"]["train_size"] == 32
    assert cfg["vocabulary"]["classes"] == list(CLASSES)
    assert "torch" in cfg["versions"]


def test_checkpoint_loads_weights_only_with_everything_inside(
    trained: dict, store: SliceStore
) -> None:
    for name in ("last.pt", "best.pt"):
        data = torch.load(trained["out"] / "checkpoints" / name, weights_only=True)
        assert data["vocabulary"]["classes"] == list(CLASSES)
        assert data["preprocess"] == store.preprocess.to_dict()
        assert data["split_hash"] == store.split_hash
        assert data["train_size"] == 32 and data["model_name"] == "resnet18"
        assert data["versions"]["torch"] and data["versions"]["python"]
        assert data["config"]["lr"] == 0.02
        assert len(data["history"]) == data["epoch"]
    last = torch.load(trained["out"] / "checkpoints" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"} <= set(last["training_state"])
    best = torch.load(trained["out"] / "checkpoints" / "best.pt", weights_only=True)
    assert "training_state" not in best
    assert best["epoch"] == trained["summary"]["best_epoch"]


def test_validation_runs_in_eval_mode_without_touching_batchnorm(store: SliceStore) -> None:
    torch.manual_seed(0)
    from hypermodal.models import build_model

    model = build_model("resnet18", 4)
    model.train()
    state = model.state_dict()
    buffers = {k: v.clone() for k, v in state.items() if "running" in k or "num_batches" in k}
    modes: list[bool] = []
    model.bn1.register_forward_hook(lambda m, i, o: modes.append(m.training))
    feed = BatchFeeder(store.images, store.labels(), store.rows("validate"), 8, shuffle=False)
    result = validate(model, feed.epoch(0), torch.device("cpu"))
    assert modes and not any(modes)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        if k in buffers:
            assert torch.equal(v, buffers[k]), k
    assert result["images"] == len(store.rows("validate"))
    assert 0.0 <= result["accuracy"] <= 1.0


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", n_per_class=(8, 2, 2))
    config = quick(epochs=3, batch_size=16)
    full = train(store.path, tmp_path / "full", config, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_first(row: dict) -> None:
        if row["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(store.path, tmp_path / "cut", config, progress=False, on_epoch_end=stop_after_first)
    assert len(pd.read_csv(tmp_path / "cut" / "history.csv")) == 1
    resumed = train(store.path, tmp_path / "cut", None, resume=True, progress=False)
    assert resumed["resumed_from_epoch"] == 1

    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    ha = pd.read_csv(tmp_path / "full" / "history.csv").drop(columns=list(TIME_COLUMNS))
    hb = pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns=list(TIME_COLUMNS))
    assert hb["epoch"].tolist() == [1, 2, 3]  # no duplicated rows
    pd.testing.assert_frame_equal(ha, hb, rtol=1e-5)
    assert full["best_epoch"] == resumed["best_epoch"]
    # resuming a finished run is a no-op that returns the same history
    again = train(store.path, tmp_path / "cut", None, resume=True, progress=False)
    assert again["completed_epochs"] == 3


def test_resume_refused_when_split_hash_changed(trained: dict, tmp_path: Path) -> None:
    other = make_store(tmp_path / "other", dataset_prefix="renamed")
    assert (
        other.split_hash
        != read_checkpoint(trained["out"] / "checkpoints" / "last.pt")["split_hash"]
    )
    with pytest.raises(ResumeError, match="split hash"):
        train(other.path, trained["out"], None, resume=True, progress=False)


def test_resume_refused_with_a_different_recipe_and_fresh_run_protects_folder(
    trained: dict, store: SliceStore
) -> None:
    with pytest.raises(ResumeError, match="lr"):
        train(store.path, trained["out"], quick(epochs=3, lr=0.5), resume=True, progress=False)
    with pytest.raises(FileExistsError):
        train(store.path, trained["out"], quick(), progress=False)


def test_empty_validation_split_uses_train_loss(tmp_path: Path) -> None:
    s = make_store(tmp_path / "noval", n_per_class=(8, 0, 4))
    summary = train(s.path, tmp_path / "run", quick(epochs=2), progress=False)
    assert summary["best_metric"] == "train_loss"
    assert any("validation split is empty" in n for n in summary["notes"])
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert hist["val_loss"].isna().all() and hist["train_loss"].notna().all()
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert any("TRAINING loss" in n for n in cfg["notes"])


def test_train_size_balance_and_cap_are_used_and_stored(tmp_path: Path) -> None:
    s = make_store(tmp_path / "s40", n_per_class=(12, 2, 2), size=40)
    cfg = quick(epochs=1, train_size=32, balance=True, max_images_per_epoch=20)
    summary = train(s.path, tmp_path / "run", cfg, progress=False)
    assert summary["final"]["train_images"] == 20
    loaded = load_model(tmp_path / "run" / "checkpoints" / "last.pt")
    assert loaded.train_size == 32 and loaded.preprocess.size == 40
    probs = predict_proba(loaded, s.images[:3])
    assert probs.shape == (3, 4)
    # the same path by hand: /255, antialiased resize to 32, eval mode, softmax
    x = torch.nn.functional.interpolate(
        torch.from_numpy(np.array(s.images[:3])).float().div(255).unsqueeze(1),
        size=(32, 32),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    with torch.no_grad():
        expected = torch.softmax(loaded.model(x), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="40×40"):
        predict_proba(loaded, np.zeros((1, 32, 32), np.uint8))


def test_load_model_and_predict_proba(trained: dict, store: SliceStore) -> None:
    loaded = load_model(trained["out"] / "checkpoints" / "best.pt")
    assert not loaded.model.training
    assert loaded.classes == CLASSES
    assert loaded.meta["split_hash"] == store.split_hash
    probs = predict_proba(loaded, store.images[store.rows("test")])
    assert probs.shape == (len(store.rows("test")), 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()
    assert predict_proba(loaded, store.images[0]).shape == (1, 4)
    assert predict_proba(loaded, np.zeros((0, 32, 32), np.uint8)).shape == (0, 4)


class _NotAllowed:
    pass


def test_bad_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not a hypermodal checkpoint"):
        load_model(foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": _NotAllowed()}, unsafe)
    with pytest.raises(CheckpointError, match="tensors and plain values"):
        load_model(unsafe)


def test_truncated_checkpoint_is_reported(trained: dict, tmp_path: Path) -> None:
    data = (trained["out"] / "checkpoints" / "best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(cut)
