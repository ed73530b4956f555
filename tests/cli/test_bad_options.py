"""Wrong options are one ``error:`` line and exit 2 before any work; handled files print no
tracebacks (issue 10, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import torch
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.common.errors import ResumeError
from hypermodal.split import SplitPlan
from hypermodal.train import TrainConfig, train
from tests.helpers import REPO, copy_into, make_store, pydicom_file

runner = CliRunner()


def one_error_line(result, *fragments: str) -> str:
    """The one ``error: …`` line of a command that failed cleanly, holding ``fragments``."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# (command line with placeholders, what the one error line says)
BAD_NUMBERS = [
    ("catalog IN --out c.parquet --workers 0", "--workers must be at least 1, got 0"),
    ("store c.parquet --split s.json --out st --size 0", "--size must be at least 8, got 0"),
    ("store c.parquet --split s.json --out st --size -224", "--size must be at least 8"),
    ("store c.parquet --split s.json --out st --workers 0", "--workers must be at least 1"),
    ("split c.parquet --out s.json --seed -1", "--seed must be at least 0"),
    ("split c.parquet --out s.json --ratios 0.7,0.4,-0.1", "--ratios expects three shares"),
    ("split c.parquet --out s.json --ratios 0.7,x,0.3", "--ratios expects three shares"),
    ("train st --out run --batch-size 0", "--batch-size must be at least 1, got 0"),
    ("train st --out run --epochs -1", "--epochs must be at least 1, got -1"),
    ("train st --out run --lr 0", "--lr must be greater than 0"),
    ("train st --out run --lr -0.1", "--lr must be greater than 0"),
    ("train st --out run --workers -1", "--workers must be at least 0"),
    ("train st --out run --seed -3", "--seed must be at least 0"),
    ("train st --out run --train-size 0", "--train-size must be at least 32"),
    ("train st --out run --max-images-per-epoch 0", "--max-images-per-epoch must be at least 1"),
    ("train st --out run --checkpoint-every-steps 0", "--checkpoint-every-steps must be at least"),
    ("evaluate m.pt st --out ev --batch-size 0", "--batch-size must be at least 1"),
    ("predict IN --out p.csv --batch-size 0", "--batch-size must be at least 1, got 0"),
    ("predict IN --out p.csv --workers 0", "--workers must be at least 1, got 0"),
    ("demo --out d --epochs 0", "--epochs must be at least 1"),
    ("demo --out d --max-images-per-epoch -5", "--max-images-per-epoch must be at least 1"),
    ("demo --out d --workers 0", "--workers must be at least 1"),
    ("shard st --out sh --shard-mb 0", "--shard-mb must be greater than 0"),
    ("shard st --out sh --seed -1", "--seed must be at least 0"),
    ("synth out --n 0", "--n must be at least 1"),
    ("synth out --frames 0", "--frames must be at least 1"),
    ("fetch plan.parquet --to d --workers 0", "--workers must be at least 1"),
    ("fetch plan.parquet --to d --retries 0", "--retries must be at least 1"),
    ("fetch plan.parquet --to d --timeout 0", "--timeout must be greater than 0"),
    ("fetch plan.parquet --to d --backoff -1", "--backoff must be at least 0"),
    ("build plan.parquet --out st --batch-series 0", "--batch-series must be at least 1"),
    ("build plan.parquet --out st --size 0", "--size must be at least 8"),
    ("build plan.parquet --out st --workers 0", "--workers must be at least 1"),
    ("plan --paper --out p --min-locations -1", "--min-locations must be at least 0"),
    ("plan --paper --out p --seed -1", "--seed must be at least 0"),
    ("simulate samples --out sim --scale 0", "--scale must be greater than 0"),
    ("crossval --out cv --workers 0", "--workers must be at least 1"),
]


def _args(line: str, tmp_path: Path) -> list[str]:
    """The command line with every path placeholder under ``tmp_path``."""
    return [w if w.startswith("-") or w[0].isdigit() else str(tmp_path / w) for w in line.split()]


@pytest.mark.parametrize(("line", "message"), BAD_NUMBERS, ids=[c[0] for c in BAD_NUMBERS])
def test_every_numeric_option_is_range_checked(line: str, message: str, tmp_path: Path) -> None:
    command, *rest = line.split()
    (tmp_path / "IN").mkdir()
    r = runner.invoke(app, [command, *_args(" ".join(rest), tmp_path)])
    one_error_line(r, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IN"]  # nothing was made


@pytest.mark.parametrize("command", ["train st --out run", "predict IN --out p.csv"])
def test_device_is_validated(command: str, tmp_path: Path) -> None:
    name, *rest = command.split()
    args = [name, *_args(" ".join(rest), tmp_path)]
    r = runner.invoke(app, [*args, "--device", "banana"])
    one_error_line(r, "unknown device 'banana'")
    if torch.cuda.is_available():
        missing = f"cuda:{torch.cuda.device_count()}"
        one_error_line(runner.invoke(app, [*args, "--device", missing]), "GPU")
    else:
        r = runner.invoke(app, [*args, "--device", "cuda"])
        one_error_line(r, "device 'cuda' requested but CUDA is not available")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("catalog IN --out x.csv", "the catalog is written as .parquet"),
        ("split c.parquet --out s.yaml", "the split file is written as .json"),
        ("predict IN --out p.xlsx", "the prediction table is written as .csv or .parquet"),
        ("predict IN --out p.csv --series-out s.txt", "the series table is written as .csv"),
        ("crossval --out cv --save-model m.onnx", "the model is written as .pt"),
    ],
)
def test_out_extensions_match_what_is_written(line: str, message: str, tmp_path: Path) -> None:
    command, *rest = line.split()
    (tmp_path / "IN").mkdir()
    one_error_line(runner.invoke(app, [command, *_args(" ".join(rest), tmp_path)]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IN"]


def test_resume_with_nothing_to_resume_is_an_error(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", n_per_class=(2, 1, 1))
    run = tmp_path / "run"
    for extra in ([], ["--epochs", "3"]):
        r = runner.invoke(app, ["train", str(store.path), "--out", str(run), "--resume", *extra])
        one_error_line(r, "nothing to resume", "start a new run without resume")
        assert not (run / "checkpoints" / "last.pt").exists()
    with pytest.raises(ResumeError, match="nothing to resume"):
        train(store.path, run, TrainConfig(epochs=1, device="cpu"), resume=True, progress=False)


# ------------------------------------------------------------------ handled files, quietly
def damaged(src: Path, dst: Path, fill: bytes = b"\xff") -> Path:
    """``src`` with the second half of its compressed pixel data overwritten by ``fill`` (the
    header and the codestream's own header stay valid): every decoder fails on it."""
    raw = bytearray(src.read_bytes())
    data = bytes(pydicom.dcmread(src).PixelData)
    start = raw.find(data[:64])
    assert start > 0
    raw[start + len(data) // 2 : start + len(data) - 16] = fill * (len(data) // 2 - 16)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(raw))
    return dst


def hypermodal(*args: str, verbose: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hypermodal", *(["--verbose"] if verbose else []), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_run_that_handles_bad_files_prints_no_tracebacks(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    copy_into(pydicom_file("CT_small.dcm"), corpus / "ct")
    bad = [
        damaged(pydicom_file("MR_small_jpeg_ls_lossless.dcm"), corpus / "mr" / "ls-ff.dcm"),
        damaged(pydicom_file("MR_small_jpeg_ls_lossless.dcm"), corpus / "mr" / "ls-00.dcm", b"\0"),
    ]
    catalog, split = tmp_path / "c.parquet", tmp_path / "split.json"
    done = hypermodal("catalog", str(corpus), "--out", str(catalog), "--workers", "1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["files_cataloged"] == 3  # the headers are sound
    SplitPlan(assignments={"ct": "train", "mr": "train"}, method="file").save(split)
    args = ["store", str(catalog), "--split", str(split), "--size", "32", "--workers", "1"]
    done = hypermodal(*args, "--out", str(tmp_path / "store"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    errors = [json.loads(x) for x in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in errors) == sorted(map(str, bad))
    summary = json.loads(done.stdout)
    assert summary["images_failed"] == 2 and summary["images_stored"] >= 1
    # --verbose shows more: at least hypermodal's own debug records
    loud = hypermodal(*args, "--out", str(tmp_path / "loud"), "--no-progress", verbose=True)
    assert loud.returncode == 0 and len(loud.stderr) > len(done.stderr)


_DECODE_WITH_PYDICOM = """
import sys
import pydicom
from hypermodal.common.logs import configure_logging

configure_logging(sys.argv[1] == "verbose")
try:
    pydicom.dcmread(sys.argv[2]).pixel_array
except Exception as exc:
    print("handled:", type(exc).__name__)
"""


def test_decoders_are_quiet_unless_verbose(tmp_path: Path) -> None:
    bad = damaged(pydicom_file("MR_small_jpeg_ls_lossless.dcm"), tmp_path / "ls-ff.dcm")
    quiet, loud = (
        subprocess.run(
            [sys.executable, "-c", _DECODE_WITH_PYDICOM, mode, str(bad)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for mode in ("quiet", "verbose")
    )
    assert quiet.stdout.startswith("handled:") and loud.stdout.startswith("handled:")
    assert quiet.stderr == "", quiet.stderr
    assert "Traceback" in loud.stderr  # what pydicom logs about each decoder that failed


def test_verbose_is_a_global_flag() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "--verbose" in r.output
