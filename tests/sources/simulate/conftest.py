"""Real volumes for the simulation tests: nibabel's EPI head volume and pydicom's CT slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hypermodal.io import iter_images
from hypermodal.sources.simulate import SourceVolume, build_anatomy, read_volume
from tests.helpers import nibabel_file, pydicom_file


@pytest.fixture(scope="package")
def epi_volume() -> SourceVolume:
    """nibabel's ``example4d.nii.gz``: a real EPI head, 128 x 96 x 24 at 2 x 2 x 2.2 mm."""
    return read_volume(nibabel_file("example4d.nii.gz"), "nifti-epi", "MR", "HEAD")


@pytest.fixture(scope="package")
def epi_anatomy(epi_volume):
    return build_anatomy(epi_volume)


@pytest.fixture(scope="package")
def ct_volume() -> SourceVolume:
    """pydicom's ``CT_small.dcm`` (a real CT slice through a vertebra and the lungs, in HU)
    repeated along z into a 30 mm slab, in RAS+ axes."""
    path = pydicom_file("CT_small.dcm")
    _, hu = next(iter_images(path))  # rows anterior -> posterior, columns right -> left
    data = np.repeat(hu.T[::-1, ::-1, None], 30, axis=2).astype(np.float32)
    return SourceVolume("ct-small", Path(path), "CT", np.ascontiguousarray(data), (0.66, 0.66, 1.0))
