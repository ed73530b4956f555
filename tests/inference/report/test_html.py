"""The report page written from tables of real files: content, escaping, caps, files beside it.

The rendered page is checked in a real browser in ``test_chromium.py``; here the written HTML is
read back directly.
"""

from __future__ import annotations

import os
import re
import shutil

import pandas as pd
import pytest

from hypermodal.common.errors import OutputError
from hypermodal.common.paths import path_text
from hypermodal.inference.report import write_archive_report
from tests.helpers import pydicom_file
from tests.inference.report.browser import decode_data_uri, parse_dom, table_numbers

CLASSES = ("CT", "MR", "PT", "XR", "OTHER")
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Real files under two source folders; one with a hostile name, one not UTF-8."""
    root = tmp_path_factory.mktemp("archive")
    (root / "site1").mkdir()
    (root / "site2").mkdir()
    ct = shutil.copy(pydicom_file("CT_small.dcm"), root / "site1" / "ct.dcm")
    emri = shutil.copy(pydicom_file("emri_small.dcm"), root / "site1" / "emri.dcm")
    odd = shutil.copy(pydicom_file("MR_small.dcm"), root / "site2" / "a\"<b>&'.dcm")
    raw = os.path.join(os.fsencode(root / "site2"), b"scan-\xff.dcm")
    with open(raw, "wb") as fh:
        fh.write(pydicom_file("CT_small.dcm").read_bytes())
    return {
        "root": root,
        "ct": str(ct),
        "emri": str(emri),
        "odd": str(odd),
        "raw": path_text(raw),
        "gone": str(root / "site2" / "gone.dcm"),  # listed in the tables, removed since
    }


def _tables(a: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = [
        (a["ct"], 0, "CT", 0.99, "CT", "agree", "s-ct"),
        *[(a["emri"], i, "MR", 0.95, "MR", "agree", "s-mr") for i in range(10)],
        (a["odd"], 0, "CT", 0.62, "MR", "conflict", "s-odd"),
        (a["raw"], 0, "UNKNOWN", 0.41, None, "no header", "s-raw"),
        (a["gone"], 0, "UNKNOWN", 0.33, None, "no header", "s-gone"),
    ]
    cols = ["path", "index", "prediction", "confidence", "header_label", "agreement", "series"]
    img = pd.DataFrame(images, columns=cols)
    for c in CLASSES:
        img[f"p_{c}"] = 0.1
    series = (
        img.groupby("series", sort=False)
        .agg(
            path=("path", "first"),
            prediction=("prediction", "first"),
            confidence=("confidence", "mean"),
            header_label=("header_label", "first"),
            agreement=("agreement", "first"),
            num_images=("index", "size"),
        )
        .reset_index()
    )
    for c in CLASSES:
        series[f"p_{c}"] = 0.1
    series["SeriesDescription"] = ["axial", "dynamic", HOSTILE, None, None]
    series["PatientID"] = ["P1", "P1", "P2", None, None]
    return img, series


def test_the_page_shows_counts_flags_sheets_and_errors(archive, tmp_path):
    images, series = _tables(archive)
    errors = [{"path": str(archive["root"] / "junk.bin"), "stage": "predict", "reason": "<bad>"}]
    page = write_archive_report(images, series, tmp_path / "report", errors=errors, title="Site A")
    assert page == tmp_path / "report" / "index.html"
    markup = page.read_text("utf-8")
    dom = parse_dom(markup)
    assert dom.find_all("title")[0].text == "Site A"
    counts = table_numbers(dom.by_id("class-counts"), "class")
    assert counts["MR"] == {"series": 1, "images": 10, "decoded": 10}
    assert counts["UNKNOWN"] == {"series": 2, "images": 2, "decoded": 2}
    assert counts["total"] == {"series": 5, "images": 14, "decoded": 14}
    folders = table_numbers(dom.by_id("folder-counts"), "source")
    assert {name: v["total"] for name, v in folders.items()} == {"site1": 2, "site2": 3}
    assert folders["site2"] == {"CT": 1, "MR": 0, "UNKNOWN": 2, "total": 3}
    cards = dom.by_id("flagged").find_all("article")
    assert [c.attrs["data-kind"] for c in cards] == ["conflict", "unknown", "unknown"]
    for c in cards:
        (img,) = c.find_all("img")
        assert max(decode_data_uri(img.attrs["src"]).size) == 128
    gone = next(c for c in cards if c.attrs["data-path"] == archive["gone"])
    assert "No such file" in gone.find_all("figure")[0].attrs["data-unreadable"]
    raw = next(c for c in cards if c.attrs["data-path"] == archive["raw"])
    assert "data-unreadable" not in raw.find_all("figure")[0].attrs  # the non-UTF-8 file is read
    conflict = cards[0]
    assert "the header says MR" in conflict.text and HOSTILE in conflict.text
    sheets = {s.attrs["data-class"]: s for s in dom.find_all("div", class_="sheet-block")}
    assert set(sheets) == {"CT", "MR", "UNKNOWN"}
    assert sheets["CT"].attrs["data-total"] == "2" and len(sheets["CT"].find_all("img")) == 2
    assert dom.by_id("hist-series").attrs["data-total"] == "5"
    assert dom.by_id("hist-images").attrs["data-total"] == "14"
    (error_row,) = dom.by_id("errors").find_all("tr")[1:]
    assert "<bad>" in error_row.text
    # escaping: the hostile texts never become markup
    assert HOSTILE not in markup and "<bad>" not in markup and "<script" not in markup
    assert "&lt;script&gt;" in markup and "a&quot;&lt;b&gt;&amp;&#x27;.dcm" in markup
    assert "scan-\\xff.dcm" in markup
    # the tables beside it
    out = tmp_path / "report"
    for name in ("images.csv", "images.parquet", "series.csv", "series.parquet", "errors.jsonl"):
        assert (out / name).is_file(), name
    assert len(pd.read_parquet(out / "images.parquet")) == 14
    assert pd.read_csv(out / "series.csv")["SeriesDescription"].tolist()[2] == HOSTILE
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_the_page_refers_to_nothing_outside_itself(archive, tmp_path):
    images, series = _tables(archive)
    markup = write_archive_report(images, series, tmp_path).read_text("utf-8")
    dom = parse_dom(markup)
    for node in dom.iter():
        assert node.tag not in ("script", "link", "iframe", "object", "embed", "base"), node.tag
        src = node.attrs.get("src")
        assert src is None or src.startswith("data:image/png;base64,")
        href = node.attrs.get("href")
        assert href is None or not re.match(r"^[a-z]+:", href), href  # same-folder links only
    assert "url(" not in markup and "@import" not in markup
    (csp,) = [m for m in dom.find_all("meta") if m.attrs.get("http-equiv")]
    assert "default-src 'none'" in csp.attrs["content"]


def test_caps_sample_the_sheets_and_list_flagged_items_past_the_limit(archive, tmp_path):
    images, series = _tables(archive)
    page = write_archive_report(images, series, tmp_path, max_per_sheet=1, max_flagged=1)
    dom = parse_dom(page.read_text("utf-8"))
    ct = dom.by_id("sheet-CT")
    assert ct.attrs["data-shown"] == "1" and ct.attrs["data-total"] == "2"
    assert "1 of 2 series shown" in ct.text and "1 not shown" in ct.text
    assert len(dom.by_id("flagged").find_all("article")) == 1
    assert len(dom.by_id("flagged-rest").find_all("tr")) == 1 + 2  # header + the two left


def test_without_a_series_table_the_report_is_per_image(archive, tmp_path):
    images, series = _tables(archive)
    write_archive_report(images, series, tmp_path)  # an earlier report with a series table
    page = write_archive_report(images, None, tmp_path, errors=None)
    dom = parse_dom(page.read_text("utf-8"))
    head = [th.attrs.get("data-column") for th in dom.by_id("class-counts").find_all("th")]
    assert head == [None, "decoded"]
    assert len(dom.by_id("flagged").find_all("article")) == 3
    assert dom.find_all(id="hist-series") == [] and dom.by_id("hist-images")
    assert dom.by_id("no-errors")
    assert not (tmp_path / "series.csv").exists() and not (tmp_path / "series.parquet").exists()


def test_an_empty_archive_still_writes_a_page(tmp_path):
    page = write_archive_report(pd.DataFrame(), pd.DataFrame(), tmp_path)
    dom = parse_dom(page.read_text("utf-8"))
    assert dom.by_id("no-flagged") and "Nothing was classified" in dom.by_id("confidence").text


def test_user_mistakes_are_refused_before_anything_is_written(archive, tmp_path):
    images, series = _tables(archive)
    for option in ({"thumb_size": 8}, {"thumb_size": 4096}, {"max_per_sheet": -1}):
        with pytest.raises(ValueError, match=next(iter(option))):
            write_archive_report(images, series, tmp_path / "r", **option)
    assert not (tmp_path / "r").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        write_archive_report(images, series, a_file)
