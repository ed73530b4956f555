"""What the report counts and flags, from tables shaped as ``predict`` writes them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hypermodal.inference.report.tables import (
    class_counts,
    class_order,
    flagged_cards,
    flags,
    folder_counts,
    load_errors,
    representative,
    sheet_sample,
    source_folders,
)


def _images() -> pd.DataFrame:
    rows = [
        # path, index, prediction, confidence, header, agreement, series
        ("/a/site1/ct/1.dcm", 0, "CT", 0.99, "CT", "agree", "s-ct"),
        ("/a/site1/ct/2.dcm", 0, "CT", 0.97, "CT", "agree", "s-ct"),
        ("/a/site1/ct/3.dcm", 0, "CT", 0.95, "CT", "agree", "s-ct"),
        ("/a/site1/mr/vol.dcm", 0, "MR", 0.90, "MR", "agree", "s-mr"),
        ("/a/site1/mr/vol.dcm", 1, "CT", 0.60, "MR", "conflict", "s-mr"),
        ("/a/site2/x.png", 0, "UNKNOWN", 0.30, None, "no header", "/a/site2/x.png"),
        ("/a/site2/cr.dcm", 0, "XR", 0.99, "XR", "agree", "s-cr"),
    ]
    cols = ["path", "index", "prediction", "confidence", "header_label", "agreement", "series"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("CT", "MR", "PT", "XR", "OTHER"):
        df[f"p_{c}"] = 0.0
    return df


def _series() -> pd.DataFrame:
    rows = [
        ("s-ct", "/a/site1/ct/1.dcm", "/a/site1/ct", "CT", 0.97, "CT", "agree", 120),
        ("s-mr", "/a/site1/mr/vol.dcm", "/a/site1/mr", "MR", 0.75, "MR", "conflict", 2),
        ("/a/site2/x.png", "/a/site2/x.png", "/a/site2", "UNKNOWN", 0.30, None, "no header", 1),
        ("s-cr", "/a/site2/cr.dcm", "/a/site2", "XR", 0.99, "XR", "agree", 1),
    ]
    cols = ["series", "path", "folder", "prediction", "confidence", "header_label", "agreement"]
    df = pd.DataFrame(rows, columns=[*cols, "num_images"])
    for c in reversed(("CT", "MR", "PT", "XR", "OTHER")):
        df.insert(5, f"p_{c}", 0.0)
    return df


def test_class_order_follows_the_model_then_unknown_last():
    assert class_order(_series(), _images()) == ["CT", "MR", "PT", "XR", "OTHER", "UNKNOWN"]
    bare = pd.DataFrame({"prediction": ["US", "UNKNOWN", "CT"]})
    assert class_order(bare) == ["CT", "US", "UNKNOWN"]


def test_class_counts_series_images_by_header_and_decoded():
    counts = class_counts(_images(), _series())
    assert counts.loc["CT"].to_dict() == {"series": 1, "images": 120, "decoded": 4}
    assert counts.loc["MR"].to_dict() == {"series": 1, "images": 2, "decoded": 1}
    assert counts.loc["UNKNOWN"].to_dict() == {"series": 1, "images": 1, "decoded": 1}
    assert counts.loc["PT"].sum() == 0  # every model class is listed, even with nothing
    assert counts["series"].sum() == 4 and counts["decoded"].sum() == 7


def test_class_counts_use_only_the_columns_the_tables_have():
    series = _series().drop(columns=["num_images"])
    assert list(class_counts(_images(), series).columns) == ["series", "decoded"]
    assert list(class_counts(_images(), None).columns) == ["decoded"]
    only_series = class_counts(pd.DataFrame(), _series())
    assert list(only_series.columns) == ["series", "images"]


def test_source_folders_are_top_level_folders_under_the_common_root():
    root, sources = source_folders(["/a/site1/ct", "/a/site1/mr", "/a/site2", "/a"])
    assert root == "/a" and sources == ["site1", "site1", "site2", "."]
    assert source_folders(["/data/one"]) == ("/data/one", ["."])
    assert source_folders(["rel/x", "/abs/y"]) == ("", ["rel/x", "/abs/y"])  # no common root


def test_folder_counts_per_source_and_class():
    root, table = folder_counts(_series(), class_order(_series()))
    assert root == "/a"
    assert table.loc["site1"].to_dict() == {"CT": 1, "MR": 1, "XR": 0, "UNKNOWN": 0, "total": 2}
    assert table.loc["site2"].to_dict() == {"CT": 0, "MR": 0, "XR": 1, "UNKNOWN": 1, "total": 2}
    # without a folder column, the parent folder of each path counts
    _, by_path = folder_counts(_images(), class_order(_images()))
    assert by_path["total"].to_dict() == {"site1": 5, "site2": 2}


def test_flags_name_conflicts_and_unknowns():
    df = pd.DataFrame(
        {"prediction": ["CT", "UNKNOWN", "UNKNOWN", "MR"],
         "agreement": ["conflict", "conflict", "no header", "agree"]}
    )  # fmt: skip
    assert flags(df).tolist() == ["conflict", "conflict unknown", "unknown", ""]


def test_flagged_cards_per_series_show_the_flagged_images():
    cards = flagged_cards(_images(), _series(), per_series=3)
    assert [(c.kind, c.row["series"]) for c in cards] == [
        ("conflict", "s-mr"),
        ("unknown", "/a/site2/x.png"),
    ]
    mr = cards[0]
    assert [(s.path, s.index, s.prediction) for s in mr.shots] == [("/a/site1/mr/vol.dcm", 1, "CT")]
    assert mr.shots[0].header_label == "MR" and mr.more == 0


def test_a_series_is_flagged_by_one_flagged_image_and_caps_its_thumbnails():
    images = _images()
    images.loc[:2, "agreement"] = "conflict"  # three CT images conflict; the series row does not
    cards = flagged_cards(images, _series(), per_series=2)
    ct = next(c for c in cards if c.row["series"] == "s-ct")
    assert ct.kind == "conflict" and len(ct.shots) == 2 and ct.more == 1


def test_without_a_series_table_each_flagged_image_is_a_card():
    cards = flagged_cards(_images(), None)
    assert [(c.kind, c.shots[0].path, c.shots[0].index) for c in cards] == [
        ("conflict", "/a/site1/mr/vol.dcm", 1),
        ("unknown", "/a/site2/x.png", 0),
    ]


def test_representative_is_the_middle_decoded_image_else_the_files_middle():
    images = _images()
    group = images[images.series == "s-ct"]
    row = _series().iloc[0]
    shot = representative(row, group)
    assert (shot.path, shot.index, shot.prediction) == ("/a/site1/ct/2.dcm", 0, "CT")
    alone = representative(row, None)
    assert (alone.path, alone.index) == ("/a/site1/ct/1.dcm", None)


def test_sheet_sample_is_capped_seeded_and_in_table_order():
    table = pd.DataFrame({"prediction": ["CT"] * 50 + ["MR"] * 3, "n": np.arange(53)})
    rows, total = sheet_sample(table, "CT", cap=10, seed=7)
    again, _ = sheet_sample(table, "CT", cap=10, seed=7)
    other, _ = sheet_sample(table, "CT", cap=10, seed=8)
    assert total == 50 and len(rows) == 10 and rows["n"].is_monotonic_increasing
    assert rows["n"].tolist() == again["n"].tolist() != other["n"].tolist()
    mr, n_mr = sheet_sample(table, "MR", cap=10, seed=7)
    assert n_mr == 3 and mr["n"].tolist() == [50, 51, 52]
    assert sheet_sample(table, "XR", cap=10, seed=7)[1] == 0


def test_load_errors_from_records_or_the_errors_file(tmp_path):
    records = [{"path": "/x/broken.dcm", "stage": "predict", "reason": "truncated file"}]
    assert load_errors(None) == []
    assert load_errors(records) == records
    errors_file = tmp_path / "series.csv.errors.jsonl"
    errors_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_errors(errors_file) == records
    assert load_errors(str(errors_file)) == records


@pytest.mark.parametrize("missing", [None, float("nan"), ""])
def test_missing_values_are_not_shown_as_text(missing):
    from hypermodal.inference.report.tables import text

    assert text(missing) is None
    assert text("MR") == "MR"
