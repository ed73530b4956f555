"""The bundled demo end to end on the real sample corpus (short training: mechanics only)."""

import json

import pandas as pd
import pytest

from hypermodal.demo import run_demo
from hypermodal.inference import load_model
from tests.helpers import REPO


@pytest.mark.slow
def test_demo_writes_metrics_report_and_checkpoint_with_unseen_test_datasets(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(
        out,
        cache_dir=REPO / ".cache" / "wheels",
        epochs=1,
        max_images_per_epoch=64,
        train_size=64,
        progress=False,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "classes", "confusion_matrix", "per_dataset"):
        assert key in metrics
    assert metrics["classes"] == ["CT", "MR", "PT", "XR"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert result["classes_without_data"] == ["PT"]  # no real PET ships in any package
    assert set(metrics["demo"]["stage_seconds"]) >= {
        "samples",
        "catalog",
        "split",
        "store",
        "train",
        "evaluate",
    }
    report = (out / "report.md").read_text()
    assert "96.00%" in report and "Pipeline stages" in report and "PT" in report
    assert load_model(out / "checkpoints" / "best.pt").classes == ("CT", "MR", "PT", "XR")
    # test datasets are unseen in training: no dataset, series or source file is shared
    manifest = pd.read_parquet(out / "store" / "manifest.parquet")
    train = manifest[manifest.split == "train"]
    test = manifest[manifest.split == "test"]
    assert len(test) > 0
    for col in ("dataset", "series", "path"):
        assert not set(train[col]) & set(test[col]), col
    split = json.loads((out / "split.json").read_text())
    assert split["hash"] == json.loads((out / "store" / "store.json").read_text())["split_hash"]
