"""The bundled default model: ``predict`` works without ``--model`` on a fresh clone.

These check behaviour (the model ships, loads safely, classifies every input family, names what
is outside the vocabulary OTHER, flags a relabelled header), not accuracy: the files below come
from packages the model was trained on. Accuracy on unseen datasets is ``hypermodal crossval``'s
job (see the model card).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from hypermodal.default_model import MODEL_CARD, MODEL_PATH
from hypermodal.inference import load_model, predict
from hypermodal.inference.onnx_bundle import read_bundle
from tests.helpers import copy_into, nibabel_file, pydicom_file

pytestmark = pytest.mark.skipif(not MODEL_PATH.exists(), reason="no default model built yet")


def test_the_default_model_ships_small_loads_safely_and_has_every_evidence():
    assert MODEL_PATH.stat().st_size <= 25 * 1024 * 1024
    raw = read_bundle(MODEL_PATH)  # the ONNX bundle, its content digest verified
    assert raw.meta["format"] == "hypermodal-onnx" and raw.precision == "fp32"
    loaded = load_model(MODEL_PATH)
    assert loaded.backend == "onnx"
    assert loaded.classes == ("CT", "MR", "PT", "XR", "OTHER")
    ev = loaded.evidence
    assert ev is not None and ev.forest is not None and ev.series_forest is not None
    assert ev.fusion.fitted_on.get("fitted") is True
    assert "PT" not in ev.info["real_classes"]  # no real PET exists in the allowed packages
    card = MODEL_CARD.read_text()
    assert "Cross-validation by dataset" in card and "balanced accuracy" in card
    assert "Known limits" in card and "PT" in card


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    copy_into(pydicom_file("CT_small.dcm"), root, "ct.dcm")
    copy_into(pydicom_file("US1_UNCR.dcm"), root, "us.dcm")
    copy_into(nibabel_file("anatomical.nii"), root, "brain.nii")
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.Modality = "MR"  # a wrong header: CT pixels that claim to be MR
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(root / "relabelled.dcm")
    pixels = ds.pixel_array.astype(np.float64)
    img8 = np.round(255 * (pixels - pixels.min()) / np.ptp(pixels)).astype(np.uint8)
    Image.fromarray(img8).save(root / "export.png")
    return root


def test_predict_without_model_classifies_every_family(mixed, tmp_path):
    out = tmp_path / "p.csv"
    summary = predict([mixed], None, out, series_out=tmp_path / "s.csv", progress=False)
    assert summary.model == str(MODEL_PATH)
    assert summary.files_predicted == 5 and summary.files_skipped == 0
    df = pd.read_csv(out)
    by = {name: g for name, g in df.groupby(df["path"].str.rsplit("/", n=1).str[-1])}
    assert set(by) == {"ct.dcm", "us.dcm", "brain.nii", "relabelled.dcm", "export.png"}
    assert by["ct.dcm"]["prediction"].iat[0] == "CT"
    assert by["ct.dcm"]["agreement"].iat[0] == "agree"
    assert by["us.dcm"]["prediction"].iat[0] == "OTHER"
    assert by["us.dcm"]["header_label"].iat[0] == "OTHER"
    assert (by["brain.nii"]["agreement"] == "no header").all()
    relabelled = by["relabelled.dcm"].iloc[0]
    assert relabelled["header_label"] == "MR" and relabelled["agreement"] == "conflict"
    assert by["export.png"]["prediction"].iat[0] in ("CT", "MR", "PT", "XR", "OTHER", "UNKNOWN")
    for col in ("confidence", "pixel_prediction", "feature_prediction"):
        assert df[col].notna().all()
    series = pd.read_csv(tmp_path / "s.csv")
    assert "conflict" in set(series["agreement"]) and len(series) == summary.series


def test_cli_predict_needs_no_model_and_says_which_it_used(mixed, tmp_path):
    out = tmp_path / "p.csv"
    r = subprocess.run(
        [sys.executable, "-m", "hypermodal", "predict", str(mixed), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"model: {MODEL_PATH}" in r.stderr
    assert "PT: trained on simulated images only" in r.stderr
    assert len(pd.read_csv(out)) > 0
