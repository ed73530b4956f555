"""The store batch feeding and the model input that training uses, importable from here too.

They are defined in :mod:`hypermodal.store.loader` (batches) and :mod:`hypermodal.inference.model`
(device, model input).
"""

from __future__ import annotations

from hypermodal.inference.model import resolve_device, to_model_input
from hypermodal.store.loader import (
    Batch,
    BatchFeeder,
    BatchSource,
    batch_plan,
    epoch_order,
    resolve_workers,
    shard_rows,
)

__all__ = [
    "Batch",
    "BatchFeeder",
    "BatchSource",
    "batch_plan",
    "epoch_order",
    "resolve_device",
    "resolve_workers",
    "shard_rows",
    "to_model_input",
]
