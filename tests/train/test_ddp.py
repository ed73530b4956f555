"""Data-parallel training: rank sharding, and two-process Gloo DDP on the CPU under torchrun.

The end-to-end test launches ``torchrun --standalone --nproc_per_node 2 -m hypermodal.cli train``
on a tiny synthetic store and compares its per-epoch losses with a one-process run of the same
global batch; it also resumes the DDP run and checks that only rank 0 wrote files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hypermodal.inference import read_checkpoint
from hypermodal.labels import ClassVocabulary
from hypermodal.store import SliceStore, write_store_arrays
from hypermodal.store.loader import BatchFeeder, shard_rows
from hypermodal.train import (
    TrainConfig,
    effective_lr,
    train,
    train_one_epoch,
    validate,
)
from hypermodal.train.distributed import init_distributed, loss_weight
from tests.helpers import REPO, make_store

# one-process reference: global batch 64; DDP: 2 ranks × 32
GLOBAL_BATCH = 64
RECIPE = {"epochs": 3, "lr": 0.005, "seed": 3, "device": "cpu", "workers": 0}
# ResNet-18's BatchNorm normalises each rank's 32 images on their own (SyncBatchNorm is
# CUDA-only), so a DDP run is not bit-identical to one process with batch 64; measured here:
# |Δ loss| ≤ 0.09 per epoch. The BN-free test below checks the rest to 1e-5.
LOSS_ATOL, LOSS_RTOL = 0.15, 0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------- sharding


def test_rank_shards_of_each_step_are_the_one_process_batch() -> None:
    labels = np.zeros(1000, dtype=np.int64)
    rows = np.arange(3, 3 + 203)  # 203 = 6 global batches of 32 + 11
    one = BatchFeeder(
        np.zeros((1, 1, 1), np.uint8), labels, rows, 32, shuffle=True, seed=5, drop_singleton=True
    )
    ranks = [
        BatchFeeder(
            np.zeros((1, 1, 1), np.uint8),
            labels,
            rows,
            16,
            shuffle=True,
            seed=5,
            drop_singleton=True,
            rank=r,
            world_size=2,
        )
        for r in range(2)
    ]
    for epoch in (0, 1):
        plan = one.plan(epoch)
        parts = [f.plan(epoch) for f in ranks]
        assert len(plan) == len(parts[0]) == len(parts[1]) == len(one) == len(ranks[0]) == 7
        for step, batch in enumerate(plan):
            a, b = parts[0][step], parts[1][step]
            assert not set(a) & set(b)
            np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), batch)
            assert abs(len(a) - len(b)) <= 1
        assert ranks[0].global_sizes(epoch) == [len(b) for b in plan]
    assert ranks[0].num_images() == one.num_images() == 203


def test_trailing_batch_too_small_for_every_rank_is_dropped() -> None:
    labels = np.zeros(100, dtype=np.int64)
    kw = {"shuffle": True, "drop_singleton": True}
    img = np.zeros((1, 1, 1), np.uint8)
    # 35 = 32 + 3: 3 images cannot give each of 2 ranks two images
    two = BatchFeeder(img, labels, np.arange(35), 16, rank=1, world_size=2, **kw)
    assert two.num_images() == 32 and len(two) == 1 and len(two.plan(0)) == 1
    four = BatchFeeder(img, labels, np.arange(36), 16, rank=0, world_size=2, **kw)
    assert four.num_images() == 36 and len(four.plan(0)) == 2 and len(four.plan(0)[1]) == 2
    one = BatchFeeder(img, labels, np.arange(33), 32, **kw)  # the one-process rule is unchanged
    assert one.num_images() == 32 and len(one) == 1
    with pytest.raises(ValueError):
        BatchFeeder(img, labels, np.arange(4), 2, rank=2, world_size=2, **kw)


def test_shards_loss_weights_and_lr_scaling() -> None:
    batch = np.arange(11)
    assert [len(shard_rows(batch, r, 3)) for r in range(3)] == [4, 4, 3]
    np.testing.assert_array_equal(shard_rows(batch, 0, 1), batch)
    # weights make DDP's average of per-rank means equal the global mean
    sizes, means = [4, 4, 3], [1.0, 2.0, 3.0]
    ddp = np.mean([loss_weight(n, 11, 3) * m for n, m in zip(sizes, means, strict=True)])
    assert ddp == pytest.approx(sum(n * m for n, m in zip(sizes, means, strict=True)) / 11)
    assert loss_weight(5, 5, 1) == 1.0
    assert effective_lr(TrainConfig(batch_size=128)) == pytest.approx(0.1)
    linear = TrainConfig(batch_size=256, lr_scaling="linear", warmup_epochs=2)
    assert effective_lr(linear, world_size=4) == pytest.approx(0.1 * 1024 / 128)
    with pytest.raises(ValueError):
        TrainConfig(lr_scaling="sqrt")


def test_no_torchrun_environment_means_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main, ctx.backend) == (
        0,
        1,
        False,
        True,
        None,
    )
    t = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert ctx.all_reduce_sum(t) is t
    ctx.barrier()
    ctx.close()


def test_warmup_ramps_the_learning_rate(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", n_per_class=(8, 2, 0))
    cfg = TrainConfig(
        epochs=2,
        batch_size=8,
        lr=0.04,
        device="cpu",
        warmup_epochs=1,
        lr_scaling="linear",
        base_batch_size=16,
    )
    summary = train(store.path, tmp_path / "run", cfg, progress=False)
    lrs = [row["lr"] for row in summary["history"]]
    # 32 images / 8 = 4 steps; warm-up starts at 1/4 of 0.04 × 8/16 and reaches it at epoch 2
    assert lrs == pytest.approx([0.02 / 4, 0.02])


# ------------------------------------------------- exact equivalence without BatchNorm (spawn)


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 4),
    )  # fmt: skip


def _noisy_data(n: int = 203, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 256, (n, size, size)).astype(np.uint8)
    images[:, : size // 2] //= (labels[:, None, None] + 1).astype(np.uint8)
    return images, labels


def _steps(rank: int, world: int, per_rank: int, reduce: object = None) -> tuple:
    images, labels = _noisy_data()
    net = _tiny_net()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_net: nn.Module = DistributedDataParallel(net)
    else:
        step_net = net
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    kw = {"shuffle": True, "seed": 2, "drop_singleton": True, "rank": rank, "world_size": world}
    feed = BatchFeeder(images, labels, np.arange(len(labels)), per_rank, **kw)  # type: ignore
    losses = []
    for epoch in range(2):
        tr = train_one_epoch(
            step_net, feed.epoch(epoch), opt, torch.device("cpu"),
            global_sizes=feed.global_sizes(epoch) if world > 1 else None,
            world_size=world, reduce=reduce,  # type: ignore[arg-type]
        )  # fmt: skip
        losses.append(tr["loss"])
    val = BatchFeeder(images, labels, np.arange(57), 16, shuffle=False, rank=rank, world_size=world)
    va = validate(net, val.epoch(0), torch.device("cpu"), reduce=reduce)  # type: ignore[arg-type]
    params = torch.cat([p.detach().flatten() for p in net.parameters()])
    return losses, va, tr["images"], params


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=120)
    try:
        assert ctx.enabled and ctx.backend == "gloo" and ctx.rank == rank
        result = _steps(rank, world, 16, reduce=ctx.all_reduce_sum)
        torch.save({"result": result}, f"{out}/rank{rank}.pt")
    finally:
        ctx.close()


@pytest.mark.slow
def test_ddp_steps_equal_one_process_steps_exactly_without_batchnorm(tmp_path: Path) -> None:
    """Sharding, loss weights (203 images: last global batch 11 = 6 + 5), gradient averaging
    and the reduction of metrics reproduce a one-process run with the global batch."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ref_losses, ref_val, ref_images, ref_params = _steps(0, 1, 32)
    for rank in range(2):
        losses, va, images, params = torch.load(tmp_path / f"rank{rank}.pt")["result"]
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
        assert images == ref_images == 203
        assert va["images"] == ref_val["images"] == 57
        assert va["loss"] == pytest.approx(ref_val["loss"], rel=1e-5)
        assert va["accuracy"] == pytest.approx(ref_val["accuracy"])
        torch.testing.assert_close(params, ref_params, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- torchrun, gloo


def _noisy_store(path: Path, n_train: int = 64, n_val: int = 16, size: int = 32) -> SliceStore:
    """Weak class patterns under strong noise, so the loss does not collapse in one epoch."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    patterns = [
        np.sin(yy / 1.5) > 0,
        np.sin(xx / 1.5) > 0,
        np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (size * 2)) > 0.5,
        (xx + yy) / (2 * size) > 0.5,
    ]
    classes = ("CT", "MR", "PT", "XR")
    images, rows = [], []
    for split, n in (("train", n_train), ("validate", n_val)):
        for k, label in enumerate(classes):
            for i in range(n):
                img = patterns[k] * 0.3 + rng.normal(0.35, 0.25, (size, size))
                images.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
                rows.append({"dataset": f"ds-{i % 2}", "label": label, "split": split})
    return write_store_arrays(path, np.stack(images), pd.DataFrame(rows), ClassVocabulary())


def _torchrun(store: SliceStore, out: Path, config: Path, *extra: str) -> dict:
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
        "-m", "hypermodal.cli", "train", str(store.path), "--out", str(out),
        "--config", str(config), "--no-progress", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[:6000]
    return {"stdout": done.stdout, "stderr": done.stderr}


def _history(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "history.csv")


def _writer_pids(out: Path) -> set[str]:
    """Processes that wrote TensorBoard events (``events.out.tfevents.TIME.HOST.PID.N``)."""
    return {p.name.split(".")[-2] for p in (out / "tensorboard").rglob("events.out.tfevents.*")}


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process_and_resumes(tmp_path: Path) -> None:
    store = _noisy_store(tmp_path / "store")  # 256 train, 64 validate
    torch.set_num_threads(1)
    single = train(
        store.path,
        tmp_path / "single",
        TrainConfig(batch_size=GLOBAL_BATCH, **RECIPE),  # type: ignore[arg-type]
        progress=False,
    )
    ref = pd.DataFrame(single["history"])

    cfg = tmp_path / "ddp.json"
    cfg.write_text(json.dumps({**RECIPE, "epochs": 2, "batch_size": GLOBAL_BATCH // 2}))
    out = tmp_path / "ddp"
    _torchrun(store, out, cfg)
    first = _history(out)
    assert list(first["epoch"]) == [1, 2]
    # only rank 0 wrote: one TensorBoard writer, one history row per epoch, no stray files
    assert len(_writer_pids(out)) == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    info = json.loads((out / "config.json").read_text())
    assert info["config"]["world_size"] == 2 and info["config"]["global_batch_size"] == 64
    assert info["config"]["backend"] == "gloo"

    # resumed with evidence: fitted after the last epoch by rank 0 while rank 1 waits
    _torchrun(store, out, cfg, "--resume", "--epochs", "3", "--evidence", "all")
    ddp = _history(out)
    assert list(ddp["epoch"]) == [1, 2, 3]
    assert len(_writer_pids(out)) == 2  # rank 0 of the resumed run, and only it, added one
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["resolved_config"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model_state"])
    for name in ("best.pt", "last.pt"):
        evidence = read_checkpoint(out / "checkpoints" / name)["evidence"]
        assert evidence["forest"] is None  # the store has no intensity statistics
        assert evidence["fusion"]["fitted_on"]["rows"] == 64  # every validation image, once

    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(ddp[col], ref[col], rtol=LOSS_RTOL, atol=LOSS_ATOL, err_msg=col)
    for col in ("train_images", "val_images"):
        assert list(ddp[col]) == list(ref[col])
    np.testing.assert_allclose(ddp["lr"], ref["lr"])
    print("\nepoch  one-process train/val loss   2-rank DDP train/val loss")
    for (_, a), (_, b) in zip(ref.iterrows(), ddp.iterrows(), strict=True):
        print(
            f"{int(a.epoch):5d}  {a.train_loss:.6f} / {a.val_loss:.6f}   "
            f"{b.train_loss:.6f} / {b.val_loss:.6f}"
        )
