"""``train --evidence all`` on a tiny store of REAL images: the feature forest on train, the fusion
on validate, both saved in the checkpoints; the pixels recipe unchanged; the simulated share.

The store holds the real corpus of ``tests/conftest.py`` split so that validation has two classes
from two datasets (a fusion can be fitted), with one training dataset marked synthetic.
Mechanics only: nothing here is an accuracy claim.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.evidence import UNKNOWN, feature_matrix
from hypermodal.inference import load_model, predict, predict_proba, read_checkpoint
from hypermodal.store import STATS_COLUMN, SliceStore
from hypermodal.train import TrainConfig, train
from hypermodal.train.evidence import table_claims
from tests.helpers import make_store, pydicom_file

#: train: CT, MR (simulated here), XR; validate: MR + XR from two datasets; test: a NIfTI MR
EVIDENCE_SPLIT = {
    "ct-small": "train",
    "emri": "train",
    "png-xr": "train",
    "mr-small": "validate",
    "cr-leg": "validate",
    "nifti-mr": "test",
}
SIMULATED = "emri"  # 10 of the 12 training images


def quick(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"epochs": 2, "batch_size": 8, "lr": 0.01, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def evidence_store(real_corpus, tmp_path_factory: pytest.TempPathFactory) -> SliceStore:
    from hypermodal.catalog import build_catalog, read_catalog
    from hypermodal.labels import ClassVocabulary
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.split import SplitPlan, apply_split
    from hypermodal.store import build_store

    root, _ = real_corpus
    work = tmp_path_factory.mktemp("evidence-store")
    build_catalog([root], work / "catalog.parquet", workers=1, progress=False)
    plan = SplitPlan(assignments=EVIDENCE_SPLIT, method="file")
    selected = apply_split(read_catalog(work / "catalog.parquet"), plan)
    selected["synthetic"] = selected["dataset"] == SIMULATED  # as a simulated dataset would be
    build_store(
        selected,
        work / "store",
        ClassVocabulary(),
        PreprocessConfig(size=32),
        split_hash=plan.hash,
        workers=1,
        progress=False,
    )
    return SliceStore.open(work / "store")


@pytest.fixture(scope="module")
def runs(evidence_store: SliceStore, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``all``: two epochs with evidence; ``resumed``: one pixels epoch, then resumed to two
    with evidence (what the pixels checkpoint held is recorded before the resume)."""
    root = tmp_path_factory.mktemp("evidence-runs")
    summary = train(evidence_store.path, root / "all", quick(evidence="all"), progress=False)
    train(evidence_store.path, root / "resumed", quick(epochs=1), progress=False)
    pixels = read_checkpoint(root / "resumed" / "checkpoints" / "best.pt")
    pixels_config = json.loads((root / "resumed" / "config.json").read_text())
    resumed = train(
        evidence_store.path,
        root / "resumed",
        quick(evidence="all"),
        resume=True,
        progress=False,
    )
    return {
        "root": root,
        "summary": summary,
        "pixels": pixels,
        "pixels_config": pixels_config,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_checkpoints_carry_evidence_fitted_on_train_and_validate(runs: dict) -> None:
    ckpt = runs["root"] / "all" / "checkpoints"
    for name in ("best.pt", "last.pt"):
        state = torch.load(ckpt / name, map_location="cpu", weights_only=True)
        assert state["evidence"]["forest"]["kind"] == "random_forest"
        assert state["simulated_share"] == pytest.approx(10 / 12, abs=1e-6)
    assert "training_state" in read_checkpoint(ckpt / "last.pt")  # still resumable
    loaded = load_model(ckpt / "best.pt")
    evidence = loaded.evidence
    assert evidence is not None and evidence.forest is not None
    assert evidence.series_forest is not None
    assert evidence.classes == loaded.classes
    fitted = evidence.fusion.fitted_on
    assert fitted["fitted"] is True and fitted["rows"] == 2 and fitted["groups"] == 2
    assert fitted["classes_seen"] == ["MR", "XR"]
    info = evidence.info
    assert (info["rows"], info["datasets"]) == (12, 3)
    assert info["trained_classes"] == ["CT", "MR", "XR"]
    assert info["real_classes"] == ["CT", "XR"]  # MR only from the simulated dataset
    assert info["simulated_share_of_training"] == pytest.approx(10 / 12, abs=1e-6)
    assert info["fusion"]["fitted"] and info["fusion"]["datasets"] == 2
    assert info["pixels_from"]["checkpoint"] == "best.pt"
    assert runs["summary"]["evidence"] == info
    config = json.loads((runs["root"] / "all" / "config.json").read_text())
    assert config["simulated_share"] == pytest.approx(10 / 12, abs=1e-6)
    assert config["config"]["evidence"] == "all" and config["evidence"]["rows"] == 12


@pytest.mark.slow
def test_saved_evidence_predicts(runs: dict, evidence_store: SliceStore, tmp_path: Path) -> None:
    best = runs["root"] / "all" / "checkpoints" / "best.pt"
    loaded = load_model(best)
    rows = evidence_store.rows("test")
    table = evidence_store.table.iloc[rows].reset_index(drop=True)
    probs = predict_proba(loaded, np.asarray(evidence_store.images[rows]))
    x = feature_matrix(np.stack(table[STATS_COLUMN].to_numpy()), table)
    decided = loaded.evidence.decide(probs, x, table_claims(table, loaded.vocabulary))
    assert len(decided) == len(rows) == 25
    assert set(decided["prediction"]) <= {*loaded.classes, UNKNOWN}
    p = decided[[f"p_{c}" for c in loaded.classes]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert set(decided["feature_prediction"]) <= set(loaded.classes)
    # the user's path: predict a real file with this checkpoint
    out = tmp_path / "pred.csv"
    summary = predict([pydicom_file("CT_small.dcm")], best, out, progress=False, workers=1)
    frame = pd.read_csv(out)
    assert len(frame) == 1 and frame["header_label"].iloc[0] == "CT"
    assert any("MR: trained on simulated images only" in w for w in summary.warnings)


@pytest.mark.slow
def test_pixels_recipe_unchanged_and_resume_adds_evidence_at_the_end(runs: dict) -> None:
    pixels = runs["pixels"]
    assert set(pixels) == {  # the paper's checkpoint, its simulated share and digest only
        *("format", "format_version", "model_name", "num_classes", "in_chans", "vocabulary"),
        *("preprocess", "train_size", "config", "resolved_config", "store_path", "split_hash"),
        *("versions", "simulated_share", "epoch", "history", "best", "model_state"),
        "tensor_digest",
    }
    assert pixels["config"]["evidence"] == "pixels"
    assert pixels["simulated_share"] == pytest.approx(10 / 12, abs=1e-6)
    assert runs["pixels_config"]["simulated_share"] == pytest.approx(10 / 12, abs=1e-6)
    assert "evidence" not in runs["pixels_config"]
    resumed = runs["root"] / "resumed" / "checkpoints"
    straight = runs["root"] / "all" / "checkpoints"
    assert runs["resumed"]["resumed_from_epoch"] == 1 and runs["resumed"]["completed_epochs"] == 2
    a, b = read_checkpoint(resumed / "last.pt"), read_checkpoint(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["model_state"].keys() == b["model_state"].keys()
    for key, value in a["model_state"].items():  # fitting evidence never touches the CNN
        assert torch.equal(value, b["model_state"][key]), key
    assert load_model(resumed / "best.pt").evidence is not None
    assert a["evidence"]["info"]["rows"] == 12


@pytest.mark.slow
def test_shard_set_fits_the_same_forest_from_its_manifest(
    runs: dict, evidence_store: SliceStore, tmp_path: Path
) -> None:
    from hypermodal.store.shards import export_shards

    export_shards(evidence_store.path, tmp_path / "shards", shard_mb=0.01, seed=1)
    cfg = quick(epochs=1, evidence="all")
    summary = train(tmp_path / "shards", tmp_path / "run", cfg, progress=False)
    assert summary["simulated_share"] == pytest.approx(10 / 12, abs=1e-6)
    shard = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["evidence"]
    store = read_checkpoint(runs["root"] / "all" / "checkpoints" / "best.pt")["evidence"]
    for key in ("left", "right", "feature", "threshold", "value"):  # same rows, same seed
        assert torch.equal(shard["forest"][key], store["forest"][key]), key
    assert shard["fusion"]["fitted_on"]["rows"] == 2 and shard["info"]["rows"] == 12


@pytest.mark.slow
def test_store_without_stats_fits_pixels_and_header_only(tmp_path: Path) -> None:
    store = make_store(tmp_path / "old", (8, 4, 2))  # write_store_arrays: no stats column
    assert STATS_COLUMN not in store.table.columns
    summary = train(store.path, tmp_path / "run", quick(epochs=1, evidence="all"), progress=False)
    assert any(
        "no 'stats' column" in n and "feature forest is left out" in n for n in summary["notes"]
    )
    evidence = load_model(tmp_path / "run" / "checkpoints" / "best.pt").evidence
    assert evidence is not None and evidence.forest is None and evidence.series_forest is None
    assert evidence.fusion.fitted_on["fitted"] is True  # 4 classes from 2 datasets in validate
    assert evidence.info["features"] is False and evidence.info["simulated_share_of_training"] == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert any("feature forest is left out" in n for n in config["notes"])


def test_evidence_mode_is_checked_in_config_and_cli(tmp_path: Path) -> None:
    assert TrainConfig().evidence == "pixels"
    with pytest.raises(ValueError, match="evidence must be one of"):
        TrainConfig(evidence="features")
    r = CliRunner().invoke(
        app, ["train", str(tmp_path / "nostore"), "--out", str(tmp_path / "r"), "--evidence", "x"]
    )
    assert r.exit_code == 2 and "evidence must be one of" in r.output
