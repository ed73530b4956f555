"""Evidence beyond min-max pixels, and the rule that fuses it.

* :mod:`.features` — intensity statistics of the decoded values, header geometry, and their
  summary over a series;
* :mod:`.forest` — the feature model (a random forest kept as arrays);
* :mod:`.header` — the DICOM header's claim with a stated trust, and what counts as OTHER;
* :mod:`.fusion` — weighted log-linear pooling, UNKNOWN, the conflict flag, calibration;
* :mod:`.model` — the evidence a checkpoint carries beside its CNN, and prediction with it;
* :mod:`.table` — header claims and statistics rows of a catalog-like table.
"""

from hypermodal.evidence.features import (
    FEATURE_NAMES,
    GEOMETRY_NAMES,
    SERIES_FEATURE_NAMES,
    STAT_NAMES,
    feature_matrix,
    header_geometry,
    image_stats,
    series_keys,
    series_matrix,
)
from hypermodal.evidence.forest import ForestModel
from hypermodal.evidence.fusion import (
    AGREEMENT,
    EVIDENCE,
    UNKNOWN,
    Fusion,
    agreement,
    balanced_weights,
    calibration_error,
    series_consensus,
)
from hypermodal.evidence.header import DEFAULT_TRUST, header_label, header_probs
from hypermodal.evidence.model import EvidenceModel, fit_forest
from hypermodal.evidence.table import stats_array, table_claims

__all__ = [
    "AGREEMENT",
    "DEFAULT_TRUST",
    "EVIDENCE",
    "FEATURE_NAMES",
    "GEOMETRY_NAMES",
    "SERIES_FEATURE_NAMES",
    "STAT_NAMES",
    "UNKNOWN",
    "EvidenceModel",
    "ForestModel",
    "Fusion",
    "agreement",
    "balanced_weights",
    "calibration_error",
    "feature_matrix",
    "fit_forest",
    "header_geometry",
    "header_label",
    "header_probs",
    "image_stats",
    "series_consensus",
    "series_keys",
    "series_matrix",
    "stats_array",
    "table_claims",
]
