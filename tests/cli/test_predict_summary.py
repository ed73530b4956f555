"""``predict`` ends with a one-screen summary, and says so when its input holds no image."""

import json

import pandas as pd
import pydicom
from typer.testing import CliRunner

from hypermodal.cli import app
from tests.helpers import copy_into, make_ct_series, pydicom_file

runner = CliRunner()


def run(args):
    return runner.invoke(app, [str(a) for a in args])


def test_summary_names_classes_conflicts_errors_and_model(tmp_path):
    src = tmp_path / "in"
    make_ct_series(src / "ct", 12)
    copy_into(pydicom_file("MR_small.dcm"), src, "mr.dcm")
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.Modality = "MR"  # CT pixels whose header claims MR
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(src / "relabelled.dcm")
    copy_into(pydicom_file("MR_truncated.dcm"), src, "broken.dcm")
    out = tmp_path / "series.csv"
    r = run(["predict", src, "--out", out, "--no-progress", "--workers", "1", "--slices", "3"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    table = pd.read_csv(out)
    assert summary["series"] == len(table) == 3  # without any extra option
    assert summary["files_seen"] == 15 and summary["files_skipped"] == 1
    assert summary["files_predicted"] == 5 and summary["files_sampled_out"] == 9
    text = r.stderr
    assert "15 files: 5 decoded, 9 sampled out, 1 unreadable" in text
    assert "up to 3 images per series" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:5]}
    # the 12-file CT series, MR_small, and the relabelled file: CT pixels, an MR header — the
    # fused class is the model's call (header trust against image evidence), the conflict is not
    assert rows["all"] == ["3", "14"] and set(rows) == {"CT", "MR", "all"}
    relabelled = table.loc[table["path"].str.endswith("relabelled.dcm"), "prediction"].item()
    assert rows["CT"] == (["2", "13"] if relabelled == "CT" else ["1", "12"])
    assert "conflicts: 1 series" in text
    line = next(x for x in text.splitlines() if "relabelled.dcm: header MR, pixels" in x)
    assert line.endswith(f"features CT -> {relabelled}")
    assert f"errors: 1 files could not be read (reasons in {out}.errors.jsonl)" in text
    assert "model: " in text and "hypermodal-default" in text
    assert len(text.splitlines()) < 25  # one screen


def test_an_empty_folder_is_an_error_and_writes_nothing(tmp_path, tiny_checkpoint):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "p.csv"
    r = run(["predict", tmp_path / "empty", "--model", tiny_checkpoint, "--out", out])
    assert r.exit_code == 2 and "Traceback" not in r.output
    (line,) = r.stderr.strip().splitlines()
    assert line == f"error: no files under {tmp_path / 'empty'}: nothing to classify"
    assert not out.exists()


def test_a_folder_of_junk_warns_and_writes_empty_tables(tmp_path, tiny_checkpoint):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image\n")
    (junk / "empty.dcm").write_bytes(b"")
    out, images = tmp_path / "p.csv", tmp_path / "i.parquet"
    args = ["predict", junk, "--model", tiny_checkpoint, "--out", out, "--images-out", images]
    r = run([*args, "--no-progress", "--workers", "1"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["series"] == 0 and summary["files_skipped"] == 2 == summary["files_seen"]
    assert f"warning: no images found in 2 file(s) under {junk}" in r.stderr
    assert len(pd.read_csv(out)) == 0 and "prediction" in pd.read_csv(out).columns
    assert len(pd.read_parquet(images)) == 0
    assert len((tmp_path / "p.csv.errors.jsonl").read_text().splitlines()) == 2


def test_slices_must_be_positive(tmp_path):
    (tmp_path / "in").mkdir()
    r = run(["predict", tmp_path / "in", "--out", tmp_path / "p.csv", "--slices", "0"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: --slices must be at least 1, got 0"


def test_the_commands_default_to_the_library_sample_size():
    from hypermodal.cli import predict, sort
    from hypermodal.inference import DEFAULT_SLICES
    from hypermodal.sort.place import MODES

    assert predict.DEFAULT_SLICES == sort.DEFAULT_SLICES == DEFAULT_SLICES
    assert sort.MODES == MODES
