"""Predict loses only the file that crashed its decoding worker, and goes on.

The crashes are real and happen in predict's own decoding workers
(:class:`tests.common.crash_files.NativeDecodingEngine`): GDCM aborting on a JPEG-LS file whose
Rows/Columns exceed its image, pylibjpeg-rle panicking on a 16-bit RLE file under its size, and
a decode that never ends. Every good file must get exactly the predictions it gets without them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hypermodal.common.isolation import DecodeLimits
from hypermodal.common.rejects import read_errors
from hypermodal.inference import predict
from tests.common import crash_files as cf
from tests.helpers import copy_as, nibabel_file, pydicom_file


@pytest.fixture(scope="module")
def archive(tmp_path_factory, real_corpus) -> Path:
    root, _ = real_corpus
    arch = tmp_path_factory.mktemp("predict-crash")
    shutil.copy(pydicom_file("emri_small.dcm"), arch / "emri.dcm")
    shutil.copy(pydicom_file("CT_small.dcm"), arch / "ct.dcm")
    shutil.copy(nibabel_file("anatomical.nii"), arch / "brain.nii")
    shutil.copy(root / "png-xr" / "leg.png", arch / "leg.png")
    shutil.copy(pydicom_file("MR_truncated.dcm"), arch / "broken.dcm")
    return arch


def _compare(out: Path, clean: Path, crashed: set[str]) -> dict[str, str]:
    """The reasons of the crashed files; the other rows and errors as in the clean run."""
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(clean), check_exact=True)
    errors = read_errors(out.with_name(out.name + ".errors.jsonl"))
    reasons = {Path(e["path"]).name: e["reason"] for e in errors}
    assert crashed <= set(reasons)
    rest = [e for e in errors if Path(e["path"]).name not in crashed]
    assert rest == read_errors(clean.with_name(clean.name + ".errors.jsonl"))
    return reasons


@pytest.fixture(scope="module")
def clean(archive, tiny_checkpoint, tmp_path_factory) -> Path:
    """Predictions for the archive without any crashing file."""
    out = tmp_path_factory.mktemp("predict-clean") / "clean.csv"
    predict([archive], tiny_checkpoint, out, batch_size=4, workers=2, progress=False)
    return out


@pytest.mark.slow
def test_abort_and_panic_cost_their_file_only(archive, clean, tiny_checkpoint, tmp_path):
    jls = cf.jls_abort_file(tmp_path / "crash" / "jls-128.dcm")
    rle = cf.rle_panic_file(tmp_path / "crash" / "rle-32.dcm")
    out = tmp_path / "pred.csv"
    with cf.NativeDecodingEngine(2) as engine:  # the good files come between the two
        summary = predict(
            [jls, archive, rle], tiny_checkpoint, out, batch_size=4, progress=False, engine=engine
        )
    assert summary.files_seen == 7 and summary.files_skipped == 3 and summary.reconciles()
    reasons = _compare(out, clean, {"jls-128.dcm", "rle-32.dcm"})
    assert reasons["jls-128.dcm"].startswith("decoder crashed: SIGABRT")
    assert reasons["rle-32.dcm"].startswith("decoder panicked: index out of bounds")


@pytest.mark.slow
def test_a_decode_that_never_ends_costs_its_file_after_the_limit(
    archive, clean, tiny_checkpoint, tmp_path
):
    hang = copy_as(pydicom_file("CT_small.dcm"), tmp_path / "crash" / "b-hang.dcm")
    out = tmp_path / "pred.csv"
    with cf.NativeDecodingEngine(2, limits=DecodeLimits(timeout_s=5)) as engine:
        summary = predict(
            [hang, archive], tiny_checkpoint, out, batch_size=4, progress=False, engine=engine
        )
    assert summary.files_skipped == 2 and summary.reconciles()
    assert _compare(out, clean, {"b-hang.dcm"})["b-hang.dcm"] == "timed out after 5 s"


def test_cli_predict_takes_the_decoding_limits(archive, tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from hypermodal.cli import app

    out = tmp_path / "cli.csv"
    args = ["predict", str(archive), "--model", str(tiny_checkpoint), "--out", str(out)]
    args += ["--device", "cpu", "--no-progress", "--workers", "2"]
    result = CliRunner().invoke(app, [*args, "--timeout", "30", "--memory-limit", "2048"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_seen"] == 5
    result = CliRunner().invoke(app, [*args, "--memory-limit", "512"])
    assert result.exit_code == 2 and "at least 1024 MB" in result.output
