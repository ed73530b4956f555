"""Constants every reader shares: defined once here."""

from __future__ import annotations

import numpy as np

#: ITU-R BT.601 luma weights: colour (RGB) to grey, the same for every format.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

#: the first two bytes of a gzip stream (``.dcm.gz``, ``.nii.gz``)
GZIP_MAGIC = b"\x1f\x8b"
