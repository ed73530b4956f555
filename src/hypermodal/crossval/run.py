"""``hypermodal crossval``: every real dataset predicted by models that never saw it.

The run, on a corpus folder (the bundled samples by default) and its simulations:

1. catalog both (classes CT, MR, PT, XR, OTHER), drop localizers (as ``split`` does), and store
   every image once (pixels for the CNN, intensity statistics for the feature forest);
2. the **feature forest** is fitted and scored leave-one-dataset-out (``folds``); the **CNN** per
   ``pixel_folds`` (leave-one-dataset-out too with ``"dataset"``; an integer groups datasets, since
   a fold costs a CNN training); the **header** needs no fitting;
3. the **fusion** is fitted, for each real dataset, on the out-of-fold evidence of all the other
   real datasets (nested: the rule that scores a dataset never saw it either);
4. scores per evidence mode (``scoring.py``), the per-dataset table, a report; and, with
   ``save_model``, the final model: forest and CNN on every image, fusion on all the out-of-fold
   evidence, written as a checkpoint ``predict`` reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodal.common.files import atomic_path, write_text_atomic
from hypermodal.crossval.folds import check_folds, make_folds
from hypermodal.crossval.scoring import per_dataset, score_all
from hypermodal.evidence import (
    FEATURE_NAMES,
    SERIES_FEATURE_NAMES,
    UNKNOWN,
    EvidenceModel,
    Fusion,
    calibration_error,
    feature_matrix,
    fit_forest,
    header_probs,
    series_consensus,
    series_keys,
    series_matrix,
    stats_array,
    table_claims,
)
from hypermodal.labels import ClassVocabulary
from hypermodal.store import STATS_COLUMN

log = logging.getLogger(__name__)

CLASSES = ("CT", "MR", "PT", "XR", "OTHER")
#: The figures of each mode that headlines quote, balanced accuracy first.
HEADLINE_KEYS = (
    "balanced_accuracy",
    "balanced_accuracy_datasets",
    "dataset_mean_accuracy",
    "accuracy",
)


def vocabulary() -> ClassVocabulary:
    """The crossval and default-model vocabulary: the paper's four classes plus OTHER."""
    return ClassVocabulary.from_options(classes=",".join(CLASSES), other="OTHER")


def prepare_corpus(
    out: Path,
    samples_dir: Path | None,
    simulate: bool,
    size: int,
    seed: int,
    workers: int | None,
    progress: bool,
) -> Path:
    """Samples (bundled unless given) + simulations -> catalog -> store at ``out/store``."""
    from hypermodal.catalog import build_catalog, read_catalog
    from hypermodal.preprocess import PreprocessConfig
    from hypermodal.store import META_FILE, build_store

    vocab = vocabulary()
    if samples_dir is None:
        from hypermodal.sources.samples import gather_samples

        samples_dir = out / "samples"
        gather_samples(samples_dir, progress=progress)
    roots = [Path(samples_dir)]
    if simulate:
        from hypermodal.sources.simulate import simulate_corpus

        simulate_corpus(Path(samples_dir), out / "simulated", seed=seed, progress=progress)
        roots.append(out / "simulated")
    store_dir = out / "store"
    if not (store_dir / META_FILE).exists():
        cat_path = out / "catalog.parquet"
        build_catalog(roots, cat_path, vocabulary=vocab, workers=workers, progress=progress)
        catalog = read_catalog(cat_path)
        catalog = catalog[~catalog["localizer"].astype(bool)].copy()
        catalog["split"] = "train"
        build_store(
            catalog,
            store_dir,
            vocab,
            preprocess=PreprocessConfig(size=size),
            workers=workers,
            progress=progress,
        )
    return store_dir


def _oof_forest(x, labels, groups, folds, seed, names=FEATURE_NAMES) -> np.ndarray:
    probs = np.full((len(labels), len(CLASSES)), np.nan)
    for fold in folds:
        tr = fold.train
        forest = fit_forest(x[tr], labels[tr], CLASSES, groups[tr], seed, feature_names=names)
        probs[fold.test] = forest.predict_proba(x[fold.test])
    return probs


def pixel_key(config: Any, held_out: tuple[str, ...] | str, store: Any, n: int) -> str:
    """What a fold's CNN depends on: its schedule, what it held out, the store's rows."""
    text = json.dumps(
        [config.to_dict(), list(held_out), store.meta.get("plan_hash"), n], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _oof_pixels(store, rows, y, groups, folds, config, cache: Path) -> np.ndarray:
    """Out-of-fold CNN probabilities; each finished fold is kept in ``cache`` (``fold-K.npz``
    with its key), so an interrupted or repeated run trains only the folds it lacks."""
    from hypermodal.crossval.pixels import fit_pixels, pixel_probs

    cache.mkdir(parents=True, exist_ok=True)
    images = store.images
    probs = np.full((len(y), len(CLASSES)), np.nan)
    for i, fold in enumerate(folds):
        key = pixel_key(config, fold.held_out, store, len(y))
        path = cache / f"fold-{i:03d}.npz"
        test_rows = np.flatnonzero(fold.test)
        if path.exists():
            saved = np.load(path)
            if str(saved["key"]) == key:
                probs[test_rows] = saved["probs"]
                continue
        start = time.perf_counter()
        train_rows = np.flatnonzero(fold.train & config.trains_on(groups))
        model = fit_pixels(
            images[rows[train_rows]], y[train_rows], groups[train_rows], len(CLASSES), config
        )
        probs[test_rows] = pixel_probs(model, images[rows[test_rows]], config.train_size)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(key), probs=probs[test_rows])
        log.info(
            "crossval: pixel fold %d/%d (%s) in %.0f s",
            i + 1, len(folds), ", ".join(fold.held_out), time.perf_counter() - start,
        )  # fmt: skip
    return probs


def _nested_fusion(
    evidence: dict[str, np.ndarray | None], y: np.ndarray, datasets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fused and image-only probabilities, each dataset's from a fusion fitted without it."""
    n = len(y)
    fused = np.zeros((n, len(CLASSES)))
    image = np.zeros((n, len(CLASSES)))
    for d in np.unique(datasets):
        rows = datasets == d
        fit_ev = {k: (None if v is None else v[~rows]) for k, v in evidence.items()}
        fusion = Fusion.fit(CLASSES, fit_ev, y[~rows], datasets[~rows])
        out = fusion.predict(
            {k: (None if v is None else v[rows]) for k, v in evidence.items()}, int(rows.sum())
        )
        fused[rows], image[rows] = out["probs"], out["image_probs"]
    return fused, image


def _has_image(x: np.ndarray) -> np.ndarray:
    """Rows whose image carries evidence (finite values, not one value everywhere)."""
    std = x[:, FEATURE_NAMES.index("std")]
    return np.isfinite(std) & (std > 0)


def _label_names(probs: np.ndarray | None, n: int) -> np.ndarray:
    if probs is None:
        return np.array(["none"] * n, dtype=object)
    return np.asarray(CLASSES, dtype=object)[probs.argmax(axis=1)]


@dataclass
class _Corpus:
    """The stored images of a crossval run, with their labels and evidence inputs."""

    store: Any
    table: pd.DataFrame  # the stored (ok) rows
    rows: np.ndarray  # their store rows
    labels: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    x: np.ndarray  # image features
    xs: np.ndarray  # series features
    real: np.ndarray

    @classmethod
    def open(cls, store_dir: Path) -> _Corpus:
        from hypermodal.store import SliceStore

        store = SliceStore.open(store_dir)
        table = store.table.reset_index(drop=True)
        ok = table["ok"].to_numpy(bool)
        table = table[ok].reset_index(drop=True)
        labels = table["label"].astype(str).to_numpy()
        x = feature_matrix(stats_array(table[STATS_COLUMN]), table)
        return cls(
            store=store,
            table=table,
            rows=np.flatnonzero(ok),
            labels=labels,
            y=np.array([CLASSES.index(c) for c in labels]),
            groups=table["dataset"].astype(str).to_numpy(),
            x=x,
            xs=series_matrix(x, series_keys(table)),
            real=~table["synthetic"].fillna(False).to_numpy(bool),
        )


def _out_of_fold(
    c: _Corpus, folds: str | int, pixel_folds: str | int | None, config: Any, seed: int, out: Path
) -> dict[str, np.ndarray | None]:
    """Every evidence source's out-of-fold probabilities for every stored row."""
    feature_folds = make_folds(c.table, folds, seed)
    check_folds(c.table, feature_folds)
    evidence: dict[str, np.ndarray | None] = {
        "features": _oof_forest(c.x, c.labels, c.groups, feature_folds, seed),
        "series": _oof_forest(c.xs, c.labels, c.groups, feature_folds, seed, SERIES_FEATURE_NAMES),
        "pixels": None,
        "header": header_probs(table_claims(c.table, vocabulary()), CLASSES),
    }
    if pixel_folds is not None:
        pfolds = make_folds(c.table, pixel_folds, seed)
        check_folds(c.table, pfolds)
        evidence["pixels"] = _oof_pixels(
            c.store, c.rows, c.y, c.groups, pfolds, config, out / "pixels"
        )
    return evidence


def _prediction_frame(
    c: _Corpus, ev: dict[str, np.ndarray | None], unknown_below: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per real image: each mode's prediction; and the fused probabilities."""
    per_image, image = _nested_fusion(ev, c.y[c.real], c.groups[c.real])
    frame = c.table.loc[c.real, ["dataset", "label", "path", "index", "modality"]]
    frame = frame.reset_index(drop=True)
    n = len(frame)
    # the product's answer: one per series (every image of a series gets the series' class)
    keys = series_keys(c.table)[c.real]
    fused = series_consensus(per_image, keys, _has_image(c.x[c.real]))
    image = series_consensus(image, keys, _has_image(c.x[c.real]))
    conf = fused.max(axis=1)
    frame["pred_fused"] = np.where(conf >= unknown_below, _label_names(fused, n), UNKNOWN)
    frame["confidence"] = conf
    frame["pred_image"] = _label_names(image, n)
    conf1 = per_image.max(axis=1)
    frame["pred_fused_per_image"] = np.where(
        conf1 >= unknown_below, _label_names(per_image, n), UNKNOWN
    )
    for mode in ("features", "series", "pixels"):
        if ev[mode] is not None:
            frame[f"pred_{mode}"] = _label_names(ev[mode], n)
    claims = table_claims(c.table.loc[c.real], vocabulary())
    frame["pred_header"] = [claim if claim is not None else "none" for claim in claims]
    return frame, fused


def run_crossval(
    out: Path | str,
    samples_dir: Path | str | None = None,
    *,
    simulate: bool = True,
    folds: str | int = "dataset",
    pixel_folds: str | int | None = 6,
    size: int = 96,
    pixel_steps: int = 300,
    seed: int = 0,
    unknown_below: float = 0.5,
    workers: int | None = None,
    progress: bool = True,
    save_model: Path | str | None = None,
) -> dict[str, Any]:
    """Cross-validate every evidence mode by dataset; write ``metrics.json``, ``per_dataset.csv``,
    ``predictions.parquet`` and ``report.md`` under ``out``; return the metrics.

    ``pixel_folds=None`` leaves the CNN out (features, header and their fusion only).
    """
    from hypermodal.common.versions import package_versions
    from hypermodal.crossval.pixels import PixelConfig
    from hypermodal.crossval.report import render, write_report

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = Path(samples_dir) if samples_dir else None
    store_dir = prepare_corpus(out, samples, simulate, size, seed, workers, progress)
    c = _Corpus.open(store_dir)
    config = PixelConfig(train_size=size, steps=pixel_steps, seed=seed)
    oof = _out_of_fold(c, folds, pixel_folds, config, seed, out)
    ev = {k: (None if v is None else v[c.real]) for k, v in oof.items()}
    frame, fused = _prediction_frame(c, ev, unknown_below)
    metrics = score_all(frame, CLASSES)
    metrics["calibration_error_fused"] = calibration_error(fused, c.y[c.real])
    metrics.update(
        {
            "folds": {"features": folds, "pixels": pixel_folds, "fusion": "dataset (nested)"},
            "classes": list(CLASSES),
            "real_images": int(c.real.sum()),
            "real_datasets": int(len(np.unique(c.groups[c.real]))),
            "simulated_images": int((~c.real).sum()),
            "simulated_share_of_training": round(float((~c.real).mean()), 4),
            "simulated_per_class": c.table.loc[~c.real, "label"].value_counts().to_dict(),
            "pixel_config": config.to_dict() if oof["pixels"] is not None else None,
            "unknown_below": unknown_below,
            "seed": seed,
            "store": str(store_dir),
        }
    )
    table_ds = per_dataset(frame)
    if save_model is not None:
        metrics["model"] = _save_model(c, ev, config, metrics, Path(save_model), out, seed)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["versions"] = package_versions()
    table_ds.to_csv(out / "per_dataset.csv", index=False)
    frame.to_parquet(out / "predictions.parquet", index=False)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    write_report(out / "report.md", metrics, table_ds)
    if save_model is not None:
        from hypermodal.crossval.bundle import write_model_card

        card = Path(save_model).with_name("MODEL_CARD.md")
        write_model_card(card, metrics, render(metrics, table_ds), table_ds)
    return metrics


def _save_model(
    c: _Corpus,
    ev: dict[str, np.ndarray | None],
    config: Any,
    metrics: dict[str, Any],
    path: Path,
    out: Path,
    seed: int,
) -> dict[str, Any]:
    """The final model: forests on every image, fusion on all the real out-of-fold evidence,
    the CNN on every image (reused from ``out/pixels`` when it is there)."""
    from hypermodal.crossval.bundle import save_default_model

    unknown_below = float(metrics["unknown_below"])
    fusion = Fusion.fit(CLASSES, ev, c.y[c.real], c.groups[c.real], unknown_below=unknown_below)
    evidence = EvidenceModel(
        CLASSES,
        fit_forest(c.x, c.labels, CLASSES, c.groups, seed),
        fusion,
        info={"crossval": _headline(metrics)},
        series_forest=fit_forest(
            c.xs, c.labels, CLASSES, c.groups, seed, feature_names=SERIES_FEATURE_NAMES
        ),
    )
    cache = out / "pixels" / f"final-{pixel_key(config, 'all', c.store, len(c.y))}.pt"
    return save_default_model(
        path, c.store, c.rows, c.y, c.groups, evidence, config, vocabulary(), metrics, cache=cache
    )


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {mode: {k: s.get(k) for k in HEADLINE_KEYS} for mode, s in metrics["modes"].items()}
