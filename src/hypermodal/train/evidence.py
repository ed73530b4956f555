"""The evidence a run adds beside its CNN (``TrainConfig.evidence = "all"``), and the simulated
share of its training images.

After the last epoch, on the main rank only, :func:`fit_run_evidence`:

1. fits the **feature forests** (:func:`hypermodal.evidence.fit_forest`) on the store's
   ``train`` rows: the image forest on the intensity statistics of the manifest's ``stats``
   column beside the header geometry (:func:`hypermodal.evidence.feature_matrix`), the series
   forest on their summary over each row's series (:func:`hypermodal.evidence.series_matrix`);
   every class and every dataset within a class weighted equally;
2. runs the **best** CNN weights (``best.pt``, through :func:`hypermodal.inference.predict_proba`,
   the path ``predict`` takes) on the ``validate`` rows, asks the forests about them, and reads
   each row's **header claim** (:func:`hypermodal.evidence.header_label` of ``modality`` and
   ``sop_class``);
3. fits the **fusion** (:meth:`hypermodal.evidence.Fusion.fit`) on those validation rows: images
   of datasets neither the CNN nor the forests trained on. When the validation split holds fewer
   than two classes or fewer than two datasets the fusion stays neutral
   (:meth:`~hypermodal.evidence.Fusion.neutral`: the evidence multiplied unweighted) and the
   reason is recorded.

:func:`attach_evidence` then writes the :class:`~hypermodal.evidence.EvidenceModel` under the key
``evidence`` into ``best.pt`` and ``last.pt``. A store without the ``stats`` column (built before
it existed) gets no forests: pixels and header only, with a note. A shard set is read through its
copy of the store's manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hypermodal.evidence import (
    SERIES_FEATURE_NAMES,
    EvidenceModel,
    ForestModel,
    Fusion,
    feature_matrix,
    fit_forest,
    header_probs,
    series_keys,
    series_matrix,
    stats_array,
    table_claims,
)
from hypermodal.inference.model import load_model, predict_proba, read_checkpoint
from hypermodal.labels import ClassVocabulary
from hypermodal.store import MANIFEST_FILE, STATS_COLUMN
from hypermodal.store.shards import ShardFeeder, ShardTrainingData
from hypermodal.train.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

__all__ = [
    "attach_evidence",
    "fit_run_evidence",
    "manifest_table",
    "simulated_share",
    "split_rows",
]


def _shard_manifest(data: ShardTrainingData, columns: list[str] | None) -> pd.DataFrame | None:
    """The store manifest a shard set carries (only ``columns`` of it, where it has them)."""
    import pyarrow.parquet as pq

    loc = data.set.location
    if not loc.exists(MANIFEST_FILE):
        return None
    with loc.fs.open_input_file(loc.path(MANIFEST_FILE)) as fh:
        parquet = pq.ParquetFile(fh)
        names = parquet.schema_arrow.names
        wanted = None if columns is None else [c for c in columns if c in names]
        return parquet.read(columns=wanted).to_pandas()


def manifest_table(store: Any, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The manifest of the training data (a slice store's table, or a shard set's copy of it);
    ``None`` when a shard set has none. ``columns`` limits what a shard set reads."""
    if isinstance(store, ShardTrainingData):
        return _shard_manifest(store, columns)
    return store.table


def split_rows(store: Any, split: str) -> np.ndarray:
    """Manifest rows of one split's usable images, in manifest order (a shard set's samples
    mapped back to them), so that a shard set fits what its store fits."""
    rows = store.rows(split)
    if isinstance(store, ShardTrainingData):
        return np.sort(store.set.samples["row"].to_numpy(dtype=np.int64)[rows])
    return rows


def _flags(values: pd.Series) -> np.ndarray:
    """A boolean column with missing values read as False."""
    return values.astype("boolean").fillna(False).to_numpy(dtype=bool)


def simulated_share(store: Any) -> float:
    """The share of the train split's images marked ``synthetic`` (0 when the column is absent)."""
    table = manifest_table(store, ["synthetic"])
    rows = split_rows(store, "train")
    if table is None or "synthetic" not in table.columns or not len(rows):
        return 0.0
    return round(float(_flags(table["synthetic"].iloc[rows]).mean()), 6)


def _features(table: pd.DataFrame) -> np.ndarray:
    return feature_matrix(stats_array(table[STATS_COLUMN]), table)


def _pixel_probs(loaded: Any, store: Any, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The CNN's probabilities for manifest ``rows`` (in that order)."""
    probs = np.zeros((len(rows), len(loaded.classes)), dtype=np.float32)
    if not len(rows):
        return probs
    if isinstance(store, ShardTrainingData):
        position = {int(r): i for i, r in enumerate(rows)}
        feed = ShardFeeder(store.set, "validate", batch_size, shuffle=False)
        for x_u8, _y, r in feed.epoch(0):
            at = [position[int(v)] for v in r.numpy()]
            probs[at] = predict_proba(loaded, x_u8)
        return probs
    order = np.argsort(rows, kind="stable")  # the memory map reads best in row order
    for lo in range(0, len(rows), batch_size):
        at = order[lo : lo + batch_size]
        probs[at] = predict_proba(loaded, np.asarray(store.images[rows[at]]))
    return probs


def _real_classes(train: pd.DataFrame, classes: tuple[str, ...]) -> list[str]:
    """Classes with at least one real (not ``synthetic``) training image."""
    real = (
        ~_flags(train["synthetic"]) if "synthetic" in train.columns else np.ones(len(train), bool)
    )
    present = set(train.loc[real, "label"].astype(str))
    return [c for c in classes if c in present]


def _too_small(labels: np.ndarray, datasets: np.ndarray) -> str | None:
    """Why the validation rows cannot fit a fusion (None: they can)."""
    classes, groups = sorted(set(labels)), sorted(set(datasets))
    if len(classes) >= 2 and len(groups) >= 2:
        return None
    return (
        f"validation split too small to fit the fusion: {len(labels)} images, "
        f"{len(classes)} class(es) ({', '.join(classes) or 'none'}), {len(groups)} dataset(s); "
        "the evidence is pooled with equal weights (neutral fusion)"
    )


def _fit_forests(
    train: pd.DataFrame, classes: tuple[str, ...], seed: int, notes: list[str]
) -> tuple[ForestModel | None, ForestModel | None, dict[str, Any]]:
    """The image and series feature forests on the train rows, and what they were fitted on."""
    labels = train["label"].astype(str).to_numpy()
    datasets = train["dataset"].astype(str).to_numpy()
    seen = [c for c in classes if c in set(labels)]
    info: dict[str, Any] = {"rows": int(len(train)), "datasets": int(len(set(datasets)))}
    if STATS_COLUMN not in train.columns:
        notes.append(
            f"the training data has no {STATS_COLUMN!r} column (a store built before the "
            "intensity statistics existed): the feature forest is left out; rebuild the store "
            "to add it"
        )
        log.warning(notes[-1])
        return None, None, {**info, "fitted": False, "reason": notes[-1]}
    x = _features(train)
    forest = fit_forest(x, labels, classes, datasets, seed)
    xs = series_matrix(x, series_keys(train))
    series = fit_forest(xs, labels, classes, datasets, seed, feature_names=SERIES_FEATURE_NAMES)
    return forest, series, {**info, "fitted": True, "classes": seen}


def _forest_probs(
    forest: ForestModel | None, series: ForestModel | None, table: pd.DataFrame
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The image and series forests' probabilities for the rows of ``table``."""
    if forest is None or not len(table):
        return None, None
    x = _features(table)
    image = forest.predict_proba(x)
    if series is None:
        return image, None
    return image, series.predict_proba(series_matrix(x, series_keys(table)))


def fit_run_evidence(
    store: Any,
    best_path: Path,
    *,
    seed: int,
    device: torch.device | str,
    batch_size: int,
    share: float,
    notes: list[str],
) -> EvidenceModel:
    """Forests on the train rows, fusion on the validation rows' evidence (module docstring).

    Args:
        store: the training data (a slice store or a shard set).
        best_path: the run's ``best.pt`` (its CNN gives the validation rows' pixel evidence).
        seed: seeds the forests.
        device: where the CNN runs.
        batch_size: images per CNN call.
        share: the simulated share of the training images (recorded in ``info``).
        notes: warnings are appended here.
    """
    vocab: ClassVocabulary = store.vocabulary
    classes = tuple(vocab.classes)
    table = manifest_table(store)
    if table is None:
        reason = "the shard set carries no manifest: no features, no header claims"
        notes.append(f"{reason}; the evidence is the CNN alone")
        log.warning(notes[-1])
        return EvidenceModel(
            classes, None, Fusion.neutral(classes, reason), info={"notes": [notes[-1]]}
        )
    start = len(notes)
    train = table.iloc[split_rows(store, "train")].reset_index(drop=True)
    val = table.iloc[split_rows(store, "validate")].reset_index(drop=True)
    forest, series, forest_info = _fit_forests(train, classes, seed, notes)
    loaded = load_model(best_path, device=device)
    labels = val["label"].astype(str).to_numpy()
    datasets = val["dataset"].astype(str).to_numpy()
    claims = table_claims(val, vocab)
    reason = _too_small(labels, datasets)
    if reason is not None:
        notes.append(reason)
        log.warning(reason)
        fusion = Fusion.neutral(classes, reason)
    else:  # held-out evidence of every source for the validation rows
        features, series_probs = _forest_probs(forest, series, val)
        evidence = {
            "pixels": _pixel_probs(loaded, store, split_rows(store, "validate"), batch_size),
            "features": features,
            "series": series_probs,
            "header": header_probs(claims, classes),
        }
        y = np.array([classes.index(c) for c in labels], dtype=np.int64)
        fusion = Fusion.fit(classes, evidence, y, datasets)
    info = {
        "source": "hypermodal train --evidence all",
        "forest": forest_info,
        "fusion": {
            "split": "validate",
            "rows": int(len(val)),
            "datasets": int(len(set(datasets))),
            "classes": [c for c in classes if c in set(labels)],
            "rows_with_header": int(sum(c is not None for c in claims)),
            "fitted": reason is None,
            "reason": reason,
        },
        "pixels_from": {"checkpoint": best_path.name, "epoch": loaded.meta.get("epoch")},
        "rows": int(len(train)),
        "datasets": forest_info["datasets"],
        "trained_classes": [c for c in classes if c in set(train["label"].astype(str))],
        "real_classes": _real_classes(train, classes),
        "simulated_share_of_training": float(share),
        "features": forest is not None,
        "notes": list(notes[start:]),
    }
    return EvidenceModel(classes, forest, fusion, info=info, series_forest=series)


def attach_evidence(paths: list[Path], evidence: EvidenceModel) -> None:
    """Write ``evidence`` under the key ``evidence`` into each checkpoint of ``paths`` that
    exists (read and rewritten atomically; every other key is kept)."""
    state = evidence.to_state()
    for path in paths:
        if path.is_file():
            payload = read_checkpoint(path)
            payload["evidence"] = state
            save_checkpoint(path, payload)
