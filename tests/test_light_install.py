"""The light install: ``pip install hypermodal`` (no extras) classifies without PyTorch.

A fresh virtual environment gets the package from this checkout (non-editable, from a copy of
its sources; the dependencies come from the package registry), ``import torch`` fails there, and
``hypermodal predict`` classifies a folder of real DICOM and NIfTI files with the bundled model on
ONNX Runtime, deciding exactly as the PyTorch path of the same model does here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermodal.default_model import MODEL_PATH
from hypermodal.inference import predict
from tests.helpers import REAL_IMAGE_FILES, REPO, checkpoint_from_bundle, nibabel_file, pydicom_file
from tests.servers.pacs_data import loaded_pacs, series_metadata

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _sources(dst: Path) -> Path:
    """What ``pip install`` needs of the checkout, copied (an in-tree build would write
    ``build/`` and ``*.egg-info`` into the working tree)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    shutil.copytree(
        REPO / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dst


def _site_packages_size(python: Path) -> int:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    du = subprocess.run(["du", "-sk", site.stdout.strip()], capture_output=True, text=True)
    return int(du.stdout.split()[0]) * 1024


def test_pip_install_without_extras_predicts_without_pytorch(tmp_path):
    (tmp_path / "src-copy").mkdir()
    src = _sources(tmp_path / "src-copy")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, exe = venv / "bin" / "python", venv / "bin" / "hypermodal"
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=2000,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    # a folder of real DICOM (CT, MR, multi-frame MR, JPEG 2000 CR, ultrasound) and NIfTI
    folder = tmp_path / "archive"
    folder.mkdir()
    for source, name in REAL_IMAGE_FILES:
        path = pydicom_file(name) if source == "pydicom" else nibabel_file(name)
        shutil.copy2(path, folder / name)
    light = tmp_path / "light.csv"
    r = subprocess.run(
        [exe, "predict", str(folder), "--out", str(light), "--all-slices", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "hypermodal-default.onnx.zip" in r.stderr  # the bundled model, from the install
    # the same model on PyTorch, here: a .pt checkpoint rebuilt from the bundle's weights
    heavy = tmp_path / "torch.csv"
    pt = checkpoint_from_bundle(MODEL_PATH, tmp_path / "default.pt")
    predict([folder], pt, heavy, slices=None, progress=False)
    a = pd.read_csv(light).set_index("series").sort_index()
    b = pd.read_csv(heavy).set_index("series").sort_index()
    assert len(a) == len(b) == len(REAL_IMAGE_FILES)
    assert (a["prediction"] == b["prediction"]).all()
    assert set(a["prediction"]) >= {"CT", "MR", "OTHER"}
    pcols = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(a[pcols].to_numpy(), b[pcols].to_numpy(), atol=1e-3)
    # a real Orthanc classified in place, and the answers written back, still without PyTorch
    with loaded_pacs(tmp_path / "pacs") as (srv, pacs):
        table = tmp_path / "pacs.csv"
        r = subprocess.run(
            [
                exe,
                "predict",
                "--dicomweb",
                srv.dicomweb,
                "--out",
                str(table),
                "--write-labels",
                "--per-series",
                "3",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        rows = pd.read_csv(table).set_index("SeriesInstanceUID")
        assert sorted(rows.index) == sorted(s.series for s in pacs.values())
        for s in pacs.values():
            assert rows.loc[s.series, "prediction"] == s.expected, s.name
            assert series_metadata(srv, s.series, "1024")["prediction"] == s.expected
    # what needs PyTorch says so in one line
    for args in (
        ["train", str(folder), "--out", str(tmp_path / "run")],
        ["crossval", "--out", str(tmp_path / "cv")],
    ):
        r = subprocess.run([exe, *args], capture_output=True, text=True, cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and lines == [
            f"error: {args[0]} needs PyTorch: pip install 'hypermodal[train]'"
        ], r.stderr
    light_size, full_size = _site_packages_size(py), _site_packages_size(Path(sys.executable))
    print(f"site-packages: light {light_size / 1e9:.2f} GB, full {full_size / 1e9:.2f} GB")
    assert light_size < full_size / 2
