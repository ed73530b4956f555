"""Checkpoints carry a digest of their tensors, verified on load; their settings are checked;
``--device`` names a device this machine has (issue 10, items 4 and 5)."""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.common.errors import CheckpointError, DeviceError
from hypermodal.inference import load_model, read_checkpoint, resolve_device
from hypermodal.inference.integrity import DIGEST_KEY, tensor_digest
from hypermodal.inference.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from hypermodal.labels import ClassVocabulary
from hypermodal.models import build_model
from hypermodal.preprocess import PreprocessConfig
from hypermodal.train.checkpoint import cpu_state_dict, save_checkpoint
from tests.helpers import copy_into, pydicom_file

VOCAB = ClassVocabulary()


def payload(model_state: dict[str, torch.Tensor], **changes) -> dict:
    """A complete checkpoint dict around ``model_state`` (ResNet-18, default classes, 32²)."""
    data = {
        "model_name": "resnet18",
        "num_classes": VOCAB.num_classes,
        "in_chans": 1,
        "model_state": model_state,
        "vocabulary": VOCAB.to_dict(),
        "preprocess": PreprocessConfig(size=32).to_dict(),
        "train_size": 32,
        "config": {},
        "split_hash": "",
        "versions": {},
        "epoch": 1,
        "history": [],
    }
    data.update(changes)
    return data


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory) -> Path:
    """A real ResNet-18 checkpoint as training writes it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, payload(cpu_state_dict(build_model("resnet18", VOCAB.num_classes, 1))))
    return path


def flip_inside_a_tensor(src: Path, dst: Path, n: int = 64) -> str:
    """Copy ``src`` to ``dst`` with ``n`` bytes inverted in the middle of its largest tensor
    (a stored zip member), as a bad disk or a bad copy would; return the member's name."""
    with zipfile.ZipFile(src) as archive:
        member = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(src.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", raw[member.header_offset + 26 : member.header_offset + 30]
    )
    start = member.header_offset + 30 + name_len + extra_len + member.file_size // 2
    for i in range(start, start + n):
        raw[i] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return member.filename


def test_a_checkpoint_carries_the_digest_of_its_tensors(resnet_checkpoint: Path) -> None:
    data = read_checkpoint(resnet_checkpoint)
    assert data[DIGEST_KEY].startswith("sha256:") and len(data[DIGEST_KEY]) == 7 + 64
    assert tensor_digest(data) == data[DIGEST_KEY]
    state = dict(data["model_state"])
    key = next(iter(state))
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 1
    assert tensor_digest({**data, "model_state": state}) != data[DIGEST_KEY]


def test_64_flipped_bytes_inside_a_tensor_are_refused(
    resnet_checkpoint: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pt"
    flip_inside_a_tensor(resnet_checkpoint, bad)
    # torch itself notices nothing: the weights load, changed
    loaded = torch.load(bad, map_location="cpu", weights_only=True)
    good = torch.load(resnet_checkpoint, map_location="cpu", weights_only=True)
    changed = [
        k for k, v in good["model_state"].items() if not torch.equal(v, loaded["model_state"][k])
    ]
    assert len(changed) == 1
    with pytest.raises(CheckpointError, match="tensor digest mismatch"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="tensor digest mismatch"):
        load_model(bad)


def test_a_checkpoint_from_before_digests_loads_with_a_warning(
    resnet_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = {k: v for k, v in read_checkpoint(resnet_checkpoint).items() if k != DIGEST_KEY}
    torch.save(old, tmp_path / "old.pt")  # how checkpoints were written before
    with caplog.at_level(logging.WARNING, logger="hypermodal"):
        loaded = load_model(tmp_path / "old.pt")
    assert loaded.classes == VOCAB.classes
    assert any("no tensor digest" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("changes", "reported"),
    [
        ({"preprocess": {**PreprocessConfig(size=32).to_dict(), "size": -5}}, "preprocess.size"),
        ({"train_size": 0}, "train_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"train_size": "32"}, "train_size"),
    ],
)
def test_sizes_and_counts_that_cannot_be_are_refused(
    tmp_path: Path, changes: dict, reported: str
) -> None:
    path = tmp_path / "bad-settings.pt"
    save_checkpoint(path, payload({"w": torch.zeros(4)}, **changes))
    with pytest.raises(CheckpointError, match=rf"{reported} = .*must be a positive integer"):
        read_checkpoint(path)


def test_predict_with_a_checkpoint_of_size_minus_5_is_one_error_line(
    resnet_checkpoint: Path, tmp_path: Path
) -> None:
    data = read_checkpoint(resnet_checkpoint)
    data["preprocess"] = {**data["preprocess"], "size": -5}
    save_checkpoint(tmp_path / "minus5.pt", data)
    copy_into(pydicom_file("CT_small.dcm"), tmp_path / "in")
    r = CliRunner().invoke(
        app,
        ["predict", str(tmp_path / "in"), "--model", str(tmp_path / "minus5.pt")]
        + ["--out", str(tmp_path / "p.csv"), "--no-progress"],
    )
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "preprocess.size = -5" in line
    assert not (tmp_path / "p.csv").exists()


def test_a_format_key_is_still_checked_first(tmp_path: Path) -> None:
    data = payload({"w": torch.zeros(2)})
    torch.save(
        {**data, "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION + 1},
        tmp_path / "future.pt",
    )
    with pytest.raises(CheckpointError, match="format version"):
        read_checkpoint(tmp_path / "future.pt")


# ---------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("name", ["banana", "meta", "cuda:x", ""])
def test_a_device_that_is_no_device_is_refused(name: str) -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(name)


def test_devices_this_machine_lacks_are_refused() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if torch.cuda.is_available():
        with pytest.raises(DeviceError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")
