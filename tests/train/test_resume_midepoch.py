"""Step-level checkpoints: a run interrupted in the middle of an epoch resumes where it stopped.

An epoch over millions of slices lasts hours, so ``checkpoint_every_steps`` also writes
``last.pt`` every N optimisation steps. These tests interrupt runs mid-epoch (an exception from
``on_step_end``, a real process killed with SIGKILL, and two Gloo DDP ranks stopped together) and
check that the resumed run ends with the weights and history rows of an uninterrupted one.

Run as a script under ``torchrun`` (see :func:`_ddp_main`) it is the DDP worker of the slow test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hypermodal.inference import read_checkpoint
from hypermodal.store.loader import BatchFeeder
from hypermodal.train import ResumeError, TrainConfig, train
from tests.helpers import REPO, make_store

TIME_COLUMNS = ["train_seconds", "val_seconds", "seconds", "elapsed_seconds", "images_per_s"]
# 32 train images, batch 8: 4 steps per epoch; every 3 steps: checkpoints after steps 3, 6 (, 8)
RECIPE = {"epochs": 2, "batch_size": 8, "lr": 0.02, "device": "cpu", "workers": 0}


class Interrupt(Exception):
    pass


def _stop_at(global_step: int):  # noqa: ANN202
    def hook(info: dict) -> None:
        if info["global_step"] == global_step:
            raise Interrupt(info)

    return hook


def _assert_same_run(a: Path, b: Path, exact: bool = True) -> None:
    """Final weights, optimizer state and history rows (less timings) of two run folders."""
    ca = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert ca["epoch"] == cb["epoch"] and "step_in_epoch" not in cb
    assert ca["model_state"].keys() == cb["model_state"].keys()
    for k, v in ca["model_state"].items():
        if exact:
            assert torch.equal(cb["model_state"][k], v), k
        else:
            torch.testing.assert_close(cb["model_state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    ma = ca["training_state"]["optimizer"]["state"]
    mb = cb["training_state"]["optimizer"]["state"]
    for k in ma:
        torch.testing.assert_close(mb[k]["momentum_buffer"], ma[k]["momentum_buffer"])
    ha = pd.read_csv(a / "history.csv").drop(columns=TIME_COLUMNS)
    hb = pd.read_csv(b / "history.csv").drop(columns=TIME_COLUMNS)
    assert hb["epoch"].tolist() == list(range(1, len(ha) + 1))  # no duplicated rows
    pd.testing.assert_frame_equal(ha, hb, rtol=1e-5 if not exact else 1e-12)
    assert [r["epoch"] for r in cb["history"]] == hb["epoch"].tolist()


# ------------------------------------------------------------------------------- feeder


class _Recording:
    """An image array that remembers which rows were read."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self.read: list[int] = []

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.read.extend(int(r) for r in np.atleast_1d(rows))
        return self.images[rows]


def test_feeder_start_batch_skips_batches_without_reading_them() -> None:
    labels = np.arange(50) % 4
    images = _Recording(np.arange(50, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2))
    feeder = BatchFeeder(images, labels, np.arange(50), 8, shuffle=True, seed=5)  # type: ignore[arg-type]
    full = [rows.numpy() for _, _, rows in feeder.epoch(2)]
    images.read.clear()
    rest = [rows.numpy() for _, _, rows in feeder.epoch(2, start_batch=4)]
    assert len(full) == 7 and len(rest) == 3
    for a, b in zip(full[4:], rest, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(images.read) == sorted(np.concatenate(full[4:]).tolist())  # skipped: unread
    assert list(feeder.epoch(2, start_batch=len(feeder))) == []
    with pytest.raises(ValueError):
        feeder.epoch(2, start_batch=-1)
    with pytest.raises(ValueError, match="checkpoint_every_steps"):
        TrainConfig(checkpoint_every_steps=0)


# ------------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("midepoch")
    store = make_store(root / "store", n_per_class=(8, 2, 2))
    # the reference writes epoch checkpoints only: step checkpoints must not change the run
    config = TrainConfig(**RECIPE, augment=True, warmup_epochs=1)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    train(store.path, root / "full", config, progress=False)
    return {"root": root, "store": store, "config": config, "seconds": time.perf_counter() - t0}


@pytest.mark.parametrize(
    ("stop_after", "saved_epoch", "saved_step"),
    [(4, 0, 3), (7, 1, 2)],  # in the warm-up epoch before its validation; in epoch 2
)
def test_interrupted_mid_epoch_resumes_to_the_uninterrupted_run(
    runs: dict, stop_after: int, saved_epoch: int, saved_step: int
) -> None:
    store, root = runs["store"], runs["root"]
    config = TrainConfig(**{**runs["config"].to_dict(), "checkpoint_every_steps": 3})
    cut = root / f"cut{stop_after}"
    with pytest.raises(Interrupt):
        train(store.path, cut, config, progress=False, on_step_end=_stop_at(stop_after))

    ckpt = read_checkpoint(cut / "checkpoints" / "last.pt")  # weights_only=True
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (saved_epoch, saved_step)
    assert len(ckpt["history"]) == saved_epoch
    mid = ckpt["training_state"]["mid_epoch"]
    assert (mid["epoch"], mid["step"], mid["steps"], mid["world_size"]) == (
        saved_epoch + 1,
        saved_step,
        4,
        1,
    )
    (rank0,) = mid["ranks"]
    assert rank0["images"] == 8 * saved_step and 0 <= rank0["correct"] <= rank0["images"]
    assert rank0["loss_sum"] > 0 and rank0["rng"]["torch"].dtype == torch.uint8
    if saved_epoch:
        assert len(pd.read_csv(cut / "history.csv")) == saved_epoch

    resumed = train(store.path, cut, None, resume=True, progress=False)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (
        saved_epoch,
        saved_step,
    )
    assert json.loads((cut / "config.json").read_text())["resumed_from_step"] == saved_step
    _assert_same_run(root / "full", cut)


def test_mid_epoch_resume_refuses_a_changed_split_or_world_size(runs: dict) -> None:
    store, root = runs["store"], runs["root"]
    config = TrainConfig(**{**runs["config"].to_dict(), "checkpoint_every_steps": 2, "epochs": 1})
    cut = root / "refuse"
    with pytest.raises(Interrupt):
        train(store.path, cut, config, progress=False, on_step_end=_stop_at(3))
    last = cut / "checkpoints" / "last.pt"
    assert read_checkpoint(last)["step_in_epoch"] == 2

    other = make_store(root / "other", n_per_class=(8, 2, 2), dataset_prefix="renamed")
    assert other.split_hash != store.split_hash
    with pytest.raises(ResumeError, match="split hash"):
        train(other.path, cut, None, resume=True, progress=False)

    ckpt = torch.load(last, weights_only=True)
    ckpt["training_state"]["mid_epoch"]["world_size"] = 2
    torch.save(ckpt, last)
    with pytest.raises(ResumeError, match="same number of processes"):
        train(store.path, cut, None, resume=True, progress=False)


# ------------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
def test_process_killed_after_a_mid_epoch_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", n_per_class=(8, 2, 2))  # 4 steps per epoch
    recipe = {**RECIPE, "augment": True}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(recipe))
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "hypermodal.cli", "train", str(store.path), "--out", str(out),
        "--config", str(cfg), "--no-progress", "--checkpoint-every-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists():  # the first last.pt is the one after step 1 of epoch 1
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no mid-epoch checkpoint in 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    ckpt = read_checkpoint(last)
    assert "step_in_epoch" in ckpt, f"killed too late: after epoch {ckpt['epoch']}"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the killed process
    try:
        config = TrainConfig(**recipe)  # type: ignore[arg-type]
        train(store.path, tmp_path / "full", config, progress=False)
        resumed = train(store.path, out, None, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed["resumed_from_step"] == ckpt["step_in_epoch"]
    _assert_same_run(tmp_path / "full", out, exact=False)


# ------------------------------------------------------------------------------- DDP, Gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
        str(Path(__file__).resolve()), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _ddp_main(store: str, out: str, config_json: str, stop_after: str) -> int:
    """One rank: train, raising on every rank after global step ``stop_after`` (0: never)."""
    config = TrainConfig.from_dict(json.loads(config_json))
    resume = (Path(out) / "checkpoints" / "last.pt").exists()
    stop = int(stop_after)
    try:
        train(
            store,
            out,
            None if resume else config,
            resume=resume,
            progress=False,
            on_step_end=_stop_at(stop) if stop else None,
        )
    except Interrupt:
        return 3
    return 0


@pytest.mark.slow
def test_two_process_gloo_ddp_resumes_mid_epoch_to_its_uninterrupted_run(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", n_per_class=(12, 2, 2))  # 48: global 16, 3 steps
    recipe = {**RECIPE, "augment": True, "checkpoint_every_steps": 2}
    config = json.dumps(recipe)
    full = _torchrun(str(store.path), str(tmp_path / "full"), config, "0")
    assert full.returncode == 0, full.stderr[-4000:]
    cut = tmp_path / "cut"
    # checkpoints after global steps 2 (epoch 1, step 2) and 4 (epoch 2, step 1); stop at 5
    stopped = _torchrun(str(store.path), str(cut), config, "5")
    assert stopped.returncode != 0
    ckpt = read_checkpoint(cut / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 1)
    ranks = ckpt["training_state"]["mid_epoch"]["ranks"]
    assert len(ranks) == 2 and [r["images"] for r in ranks] == [8, 8]
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])
    assert pd.read_csv(cut / "history.csv")["epoch"].tolist() == [1]

    resumed = _torchrun(str(store.path), str(cut), config, "0")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    info = json.loads((cut / "config.json").read_text())
    assert info["resumed_from_step"] == 1 and info["config"]["world_size"] == 2
    _assert_same_run(tmp_path / "full", cut, exact=False)


if __name__ == "__main__":
    sys.exit(_ddp_main(*sys.argv[1:]))
