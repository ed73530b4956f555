"""The whole pipeline through the command line: catalog → split → store → train → evaluate →
predict → info, and resuming a run."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app

runner = CliRunner()


def run(args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.mark.slow
def test_pipeline_through_the_cli(real_corpus, tmp_path):
    root, expected = real_corpus
    cat = tmp_path / "catalog.parquet"
    r = run(["catalog", root, "--out", cat, "--workers", 1, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == expected["images"]

    split = tmp_path / "split.json"
    r = run(["split", cat, "--out", split, "--seed", 3])
    assert r.exit_code == 0, r.output
    assigned = json.loads(split.read_text())["assignments"]
    assert set(assigned) == {"ct-small", "mr-small", "emri", "cr-leg", "nifti-mr", "png-xr"}
    r = run(["split", cat, "--out", split, "--seed", 4])  # reused, not redone
    assert r.exit_code == 0 and "reused" in r.output
    assert json.loads(split.read_text())["assignments"] == assigned

    store = tmp_path / "store"
    r = run(["store", cat, "--split", split, "--out", store, "--size", 32, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images_failed"] == 0

    runs = tmp_path / "run"
    r = run(
        [
            "train",
            store,
            "--out",
            runs,
            "--epochs",
            1,
            "--batch-size",
            8,
            "--lr",
            0.01,
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert r.exit_code == 0, r.output
    best = runs / "checkpoints" / "best.pt"
    assert best.exists()

    ev = tmp_path / "eval"
    r = run(["evaluate", best, store, "--out", ev, "--split", "train"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["classes"] == ["CT", "MR", "PT", "XR"]
    assert (ev / "report.md").exists()

    pred = tmp_path / "pred.parquet"
    r = run(["predict", root / "emri", "--model", best, "--out", pred, "--no-progress"])
    assert r.exit_code == 0, r.output
    (row,) = pd.read_parquet(pred).to_dict("records")  # one series of 10 frames
    assert row["num_images"] == 10 and row["prediction"] in ("CT", "MR", "PT", "XR", "UNKNOWN")

    r = run(["info", store])
    assert r.exit_code == 0 and json.loads(r.stdout)["num_images"] == expected["images"]
    r = run(["info", best])
    assert r.exit_code == 0 and json.loads(r.stdout)["classes"] == ["CT", "MR", "PT", "XR"]


@pytest.mark.slow
def test_resume_continues_with_the_saved_recipe(real_store, tmp_path):
    out = tmp_path / "run"
    common = ["--device", "cpu", "--no-progress"]
    r = run(
        [
            "train",
            real_store,
            "--out",
            out,
            "--epochs",
            1,
            "--batch-size",
            8,
            "--lr",
            0.01,
            "--train-size",
            32,
            *common,
        ]
    )
    assert r.exit_code == 0, r.output
    r = run(["train", real_store, "--out", out, "--resume", "--epochs", 2, *common])
    assert r.exit_code == 0, r.output
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["batch_size"] == 8 and cfg["config"]["lr"] == 0.01
    r = run(["train", real_store, "--out", out, "--resume", *common])  # nothing left to do
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(out / "history.csv")) == 2
    r = run(["train", real_store, "--out", out, "--epochs", 3, *common])  # no --resume
    assert r.exit_code == 2 and "resume" in r.output.lower()
