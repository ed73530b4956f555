"""The report of a real predict run, rendered by a real headless Chromium.

An archive of real files (pydicom's test files: CT, MR, a multi-frame MR, ultrasound, a SEG, a
computed radiograph, a CT whose Modality was rewritten to MR, a blank PNG export, a file whose
name is not UTF-8, and two unreadable files) is classified by the bundled default model; the
report of its tables is opened in Chromium, and the DOM that Chromium rendered is checked
against the tables: the class counts, a decodable thumbnail for every conflict and every
``UNKNOWN``, the histograms, and no request made by the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from hypermodal.common.paths import path_text
from hypermodal.inference import predict
from hypermodal.inference.report import write_archive_report
from tests.helpers import pydicom_file
from tests.inference.report.browser import (
    chromium_binary,
    decode_data_uri,
    page_requests,
    parse_dom,
    run_chromium,
    table_numbers,
)

pytestmark = pytest.mark.slow
THUMB = 112


def _relabelled(src, dst, modality: str) -> None:
    ds = pydicom.dcmread(src)
    ds.Modality = modality  # a wrong header: CT pixels that claim another modality
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dst)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    for folder in ("ct", "mr", "misc", "exports"):
        (root / folder).mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), root / "ct" / "ct.dcm")
    _relabelled(pydicom_file("CT_small.dcm"), root / "ct" / "relabelled.dcm", "MR")
    shutil.copy(pydicom_file("MR_small.dcm"), root / "mr" / "mr.dcm")
    shutil.copy(pydicom_file("emri_small.dcm"), root / "mr" / "emri.dcm")  # 10 frames
    shutil.copy(pydicom_file("US1_UNCR.dcm"), root / "misc" / "us.dcm")
    shutil.copy(pydicom_file("liver_1frame.dcm"), root / "misc" / "seg.dcm")
    shutil.copy(pydicom_file("RG1_UNCR.dcm"), root / "misc" / "cr.dcm")
    shutil.copy(pydicom_file("MR_truncated.dcm"), root / "misc" / "broken.dcm")
    (root / "misc" / "notes.txt").write_text("not an image\n")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "exports" / "blank.png")
    raw = os.path.join(os.fsencode(root / "exports"), b"scan-\xff.dcm")
    with open(raw, "wb") as fh:  # a name that is not UTF-8: a series of its own
        _relabelled(pydicom_file("CT_small.dcm"), fh, "CT")
    return root


@pytest.fixture(scope="module")
def rendered(archive, tmp_path_factory):
    """Predict the archive, write its report, and let Chromium render it."""
    chromium_binary()  # skip early, before predicting, when there is no browser
    work = tmp_path_factory.mktemp("report")
    summary = predict(
        [archive],
        None,
        work / "series.parquet",
        images_out=work / "images.csv",
        workers=2,
        progress=False,
    )
    images = pd.read_csv(work / "images.csv")
    series = pd.read_parquet(work / "series.parquet")
    errors = work / "series.parquet.errors.jsonl"
    page = write_archive_report(
        images,
        series,
        work / "out",
        errors=errors,
        thumb_size=THUMB,
        notes=summary.warnings,
        title="Test archive",
    )
    netlog = work / "netlog.json"
    dom = run_chromium(page.as_uri(), "--dump-dom", netlog=netlog)
    return {
        "page": page,
        "images": images,
        "series": series,
        "errors": [json.loads(x) for x in errors.read_text().splitlines()],
        "dom": parse_dom(dom),
        "netlog": netlog,
        "work": work,
    }


def test_the_class_counts_chromium_shows_match_the_tables(rendered):
    series, images = rendered["series"], rendered["images"]
    shown = table_numbers(rendered["dom"].by_id("class-counts"), "class")
    total = shown.pop("total")
    assert total == {
        "series": len(series),
        "images": int(series["num_images"].sum()),
        "decoded": len(images),
    }
    for cls, values in shown.items():
        mine = series[series["prediction"] == cls]
        assert values["series"] == len(mine), cls
        assert values["images"] == int(mine["num_images"].sum()), cls
        assert values["decoded"] == int((images["prediction"] == cls).sum()), cls
    assert set(series["prediction"]) <= set(shown)
    # the archive's classes: CT, MR, XR, OTHER (ultrasound, the SEG) and UNKNOWN (the blank PNG)
    assert {"CT", "MR", "XR", "OTHER", "UNKNOWN"} <= {c for c, v in shown.items() if v["series"]}
    folders = table_numbers(rendered["dom"].by_id("folder-counts"), "source")
    per_folder = {name: values["total"] for name, values in folders.items()}
    assert per_folder == {"ct": 2, "exports": 2, "misc": 3, "mr": 2}
    assert sum(per_folder.values()) == len(series)


def test_every_conflict_and_unknown_has_a_thumbnail_that_decodes(rendered):
    series, images = rendered["series"], rendered["images"]
    flagged = set(series.loc[series["agreement"].eq("conflict"), "path"])
    flagged |= set(series.loc[series["prediction"].eq("UNKNOWN"), "path"])
    flagged_images = images[images["agreement"].eq("conflict") | images["prediction"].eq("UNKNOWN")]
    keys = set(flagged_images["series"])
    flagged |= set(series.loc[series["series"].isin(keys), "path"])
    relabelled = series[series["path"].str.endswith("relabelled.dcm")].iloc[0]
    assert relabelled["agreement"] == "conflict" and relabelled["header_label"] == "MR"
    blank = series[series["path"].str.endswith("blank.png")]
    assert blank["prediction"].tolist() == ["UNKNOWN"]
    cards = rendered["dom"].by_id("flagged").find_all("article")
    assert {c.attrs["data-path"] for c in cards} == {path_text(p) for p in flagged}
    for card in cards:
        figures = card.find_all("figure")
        assert figures, card.attrs["data-path"]
        for fig in figures:
            assert "data-unreadable" not in fig.attrs, fig.attrs
            (img,) = fig.find_all("img")
            picture = decode_data_uri(img.attrs["src"])
            assert max(picture.size) == THUMB
            assert picture.size == (int(img.attrs["width"]), int(img.attrs["height"]))
            caption = fig.find_all("figcaption")[0].text
            assert fig.attrs["data-path"] in caption and fig.attrs["data-prediction"] in caption
            assert "header" in caption and re.search(r"\d\.\d\d", caption)
    conflict = next(c for c in cards if c.attrs["data-path"].endswith("relabelled.dcm"))
    assert "conflict" in conflict.attrs["data-kind"] and "the header says MR" in conflict.text
    unknown = next(c for c in cards if c.attrs["data-path"].endswith("blank.png"))
    assert "unknown" in unknown.attrs["data-kind"]


def test_histograms_sheets_and_errors_are_on_the_page(rendered):
    dom, series, images = rendered["dom"], rendered["series"], rendered["images"]
    for element, table in (("hist-series", series), ("hist-images", images)):
        svg = dom.by_id(element)
        assert svg.tag == "svg" and int(svg.attrs["data-total"]) == len(table)
        bars = [r for r in svg.iter("rect") if "data-bin" in r.attrs]
        assert sum(int(r.attrs["data-count"]) for r in bars) == len(table)
    sheets = {s.attrs["data-class"]: s for s in dom.find_all("div", class_="sheet-block")}
    assert set(sheets) == set(series["prediction"])
    for cls, block in sheets.items():
        assert int(block.attrs["data-total"]) == int((series["prediction"] == cls).sum())
        for img in block.find_all("img"):
            decode_data_uri(img.attrs["src"])
    listed = [row.find_all("td")[0].text for row in dom.by_id("errors").find_all("tr")[1:]]
    assert sorted(listed) == sorted(e["path"] for e in rendered["errors"])
    assert any(name.endswith("broken.dcm") for name in listed)
    assert "scan-\\xff.dcm" in dom.by_id("counts").text or any(
        "scan-\\xff.dcm" in f.attrs.get("data-path", "") for f in dom.find_all("figure")
    )


def test_the_page_makes_no_request_and_its_images_decode_in_the_browser(rendered, tmp_path):
    assert page_requests(rendered["netlog"]) == []
    for node in rendered["dom"].iter():
        assert node.tag != "script"
        src = node.attrs.get("src")
        assert src is None or src.startswith("data:image/png;base64,")
    # the check can see a request: a page that asks for one is caught
    probe = tmp_path / "probe.html"
    probe.write_text('<!DOCTYPE html><img src="http://report-probe.invalid/x.png">')
    run_chromium(probe.as_uri(), "--dump-dom", netlog=tmp_path / "probe.json")
    assert page_requests(tmp_path / "probe.json") == ["http://report-probe.invalid/x.png"]
    # Chromium itself decodes every image: a copy of the page with a counting script (the page
    # forbids scripts, so its policy is dropped from the copy)
    markup = rendered["page"].read_text("utf-8")
    markup = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", markup)
    script = (
        "<script>addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.images=i.length;document.body.dataset.decoded="
        "i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script>"
    )
    counted = tmp_path / "counted.html"
    counted.write_text(markup.replace("</body>", script + "</body>"), "utf-8")
    body = parse_dom(run_chromium(counted.as_uri(), "--dump-dom")).find_all("body")[0]
    assert int(body.attrs["data-images"]) == len(rendered["dom"].find_all("img")) > 0
    assert body.attrs["data-decoded"] == body.attrs["data-images"]


def test_a_screenshot_shows_the_page(rendered):
    shot = rendered["work"] / "report.png"
    run_chromium(rendered["page"].as_uri(), f"--screenshot={shot}", "--window-size=1280,2200")
    picture = np.asarray(Image.open(shot).convert("L"))
    assert picture.shape == (2200, 1280)
    assert picture.std() > 20  # text, tables, thumbnails: not a blank page
    assert (picture[:60] < 60).mean() > 0.5  # the dark title band at the top
