"""``sort`` lays real files out by class/patient/study/series, never overwriting, resumable."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.inference import predict
from hypermodal.sort import MANIFEST_NAME, sort_archive
from tests.helpers import copy_into, make_ct_series, nibabel_file, pydicom_file

runner = CliRunner()
SERIES = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A 6-file CT series with hostile header text, a 10-frame MR, a NIfTI, junk."""
    root = tmp_path_factory.mktemp("archive")
    make_ct_series(
        root / "ct",
        6,
        series_uid=SERIES,
        PatientID="../../evil",
        SeriesDescription="a/b\x07c",
        StudyDescription="CT chest",
    )
    copy_into(pydicom_file("emri_small.dcm"), root, "emri.dcm")
    copy_into(nibabel_file("anatomical.nii"), root / "nifti", "brain.nii")
    (root / "notes.txt").write_text("not an image\n")
    return root


@pytest.fixture(scope="module")
def predictions(archive, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "series.csv"
    predict([archive], tiny_checkpoint, out, workers=1, progress=False)
    return out


def _files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and not p.name.startswith("sort-")
    }


def _series_row(predictions: Path, key: str) -> dict:
    df = pd.read_csv(predictions, dtype=str)
    return df[df["series"] == key].iloc[0].to_dict()


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_each_mode_lays_out_every_readable_file(archive, predictions, tmp_path, mode):
    dst = tmp_path / "sorted"
    s = sort_archive([archive], dst, mode=mode, predictions=predictions, progress=False)
    assert s.reconciles() and s.files_seen == 9 and s.placed == 8 and s.unreadable == 1
    placed = _files(dst)
    assert len(placed) == 8
    klass = _series_row(predictions, SERIES)["prediction"]
    # hostile header text stays inside DST as one readable folder name each
    ct = [p for rel, p in placed.items() if rel.startswith(f"{klass}/evil/20040119 CT chest/")]
    assert len(ct) == 6 and {p.parent.name for p in ct} == {"a_b_c"}
    nii = [rel for rel in placed if rel.endswith("brain.nii")]
    assert nii[0].split("/")[1:] == [
        "unknown-patient",
        "unknown-study",
        "unknown-series",
        "brain.nii",
    ]
    for p in placed.values():
        source = archive / (
            "emri.dcm"
            if p.name == "emri.dcm"
            else f"nifti/{p.name}"
            if p.name == "brain.nii"
            else f"ct/{p.name}"
        )
        assert p.read_bytes() == source.read_bytes()
        if mode == "symlink":
            assert p.is_symlink() and os.readlink(p) == str(source.resolve())
        elif mode == "hardlink":
            assert os.path.samefile(p, source)
        else:
            assert not p.is_symlink() and not os.path.samefile(p, source)
    manifest = pd.read_csv(dst / MANIFEST_NAME)
    assert len(manifest) == 9 and set(manifest["status"]) == {"placed", "unreadable"}
    assert manifest.loc[manifest.status == "unreadable", "source"].str.endswith("notes.txt").all()
    # a rerun is a resume: nothing new, nothing duplicated
    again = sort_archive([archive], dst, mode=mode, predictions=predictions, progress=False)
    assert again.already == 8 and again.placed == again.renamed == 0
    assert _files(dst).keys() == placed.keys()


def test_dry_run_touches_nothing(archive, predictions, tmp_path):
    dst = tmp_path / "sorted"
    manifest = tmp_path / "plan.csv"
    s = sort_archive(
        [archive], dst, dry_run=True, predictions=predictions, manifest=manifest, progress=False
    )
    assert not dst.exists()
    assert s.placed == 8 and s.dry_run
    plan = pd.read_csv(manifest)
    assert set(plan["status"]) == {"would place", "unreadable"}
    assert plan["target"].dropna().str.startswith(str(dst)).all()
    # and the CLI prints the plan, writes nothing
    r = runner.invoke(
        app,
        ["sort", str(archive), "--to", str(dst), "--dry-run", "--no-progress"]
        + ["--predictions", str(predictions)],
    )
    assert r.exit_code == 0, r.output
    assert "dry run: nothing touched" in r.stderr and " -> " in r.stderr
    assert json.loads(r.stdout)["placed"] == 8 and not dst.exists()


def test_collisions_never_overwrite(archive, predictions, tmp_path):
    dst = tmp_path / "sorted"
    plan = tmp_path / "plan.csv"
    sort_archive([archive], dst, dry_run=True, predictions=predictions, manifest=plan)
    target = Path(pd.read_csv(plan).query("source.str.endswith('emri.dcm')")["target"].iloc[0])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    s = sort_archive([archive], dst, mode="copy", predictions=predictions, progress=False)
    assert target.read_bytes() == b"someone else's file"  # untouched
    assert s.renamed == 1 and s.placed == 7
    moved = target.with_name("emri_2.dcm")
    assert moved.read_bytes() == (archive / "emri.dcm").read_bytes()
    again = sort_archive([archive], dst, mode="copy", predictions=predictions, progress=False)
    assert again.already == 8 and not target.with_name("emri_3.dcm").exists()


def test_a_killed_run_resumes_without_duplicates(archive, predictions, tmp_path):
    dst = tmp_path / "sorted"
    sort_archive([archive], dst, mode="copy", predictions=predictions, progress=False)
    placed = _files(dst)
    # what a kill -9 leaves: some files not placed yet, a copy half-written to a temporary name
    victims = sorted(placed)[::2]
    for rel in victims:
        placed[rel].unlink()
    half = placed[victims[0]]
    stale = half.with_name(f".{half.name}.999999999.abc123.tmp")
    stale.write_bytes(b"half a copy")
    s = sort_archive([archive], dst, mode="copy", predictions=predictions, progress=False)
    assert s.placed == len(victims) and s.already == 8 - len(victims) and s.renamed == 0
    assert _files(dst).keys() == placed.keys() and not stale.exists()


def test_sort_predicts_when_given_no_table_and_never_reads_its_own_output(
    archive, tiny_checkpoint, tmp_path
):
    src = tmp_path / "src"
    shutil.copytree(archive, src)
    dst = src / "sorted"  # inside the source: its links must never become inputs
    s = sort_archive([src], dst, model=tiny_checkpoint, workers=1, progress=False)
    assert s.placed == 8 and s.predict["series"] == 3
    series = pd.read_csv(dst / "sort-series.csv")  # the decisions, reusable with --predictions
    assert len(series) == 3
    again = sort_archive([src], dst, model=tiny_checkpoint, workers=1, progress=False)
    assert again.files_seen == 9 and again.already == 8


def test_cli_sort_and_its_one_line_errors(archive, predictions, tmp_path):
    dst = tmp_path / "sorted"
    args = ["sort", str(archive), "--to", str(dst), "--predictions", str(predictions)]
    r = runner.invoke(app, [*args, "--mode", "hardlink", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["placed"] == 8 and f"manifest: {dst / MANIFEST_NAME}" in r.stderr
    r = runner.invoke(app, [*args, "--mode", "move"])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        "error: --mode must be one of symlink, hardlink, copy, got 'move'"
    ]
    r = runner.invoke(app, [*args[:4], "--predictions", str(tmp_path / "none.csv")])
    assert r.exit_code == 2 and "no such file" in r.stderr and "Traceback" not in r.output
