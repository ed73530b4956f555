"""Expected failures end in one ``error: …`` line on stderr and exit status 2, never a traceback."""

import json

import pytest
import typer
from typer.testing import CliRunner

from hypermodal.cli import app, friendly_errors
from hypermodal.common import errors

runner = CliRunner()


def run(args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def _raising(exc: BaseException) -> typer.Typer:
    """A one-command app whose command raises ``exc`` inside :func:`friendly_errors`."""
    one = typer.Typer()

    @one.command()
    @friendly_errors
    def boom() -> None:
        raise exc

    return one


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (FileNotFoundError("split file s.json not found"), "error: split file s.json not found"),
        (FileExistsError("out exists"), "error: out exists"),
        (NotADirectoryError("not a folder"), "error: not a folder"),
        (errors.CheckpointError("x.pt is not a checkpoint"), "error: x.pt is not a checkpoint"),
        (errors.ResumeError("nothing to resume"), "error: nothing to resume"),
        (errors.SplitError("bad split"), "error: SplitError: bad split"),
        (errors.StoreError("no store"), "error: StoreError: no store"),
        (errors.ShardError("shard 3 is corrupt"), "error: ShardError: shard 3 is corrupt"),
        (errors.ImageReadError("a.dcm", "truncated"), "error: ImageReadError: a.dcm: truncated"),
        (errors.FetchError("server said 503"), "error: FetchError: server said 503"),
        (errors.SampleDownloadError("pip failed"), "error: SampleDownloadError: pip failed"),
        (errors.HypermodalError("anything"), "error: HypermodalError: anything"),
        (ValueError("bad value"), "error: ValueError: bad value"),
        (KeyError("CT"), "error: KeyError: 'CT'"),
    ],
)
def test_expected_errors_map_to_one_line_and_exit_2(exc, line):
    result = runner.invoke(_raising(exc), [])
    assert result.exit_code == 2
    assert result.stderr.strip() == line
    assert result.stdout == ""


def test_every_package_error_is_mapped():
    classes = [c for c in vars(errors).values() if isinstance(c, type)]
    package_errors = [c for c in classes if issubclass(c, errors.HypermodalError)]
    assert len(package_errors) > 10
    for cls in package_errors:
        exc = cls("f.dcm", "bad") if issubclass(cls, errors.ImageReadError) else cls("bad")
        result = runner.invoke(_raising(exc), [])
        assert result.exit_code == 2, cls
        assert result.stderr.startswith("error: "), cls


def test_a_bug_keeps_its_traceback():
    result = runner.invoke(_raising(RuntimeError("a bug")), [])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_a_bad_split_file_is_one_error_line(tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text("{not json")
    r = run(["store", tmp_path / "c.parquet", "--split", bad, "--out", tmp_path / "store"])
    assert_one_error_line(r, "SplitError:", "not valid JSON")
    csv = tmp_path / "split.csv"
    csv.write_text("name,fold\na,train\n")
    r = run(["store", tmp_path / "c.parquet", "--split", csv, "--out", tmp_path / "store"])
    assert_one_error_line(r, "SplitError:", "dataset,split")


def test_a_missing_store_is_one_error_line(tmp_path):
    empty = tmp_path / "not-a-store"
    empty.mkdir()
    r = run(["info", empty])
    assert_one_error_line(r, "StoreError:", "is not a finished store")
    r = run(["shard", empty, "--out", tmp_path / "shards", "--no-progress"])
    assert_one_error_line(r, "is not a finished store")


def test_bad_options_are_one_error_line(tmp_path):
    r = run(["split", tmp_path / "missing.parquet", "--out", tmp_path / "s.json"])
    assert_one_error_line(r, "not found")
    r = run(["info", tmp_path / "notes.txt"])
    assert_one_error_line(r, "ValueError: don't know how to describe")
    r = run(["plan", "--out", tmp_path])
    assert_one_error_line(r, "ValueError: give exactly one of --paper and --spec FILE")
    r = run(["fetch", "--to", tmp_path])
    assert_one_error_line(r, "give either a PLAN file or --dicomweb URL")


def test_samples_passes_packages_on(tmp_path):
    r = run(
        [
            "samples",
            tmp_path / "out",
            "--cache",
            tmp_path / "cache",
            "--packages",
            "pydicom, no-such-package",
            "--no-progress",
        ]
    )
    assert_one_error_line(r, "KeyError:", "'no-such-package'")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_info_describes_a_json_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"assignments": {"a": "train"}}))
    r = run(["info", path])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"assignments": {"a": "train"}}


@pytest.mark.slow
def test_wrong_input_gives_a_clear_message_and_nonzero_exit(tmp_path, tiny_checkpoint):
    r = run(["catalog", tmp_path / "missing", "--out", tmp_path / "c.parquet"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run(["split", tmp_path / "missing.parquet", "--out", tmp_path / "s.json"])
    assert r.exit_code == 2 and "not found" in r.output
    r = run(["store", tmp_path / "c.parquet", "--split", tmp_path / "s.json", "--out", tmp_path])
    assert r.exit_code == 2 and "error:" in r.output
    r = run(["train", tmp_path, "--out", tmp_path / "r", "--model", "alexnet"])
    assert r.exit_code == 2 and "resnet18" in r.output
    r = run(["predict", tmp_path, "--model", tiny_checkpoint, "--out", tmp_path / "p.xlsx"])
    assert r.exit_code == 2 and ".csv or .parquet" in r.output
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    r = run(["predict", tmp_path, "--model", bogus, "--out", tmp_path / "p.csv"])
    assert r.exit_code == 2 and "error:" in r.output
    r = run(["split", tmp_path / "c.parquet", "--out", tmp_path / "s.json", "--cap", "CT:5"])
    assert r.exit_code == 2
    r = run(["catalog"])
    assert r.exit_code != 0
