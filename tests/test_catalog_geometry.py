"""The catalog's geometry and provenance columns, and catalogs written before them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from hypermodal.catalog import (
    CATALOG_COLUMNS,
    REQUIRED_COLUMNS,
    build_catalog,
    read_catalog,
    summary_path,
)
from hypermodal.crossval import check_folds, make_folds
from hypermodal.evidence import FEATURE_NAMES, STAT_NAMES, feature_matrix
from tests.helpers import copy_into, pydicom_file

GEOMETRY = ["frames", "pixel_spacing", "slice_thickness", "bits_stored", "samples"]


@pytest.fixture(scope="module")
def catalog(real_corpus, tmp_path_factory):
    root, expected = real_corpus
    out = tmp_path_factory.mktemp("geometry") / "catalog.parquet"
    build_catalog([root], out, workers=1, progress=False)
    return out, expected


def test_geometry_columns_of_a_real_corpus(catalog):
    path, expected = catalog
    df = read_catalog(path)
    assert tuple(df.columns) == CATALOG_COLUMNS
    first = df.groupby("dataset").first()
    ct = first.loc["ct-small"]
    assert ct["frames"] == 1 and ct["samples"] == 1 and ct["bits_stored"] == 16
    assert ct["pixel_spacing"] == pytest.approx(0.661468) and ct["slice_thickness"] == 5.0
    assert ct["sop_class"] == "1.2.840.10008.5.1.4.1.1.2"
    mr = first.loc["mr-small"]
    assert mr["pixel_spacing"] == pytest.approx(0.3125)
    assert mr["slice_thickness"] == pytest.approx(0.8)
    emri = df[df["dataset"] == "emri"]
    assert (emri["frames"] == 10).all() and (emri["bits_stored"] == 12).all()  # every frame
    assert emri["pixel_spacing"].isna().all()  # the header has none: unknown, not 0
    cr = first.loc["cr-leg"]
    assert cr["bits_stored"] == 10 and cr["samples"] == 1
    nifti = df[df["dataset"] == "nifti-mr"]
    assert (nifti["frames"] == expected["nifti_slices"]).all()
    assert (nifti["pixel_spacing"] == 2.0).all() and (nifti["bits_stored"] == 16).all()
    assert nifti["sop_class"].isna().all()
    png = first.loc["png-xr"]
    assert png["samples"] == 3 and png["bits_stored"] == 8  # saved as RGB
    assert np.isnan(png["pixel_spacing"]) and np.isnan(png["slice_thickness"])
    assert not df["synthetic"].any() and df["simulated_from"].isna().all()
    # the Parquet types are the schema's
    schema = pq.read_schema(path)
    assert str(schema.field("frames").type) == "int32"
    assert str(schema.field("pixel_spacing").type) == "float"
    assert str(schema.field("samples").type) == "int16"
    assert str(schema.field("synthetic").type) == "bool"


def test_dataset_json_marks_simulated_images(tmp_path):
    root = tmp_path / "corpus"
    copy_into(pydicom_file("CT_small.dcm"), root / "ct-real")
    copy_into(pydicom_file("MR_small.dcm"), root / "mr-real")
    sim = copy_into(pydicom_file("CT_small.dcm"), root / "sim", "projection.dcm").parent
    (sim / "dataset.json").write_text(
        json.dumps({"name": "sim-xr", "synthetic": True, "simulated_from": "ct-real"})
    )
    out = tmp_path / "catalog.parquet"
    summary = build_catalog([root], out, workers=1, progress=False)
    df = read_catalog(out)
    by = df.set_index("dataset")
    assert bool(by.loc["sim-xr", "synthetic"]) is True
    assert by.loc["sim-xr", "simulated_from"] == "ct-real"
    assert not by.loc[["ct-real", "mr-real"], "synthetic"].any()
    assert by.loc[["ct-real", "mr-real"], "simulated_from"].isna().all()
    assert summary.synthetic_images == 1
    meta = json.loads(summary_path(out).read_text())
    assert meta["summary"]["synthetic_images"] == 1
    # what cross-validation makes of it: the simulated images never train ct-real's fold
    folds = make_folds(df, "dataset")
    check_folds(df, folds)
    assert [f.held_out for f in folds] == [("ct-real",), ("mr-real",)]
    sim_rows = df["dataset"].eq("sim-xr").to_numpy()
    assert not folds[0].train[sim_rows].any() and folds[1].train[sim_rows].all()
    assert not any(f.test[sim_rows].any() for f in folds)


def test_old_catalog_without_the_new_columns_reads_with_defaults(catalog, tmp_path):
    path, _ = catalog
    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(path, columns=list(REQUIRED_COLUMNS)), old)
    assert set(pq.read_schema(old).names) == set(REQUIRED_COLUMNS)
    df = read_catalog(old)
    assert set(CATALOG_COLUMNS) <= set(df.columns)
    assert len(df) == len(read_catalog(path))
    assert df["pixel_spacing"].isna().all() and df["slice_thickness"].isna().all()
    assert df["bits_stored"].isna().all() and df["frames"].isna().all()
    assert df["samples"].isna().all() and df["sop_class"].isna().all()
    assert df["synthetic"].eq(False).all() and df["simulated_from"].isna().all()
    # what reads the catalog still works: the feature matrix (geometry unknown) and the folds
    x = feature_matrix(np.zeros((len(df), len(STAT_NAMES))), df)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert np.isnan(x[:, col["pixel_spacing"]]).all() and np.isnan(x[:, col["frames"]]).all()
    np.testing.assert_array_equal(x[:, col["rows"]], df["rows"].to_numpy())
    check_folds(df, make_folds(df, "dataset"))
