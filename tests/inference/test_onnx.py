"""The ONNX form of a model: same probabilities as PyTorch, verified on load, exported from .pt.

Every comparison runs on real images (pydicom, pydicom-data and nibabel files) prepared as
``predict`` prepares them, through the real exporter and ONNX Runtime.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.common.errors import CheckpointError
from hypermodal.default_model import MODEL_PATH
from hypermodal.inference import load_model, predict_proba, read_checkpoint
from hypermodal.inference.backends import cpu_count, is_onnx_bundle
from hypermodal.inference.onnx_bundle import ARRAYS_MEMBER, META_MEMBER, read_bundle
from hypermodal.inference.onnx_export import export_onnx, resize_matrix
from tests.helpers import checkpoint_from_bundle, real_model_inputs

#: the agreement the issue asks of fp32 ONNX Runtime against PyTorch
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def default_images() -> np.ndarray:
    return real_model_inputs(load_model(MODEL_PATH).preprocess)


def test_default_model_on_onnx_runtime_gives_the_pytorch_probabilities(default_images):
    onnx = load_model(MODEL_PATH)
    torch_net = load_model(MODEL_PATH, backend="torch")
    assert onnx.backend == "onnx" and torch_net.backend == "torch"
    assert isinstance(torch_net.model, torch.nn.Module) and not torch_net.model.training
    assert len(default_images) >= 20  # CT, MR, multi-frame MR, CR, US, a NIfTI volume
    p_onnx = predict_proba(onnx, default_images)
    p_torch = predict_proba(torch_net, default_images)
    assert p_onnx.shape == (len(default_images), 5) and p_onnx.dtype == np.float32
    np.testing.assert_allclose(p_onnx.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(p_onnx - p_torch).max() <= TOLERANCE
    assert (p_onnx.argmax(axis=1) == p_torch.argmax(axis=1)).all()
    # one image, an empty batch, a batch larger than one ONNX Runtime call
    np.testing.assert_allclose(predict_proba(onnx, default_images[0]), p_onnx[:1], atol=1e-6)
    assert predict_proba(onnx, default_images[:0]).shape == (0, 5)
    big = np.concatenate([default_images] * 4)
    np.testing.assert_allclose(predict_proba(onnx, big), np.concatenate([p_onnx] * 4), atol=1e-6)
    with pytest.raises(ValueError, match="expects 96×96"):
        predict_proba(onnx, np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        predict_proba(onnx, default_images.astype(np.float32))
    # the evidence and settings are those of the bundle, on either backend
    assert onnx.classes == torch_net.classes == ("CT", "MR", "PT", "XR", "OTHER")
    assert onnx.evidence is not None and onnx.evidence.series_forest is not None
    assert onnx.meta["onnx"]["precision"] == "fp32" and onnx.meta["path"] == str(MODEL_PATH)


def test_onnx_runtime_uses_the_cpus_given_and_shares_them():
    loaded = load_model(MODEL_PATH, threads=1)
    opts = loaded.model.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert load_model(MODEL_PATH).model.threads == cpu_count()
    assert loaded.model.providers == ["CPUExecutionProvider"]


def test_resize_matrix_is_pytorchs_antialiased_resize():
    rng = np.random.default_rng(0)
    x = rng.random((3, 128, 128), dtype=np.float32)
    r = resize_matrix(128, 96)
    expected = F.interpolate(
        torch.from_numpy(x)[:, None], size=(96, 96), mode="bilinear", antialias=True
    )[:, 0].numpy()
    np.testing.assert_allclose(r @ x @ r.T, expected, atol=2e-6)


@pytest.mark.slow
def test_a_pt_checkpoint_exports_and_runs_the_same_at_another_input_size(tmp_path):
    """fp32 weights (float16 cannot hold them) and images preprocessed at 128 px for a network
    trained at 96: the bundle stores fp32 and resizes as training did."""
    pt = checkpoint_from_bundle(MODEL_PATH, tmp_path / "m.pt", size=128, noise=1e-3)
    out = tmp_path / "m.onnx.zip"
    summary = export_onnx(pt, out)
    assert summary["precision"] == "fp32" and out.stat().st_size == summary["bytes"]
    assert is_onnx_bundle(out) and not is_onnx_bundle(pt)
    bundle = read_bundle(out)
    assert bundle.resize.shape == (96, 128)
    assert bundle.meta["onnx"]["max_abs_diff_vs_torch"] <= TOLERANCE
    assert bundle.meta["source"]["tensor_digest"] == read_checkpoint(pt)["tensor_digest"]
    a, b = load_model(pt), load_model(out)
    assert (a.backend, b.backend) == ("torch", "onnx") and b.preprocess.size == 128
    images = real_model_inputs(a.preprocess)
    assert np.abs(predict_proba(a, images) - predict_proba(b, images)).max() <= TOLERANCE
    # the evidence crossed over unchanged: the forests' arrays, the fitted fusion
    for name in ("forest", "series_forest"):
        fa, fb = getattr(a.evidence, name), getattr(b.evidence, name)
        for field in ("left", "right", "feature", "threshold", "value"):
            np.testing.assert_array_equal(getattr(fa, field), getattr(fb, field))
    np.testing.assert_array_equal(a.evidence.fusion.full.weights, b.evidence.fusion.full.weights)
    assert a.evidence.info == b.evidence.info
    # the same checkpoint gives the same bytes (a fixed zip time stamp, sorted content)
    export_onnx(pt, tmp_path / "again.onnx.zip")
    assert (tmp_path / "again.onnx.zip").read_bytes() == out.read_bytes()


def test_the_shipped_weights_are_float16_and_computed_in_float32():
    bundle = read_bundle(MODEL_PATH)
    assert "122 of 123 initializers stored as float16" in bundle.meta["onnx"]["weights"]
    assert MODEL_PATH.stat().st_size <= 25 * 1024 * 1024
    assert not MODEL_PATH.with_suffix("").with_suffix(".pt").exists()  # only the bundle ships


def _rewrite(src, dst, change) -> None:
    """Copy bundle ``src`` to ``dst`` with ``change(name, bytes) -> bytes`` applied to its
    members: a new, valid zip (CRCs right), as a tool or a person editing it would leave it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name, zin.read(name)))


def test_a_changed_or_broken_bundle_is_refused(tmp_path):
    def forest(name, data):
        if name != ARRAYS_MEMBER:
            return data
        arrays = dict(np.load(io.BytesIO(data)))
        arrays["evidence.forest.value"][0, 0, 0] += 0.5  # one leaf of one tree
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def class_name(name, data):
        return data.replace(b'"CT"', b'"XR"', 1) if name == META_MEMBER else data

    def future(name, data):
        if name != META_MEMBER:
            return data
        return json.dumps({**json.loads(data), "format_version": 99}).encode()

    for change, message in (
        (forest, "content digest mismatch"),
        (class_name, "content digest mismatch"),
        (future, "version 99"),
    ):
        bad = tmp_path / f"{change.__name__}.onnx.zip"
        _rewrite(MODEL_PATH, bad, change)
        with pytest.raises(CheckpointError, match=message):
            load_model(bad)
    cut = tmp_path / "cut.onnx.zip"
    cut.write_bytes(MODEL_PATH.read_bytes()[:5_000_000])
    with pytest.raises(CheckpointError):
        load_model(cut)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(MODEL_PATH)
    with pytest.raises(CheckpointError, match="export it first"):
        load_model(checkpoint_from_bundle(MODEL_PATH, tmp_path / "m.pt"), backend="onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        load_model(MODEL_PATH, backend="tensorflow")


def test_export_command_checks_its_arguments_in_one_line(tmp_path):
    runner = CliRunner()
    model, out = str(MODEL_PATH), str(tmp_path / "m.onnx.zip")
    cases = [
        (["export", model, "--out", str(tmp_path / "m.onnx")], "ending in it"),
        (["export", model, "--out", str(tmp_path / "m.zip")], ".onnx.zip"),
        (["export", str(tmp_path / "none.pt"), "--out", out], "exist"),
        (["export", model, "--out", out, "--calibration", "."], "only used with --int8"),
        (["export", model, "--out", out, "--seed", "-1"], "at least 0"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2, r.output
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not list(tmp_path.iterdir())


def test_predict_with_the_bundle_on_the_cpu_never_imports_pytorch(tmp_path):
    """Where PyTorch is installed too, the ONNX path leaves it alone (importing it costs a
    second or more and hundreds of megabytes per process)."""
    import subprocess
    import sys

    from tests.helpers import pydicom_file

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (folder / name).write_bytes(pydicom_file(name).read_bytes())
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        "from typer.main import get_command\n"
        "from hypermodal.cli import app\n"
        "if __name__ == '__main__':\n"
        f"    args = ['predict', {str(folder)!r}, '--out', {str(tmp_path / 'p.csv')!r},"
        " '--no-progress', '--device', 'auto']\n"
        "    get_command(app).main(args, standalone_mode=False)\n"
        "    print('torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"
    assert "hypermodal-default.onnx.zip" in r.stderr
