"""Shared helpers for the reader tests: real files shipped in installed packages, tiny writers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

LUMA = np.array([0.299, 0.587, 0.114])


def pydicom_file(name: str) -> Path:
    """Path of one of pydicom's test files, never downloading.

    Files not in the pydicom wheel come from the ``pydicom-data`` package (a test dependency);
    without it the test is skipped with a reason that says so.
    """
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} needs the pydicom-data package (pip install pydicom-data)")
    return Path(str(path))


def nibabel_file(name: str, subdir: str = "tests/data") -> Path:
    """Path of a file in nibabel's own test data (shipped in the nibabel wheel)."""
    import nibabel

    path = Path(nibabel.__file__).parent / subdir / name
    if not path.exists():
        pytest.skip(f"nibabel does not ship {subdir}/{name}")
    return path


def copy_as(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` (e.g. to give a file a misleading name) and return ``dst``."""
    shutil.copyfile(src, dst)
    return dst


def truncate_copy(src: Path, dst: Path, keep: int) -> Path:
    """Write the first ``keep`` bytes of ``src`` to ``dst`` (negative: drop that many)."""
    data = src.read_bytes()
    dst.write_bytes(data[:keep])
    return dst


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an ``(..., 3)`` array, as float32."""
    return (rgb[..., :3].astype(np.float64) @ LUMA).astype(np.float32)
