"""``hypermodal crossval`` end to end on a small real corpus (CNN folds kept tiny)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hypermodal.crossval import run_crossval
from hypermodal.inference import load_model
from tests.helpers import make_real_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_real_corpus(root)
    out = tmp_path_factory.mktemp("xv")
    kwargs = dict(simulate=False, pixel_folds=2, pixel_steps=2, size=32, workers=1, progress=False)
    metrics = run_crossval(out, root, save_model=out / "model" / "m.pt", **kwargs)
    return root, out, metrics, kwargs


def test_every_real_dataset_is_scored_by_models_that_never_saw_it(run):
    root, out, metrics, _ = run
    frame = pd.read_parquet(out / "predictions.parquet")
    expected = {"ct-small", "mr-small", "emri", "cr-leg", "ultrasound", "nifti-mr", "png-xr"}
    assert set(frame["dataset"]) == expected
    assert metrics["real_datasets"] == len(expected) and metrics["simulated_images"] == 0
    for mode in ("fused", "image", "features", "series", "pixels", "header"):
        assert f"pred_{mode}" in frame and mode in metrics["modes"]
    # the PNG and the NIfTI have no header claim; the DICOM files do
    header = frame.groupby("dataset")["pred_header"].first()
    assert header["png-xr"] == "none" and header["ct-small"] == "CT"
    assert header["ultrasound"] == "OTHER"
    on_disk = json.loads((out / "metrics.json").read_text())
    assert (
        on_disk["modes"]["fused"]["balanced_accuracy"]
        == metrics["modes"]["fused"]["balanced_accuracy"]
    )
    assert "PT" in on_disk["classes_without_real_data"]


def test_report_leads_with_balanced_accuracy_and_states_the_limits(run):
    _, out, metrics, _ = run
    report = (out / "report.md").read_text()
    header_row = next(line for line in report.splitlines() if line.startswith("| evidence |"))
    assert header_row.split("|")[2].strip() == "balanced accuracy (images)"
    assert header_row.split("|")[3].strip() == "balanced accuracy (datasets)"
    assert "no real images of PT" in report
    assert "not comparable" in report
    assert (out / "per_dataset.csv").exists()


def test_saved_model_carries_every_evidence_and_a_card(run):
    _, out, metrics, _ = run
    loaded = load_model(out / "model" / "m.pt")
    assert loaded.evidence is not None and loaded.evidence.series_forest is not None
    assert loaded.evidence.fusion.fitted_on["fitted"]
    card = (out / "model" / "MODEL_CARD.md").read_text()
    assert "Known limits" in card and metrics["model"]["sha256"] in card
    # its ONNX form, the one that ships: same evidence, on ONNX Runtime
    bundle = load_model(out / "model" / "m.onnx.zip")
    assert bundle.backend == "onnx" and bundle.evidence.info == loaded.evidence.info
    assert metrics["model"]["onnx"]["sha256"] in card and "`m.onnx.zip`" in card


def test_a_rerun_reuses_every_cnn_fold(run, monkeypatch):
    root, out, metrics, kwargs = run
    import hypermodal.crossval.pixels as pixels

    def refuse(*args, **kwargs):
        raise AssertionError("a CNN was trained again")

    monkeypatch.setattr(pixels, "fit_pixels", refuse)
    again = run_crossval(out, root, save_model=out / "model" / "m.pt", **kwargs)
    assert again["modes"]["pixels"] == metrics["modes"]["pixels"]
