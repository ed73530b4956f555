"""Shards for object storage: export round trip (local and S3 via moto), shuffle, DDP, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.labels import ClassVocabulary
from hypermodal.store import SliceStore, write_store_arrays
from hypermodal.store.shards import (
    META_FILE,
    SHARDS_FILE,
    ShardError,
    ShardFeeder,
    ShardSet,
    export_shards,
    images_per_shard,
)

SIZE = 8
SHARD_MB = 20 * SIZE * SIZE / 2**20  # 20 images per shard


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SliceStore:
    """A store ordered by split and label, like a real one: 203 train, 41 validate, 23 test
    images, one bad (``ok`` False) image; every image is unique (its row in the first bytes)."""
    vocab = ClassVocabulary()
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 203), ("validate", 41), ("test", 23)):
        for i in range(n):
            rows.append(
                {"dataset": f"ds-{i % 3}", "label": vocab.classes[i * 4 // n], "split": split}
            )
    images = rng.integers(0, 256, (len(rows), SIZE, SIZE), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(rows)) % 256
    images[:, 0, 1] = np.arange(len(rows)) // 256
    table = pd.DataFrame(rows)
    table["ok"] = True
    table.loc[5, "ok"] = False
    path = tmp_path_factory.mktemp("store")
    return write_store_arrays(path, images, table, vocab)


@pytest.fixture(scope="module")
def shard_dir(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    summary = export_shards(store.path, out, shard_mb=SHARD_MB, seed=3)
    assert summary.images_per_shard == 20
    assert summary.images == len(store.rows())
    return out


def _check_batch(store: SliceStore, batch) -> None:
    x, y, rows = batch
    assert x.dtype.__str__() == "torch.uint8" and x.shape[1:] == (SIZE, SIZE)
    r = rows.numpy()
    np.testing.assert_array_equal(x.numpy(), store.images[r])
    np.testing.assert_array_equal(y.numpy(), store.labels()[r])


def _epoch_rows(feeder: ShardFeeder, epoch: int, start: int = 0) -> list[np.ndarray]:
    return [b[2].numpy() for b in feeder.epoch(epoch, start_batch=start)]


def test_images_per_shard():
    assert images_per_shard(224, 256) == 5349
    with pytest.raises(ValueError):
        images_per_shard(224, 0)


@pytest.mark.parametrize("split", ["train", "validate", "test"])
def test_round_trip_every_image_and_label(store, shard_dir, split):
    feeder = ShardFeeder(shard_dir, split, 16, seed=1)
    seen = []
    for batch in feeder.epoch(0):
        _check_batch(store, batch)
        seen.append(batch[2].numpy())
    seen = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(seen), store.rows(split))  # each once, bad row absent
    shards = ShardSet.open(shard_dir)
    split_shards = shards.shards[shards.shards["split"] == split]
    assert split_shards["images"].sum() == len(store.rows(split))
    assert (split_shards["images"] <= 20).all()


def test_shards_are_random_samples_of_their_split(store, shard_dir):
    shards = ShardSet.open(shard_dir)
    first = shards.samples[shards.samples["shard"] == shards.split_shards("train")[0]]
    assert first["label_index"].nunique() > 1  # not one class per shard (store is label-sorted)


@pytest.mark.slow
def test_s3_round_trip_via_moto(store, monkeypatch):
    import pyarrow.fs as pafs

    from hypermodal.cli import app
    from tests.servers.s3 import s3_server

    with s3_server() as server:
        server.client.create_bucket(Bucket="shards")
        s3 = pafs.S3FileSystem(
            endpoint_override=server.endpoint,
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        url = "s3://shards/run-1/train-set"
        export_shards(store.path, url, shard_mb=SHARD_MB, filesystem=s3)
        keys = server.client.list_objects_v2(Bucket="shards", Prefix="run-1/train-set/")
        names = {o["Key"].rsplit("/", 1)[-1] for o in keys["Contents"]}
        assert {META_FILE, SHARDS_FILE} <= names
        feeder = ShardFeeder(url, "train", 32, seed=0, filesystem=s3, threads=2)
        seen = []
        for batch in feeder.epoch(1):
            _check_batch(store, batch)
            seen.append(batch[2].numpy())
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), store.rows("train"))
        local = ShardFeeder(ShardSet.open(url, filesystem=s3), "train", 32, seed=0)
        assert [r.tolist() for r in local.plan(1)] == [r.tolist() for r in seen]
        # the command line exports to S3 too (endpoint and credentials as for any S3 client)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        cli = CliRunner().invoke(
            app,
            ["shard", str(store.path), "--out", "s3://shards/cli", "--shard-mb", "0.01"]
            + ["--endpoint-url", server.endpoint, "--no-progress"],
        )
        assert cli.exit_code == 0, cli.output
        via_cli = ShardSet.open("s3://shards/cli", filesystem=s3)
        assert len(via_cli.samples) == len(store.rows())
        # a missing shard on S3 is a clear error
        server.client.delete_object(Bucket="shards", Key="run-1/train-set/shards/train-00000.u8")
        with pytest.raises(ShardError, match="train-00000.u8 is missing"):
            list(feeder.epoch(2))


def test_shuffle_is_deterministic_and_changes_per_epoch(shard_dir):
    a = ShardFeeder(shard_dir, "train", 16, seed=7, buffer_shards=3)
    b = ShardFeeder(shard_dir, "train", 16, seed=7, buffer_shards=3)
    e0 = _epoch_rows(a, 0)
    assert [r.tolist() for r in e0] == [r.tolist() for r in _epoch_rows(b, 0)]
    assert [r.tolist() for r in e0] == [r.tolist() for r in a.plan(0)]
    e1 = np.concatenate(_epoch_rows(a, 1))
    assert not np.array_equal(np.concatenate(e0), e1)
    assert not np.array_equal(
        np.concatenate(e0),
        np.concatenate(
            _epoch_rows(ShardFeeder(shard_dir, "train", 16, seed=8, buffer_shards=3), 0)
        ),
    )
    np.testing.assert_array_equal(np.sort(np.concatenate(e0)), np.sort(e1))
    # no shuffle: shards in index order, positions in order
    plain = np.concatenate(ShardFeeder(shard_dir, "train", 16, shuffle=False).plan(0))
    shards = ShardSet.open(shard_dir)
    samples = shards.samples
    expected = samples[samples["shard"].isin(shards.split_shards("train"))].sort_values(
        ["shard", "position"]
    )
    np.testing.assert_array_equal(plain, expected["row"].to_numpy())


def test_batches_mix_shards(shard_dir):
    feeder = ShardFeeder(shard_dir, "train", 16, seed=0, buffer_shards=4)
    o = feeder.order(0)
    first = o.items[o.batch_bounds[0] : o.batch_bounds[1]]
    assert len(np.unique(first[:, 0])) >= 3  # one batch draws from several open shards


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ddp_ranks_are_disjoint_complete_and_in_step(store, shard_dir, world_size):
    feeders = [
        ShardFeeder(shard_dir, "train", 8, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    plans = [f.plan(2) for f in feeders]
    steps = {len(p) for p in plans}
    assert steps == {len(feeders[0])}  # every rank takes the same number of steps
    pieces = [np.concatenate(p) for p in plans]
    sizes = [len(p) for p in pieces]
    assert max(sizes) - min(sizes) <= 1
    everything = np.concatenate(pieces)
    assert len(everything) == len(np.unique(everything))  # disjoint
    np.testing.assert_array_equal(np.sort(everything), store.rows("train"))  # complete
    assert feeders[0].global_sizes(2) == [
        sum(len(p[s]) for p in plans) for s in range(len(plans[0]))
    ]
    assert sum(feeders[0].global_sizes(2)) == feeders[0].num_images()
    # what a rank reads is what it planned
    got = _epoch_rows(feeders[1], 2)
    assert [r.tolist() for r in got] == [r.tolist() for r in plans[1]]


def test_merge_singleton(shard_dir):
    # 202 usable train images, batch 67 -> 67, 67, 68 (a final batch of 1 is folded in)
    feeder = ShardFeeder(shard_dir, "train", 67, merge_singleton=True)
    assert [len(b) for b in feeder.plan(0)] == [67, 67, 68]
    assert [len(b) for b in ShardFeeder(shard_dir, "train", 67).plan(0)] == [67, 67, 67, 1]


def test_resume_mid_epoch_equals_uninterrupted(store, shard_dir, monkeypatch):
    feeder = ShardFeeder(shard_dir, "train", 16, seed=11, buffer_shards=2, world_size=2, rank=1)
    full = [(b[0].numpy(), b[2].numpy()) for b in feeder.epoch(4)]
    k = 5
    reads: list[int] = []
    original = ShardSet.read_shard

    def counting(self, shard_id, verify="crc32"):
        reads.append(int(shard_id))
        return original(self, shard_id, verify)

    monkeypatch.setattr(ShardSet, "read_shard", counting)
    resumed = [(b[0].numpy(), b[2].numpy()) for b in feeder.epoch(4, start_batch=k)]
    assert len(resumed) == len(full) - k
    for (xa, ra), (xb, rb) in zip(full[k:], resumed, strict=True):
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(xa, xb)
    # consumed shards are not read again
    o = feeder.order(4)
    first = int(o.batch_bounds[k])
    still_needed = set(o.segments[np.unique(o.items[first:, 0]), 0].tolist())
    assert set(reads) == still_needed
    assert len(reads) < len(o.segments)
    assert list(feeder.epoch(4, start_batch=len(feeder))) == []
    with pytest.raises(ValueError):
        feeder.epoch(4, start_batch=len(feeder) + 1)


def test_corrupt_and_missing_shards_are_detected(store, tmp_path):
    out = tmp_path / "shards"
    export_shards(store.path, out, shard_mb=SHARD_MB)
    shard = out / "shards" / "validate-00001.u8"
    data = bytearray(shard.read_bytes())
    data[7] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="validate-00001.u8 is corrupt: CRC32"):
        list(ShardFeeder(out, "validate", 8).epoch(0))
    with pytest.raises(ShardError, match="validate-00001.u8 is corrupt: SHA256"):
        list(ShardFeeder(out, "validate", 8, verify="sha256").epoch(0))
    assert len(list(ShardFeeder(out, "validate", 8, verify="none").epoch(0))) == 6
    shard.write_bytes(bytes(data[:-1]))
    with pytest.raises(ShardError, match="corrupt: .* bytes"):
        list(ShardFeeder(out, "validate", 8, verify="none").epoch(0))
    with pytest.raises(ValueError):
        ShardFeeder(out, "validate", 8, verify="md5")
    shard.unlink()
    with pytest.raises(ShardError, match="validate-00001.u8 is missing"):
        list(ShardFeeder(out, "validate", 8).epoch(0))
    (out / META_FILE).unlink()
    with pytest.raises(ShardError, match="not a finished shard set"):
        ShardSet.open(out)


def test_cli_shard(store, tmp_path):
    from hypermodal.cli import app

    out = tmp_path / "cli-shards"
    result = CliRunner().invoke(
        app, ["shard", str(store.path), "--out", str(out), "--shard-mb", "0.01", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["images"] == len(store.rows())
    assert summary["images_per_shard"] == images_per_shard(SIZE, 0.01)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["split_hash"] == store.split_hash
    assert ShardSet.open(out).vocabulary().classes == store.vocabulary.classes
    bad = CliRunner().invoke(app, ["shard", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2


def test_split_selection_reads_only_that_split(shard_dir, monkeypatch):
    shards = ShardSet.open(shard_dir)
    reads: list[int] = []
    original = ShardSet.read_shard

    def counting(self, shard_id, verify="crc32"):
        reads.append(int(shard_id))
        return original(self, shard_id, verify)

    monkeypatch.setattr(ShardSet, "read_shard", counting)
    feeder = ShardFeeder(shards, "validate", 8)
    assert len(list(feeder.epoch(0))) == len(feeder)
    assert sorted(reads) == shards.split_shards("validate").tolist()
    with pytest.raises(ValueError, match="unknown split"):
        ShardFeeder(shards, "training", 8)


def test_empty_split(store, tmp_path):
    table = store.table.copy()
    table.loc[table["split"] == "test", "ok"] = False
    path = tmp_path / "store"
    write_store_arrays(path, np.asarray(store.images), table, store.vocabulary)
    export_shards(path, tmp_path / "shards", shard_mb=SHARD_MB)
    feeder = ShardFeeder(tmp_path / "shards", "test", 8, world_size=2, rank=1)
    assert len(feeder) == 0 and feeder.num_images() == 0
    assert list(feeder.epoch(0)) == [] and feeder.global_sizes(0) == []


@pytest.mark.slow
def test_train_reads_a_shard_set_like_a_store(store, shard_dir, tmp_path):
    """`hypermodal train SHARDS` trains from the shards: every train image once per epoch,
    class order, preprocessing and split hash carried into the checkpoint."""
    import pandas as pd

    from hypermodal.inference import load_model
    from hypermodal.train import TrainConfig, train

    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.01, device="cpu", train_size=32)
    train(shard_dir, tmp_path / "run", cfg, progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 1 and np.isfinite(history["train_loss"]).all()
    assert int(history["train_images"].iloc[0]) == len(store.rows("train"))
    loaded = load_model(tmp_path / "run" / "checkpoints" / "best.pt")
    assert loaded.classes == store.vocabulary.classes
    assert loaded.meta["split_hash"] == store.split_hash
    with pytest.raises(ValueError, match="balance"):
        train(
            shard_dir,
            tmp_path / "run2",
            TrainConfig(epochs=1, balance=True, device="cpu"),
            progress=False,
        )
