"""Evidence columns of a catalog-like table (a store manifest, a predict batch).

The stages that read evidence from a table (``train``, ``evaluate``, ``crossval``, ``predict``)
use these two helpers, so a header claim and a statistics row mean the same everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hypermodal.evidence.features import STAT_NAMES
from hypermodal.evidence.header import header_label
from hypermodal.labels import ClassVocabulary


def table_claims(table: pd.DataFrame, vocabulary: ClassVocabulary) -> list[str | None]:
    """The class each row's header claims (``modality`` and ``sop_class``; None: no claim)."""
    n = len(table)
    modality = table["modality"] if "modality" in table.columns else pd.Series([None] * n)
    sop = table["sop_class"] if "sop_class" in table.columns else pd.Series([None] * n)
    return [
        header_label(
            m if isinstance(m, str) else None, s if isinstance(s, str) else None, vocabulary
        )
        for m, s in zip(modality, sop, strict=True)
    ]


def stats_array(values: pd.Series) -> np.ndarray:
    """The manifest's ``stats`` column as rows × :data:`~hypermodal.evidence.STAT_NAMES`
    (a missing or malformed entry becomes a row of NaN: unknown to the forests)."""
    k = len(STAT_NAMES)
    try:
        out = np.stack(values.to_numpy()).astype(np.float32)
        if out.shape == (len(values), k):
            return out
    except (TypeError, ValueError):
        pass
    rows = [np.asarray(v, np.float32) if np.size(v) == k else None for v in values]
    return (
        np.stack([r if r is not None else np.full(k, np.nan, np.float32) for r in rows])
        if rows
        else np.zeros((0, k), np.float32)
    )
