"""Real sample images shipped inside PyPI packages, gathered into one dataset per acquisition."""

from __future__ import annotations

from hypermodal.sources.samples.gather import (
    gather_samples,
)
from hypermodal.sources.samples.manifest import (
    PACKAGES,
    manifest_for,
)

__all__ = [
    "PACKAGES",
    "gather_samples",
    "manifest_for",
]
