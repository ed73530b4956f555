"""Rerunning ``split`` on unchanged inputs reuses the split, also when a dataset holds only
localizer (scout) images, which no split places (they are left out by default)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.split import SplitError, make_split, split_or_reuse
from hypermodal.split.assignment import placed_datasets
from tests.helpers import pydicom_file


def _copies(source: Path, folder: Path, n: int, localizer: bool = False) -> None:
    """``n`` copies of a real file as one new series (distinct UIDs); scouts if asked."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    folder.mkdir(parents=True)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(folder), "series"])
    if localizer:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    for k in range(n):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(folder), str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def catalog_with_a_scout_dataset(tmp_path_factory) -> Path:
    from hypermodal.catalog import build_catalog

    root = tmp_path_factory.mktemp("corpus")
    ct, mr = pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm")
    for i in range(3):
        _copies(ct, root / f"ct-{i}", 3)
        _copies(mr, root / f"mr-{i}", 3)
    _copies(mr, root / "scouts-only", 2, localizer=True)
    out = root.parent / f"{root.name}-catalog.parquet"
    build_catalog([root], out, workers=1, progress=False)
    return out


def test_split_cli_twice_reuses_the_split(catalog_with_a_scout_dataset, tmp_path):
    catalog = catalog_with_a_scout_dataset
    table = pd.read_parquet(catalog)
    scouts = table[table["dataset"] == "scouts-only"]
    assert len(scouts) == 2 and scouts["localizer"].all()
    out = tmp_path / "split.json"
    runner = CliRunner()
    first = runner.invoke(app, ["split", str(catalog), "--out", str(out)])
    assert first.exit_code == 0, first.output
    written = out.read_text()
    assert "scouts-only" not in json.loads(written)["assignments"]
    second = runner.invoke(app, ["split", str(catalog), "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert "reused split" in second.output and "--force" not in second.output
    assert out.read_text() == written


def test_reuse_checks_only_datasets_the_split_places():
    rows = [
        {"dataset": d, "label": "CT", "path": f"{d}/{i}", "index": 0, "localizer": loc}
        for d, loc in (("a", False), ("b", False), ("c", False), ("scouts", True))
        for i in range(4)
    ]
    catalog = pd.DataFrame(rows)
    assert placed_datasets(catalog, True) == {"a", "b", "c"}
    assert placed_datasets(catalog, False) == {"a", "b", "c", "scouts"}
    plan = make_split(catalog, seed=0)
    assert set(plan.assignments) == {"a", "b", "c"}


def test_a_new_dataset_still_needs_force(tmp_path):
    rows = [
        {"dataset": d, "label": "MR", "path": f"{d}/{i}", "index": 0, "localizer": False}
        for d in ("a", "b", "c")
        for i in range(4)
    ]
    catalog = pd.DataFrame(rows)
    out = tmp_path / "split.json"
    _, reused = split_or_reuse(catalog, out, seed=0)
    assert not reused
    _, reused = split_or_reuse(catalog, out)
    assert reused
    grown = pd.concat([catalog, catalog.assign(dataset="new")], ignore_index=True)
    with pytest.raises(SplitError, match="rerun with --force"):
        split_or_reuse(grown, out)
    # a dataset of scouts only is not new: no split places it
    scouts = catalog.assign(dataset="scouts", localizer=True)
    assert split_or_reuse(pd.concat([catalog, scouts], ignore_index=True), out)[1]
