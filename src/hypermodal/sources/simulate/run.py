"""``simulate_corpus``: X-ray, CT, PET and export-pipeline images from the real images of a samples
folder, one simulated dataset per (simulation kind, source dataset).

Output layout (the catalog reads it)::

    out_dir/sim-drr.<source>/drr-NNN-<view>.dcm       radiographs (DX/CR), label XR
    out_dir/sim-ct.<source>/ct-NN-<kind>.nii.gz       CT exports (HU, windowed), label CT
    out_dir/sim-mr.<source>/mr-NN-<kind>.nii.gz       MR exports of real MR volumes, label MR
    out_dir/sim-pet.<source>/pet-NN/PTNNNN.dcm        PET series, label PT
    out_dir/sim-pet.<source>/pet-NN.nii.gz            PET volumes (Bq/ml), label PT
    out_dir/sim-export.<source>/exp-NNN-K.{png,jpg}   exports of the real dataset's images
    out_dir/sim-export-drr.<source>/…                 exports of its radiographs (XR)
    out_dir/sim-export-pet.<source>/…                 exports of its PET (PT)
    out_dir/<dataset>/dataset.json                    {"name", "label", "synthetic": true,
                                                       "simulated_from", "simulation", "body_part"}
    out_dir/summary.json                              written last: present and matching = done

``simulated_from`` is always the real dataset's folder name, so holding out a real dataset can
drop every image simulated from it. Each dataset has its own random stream (from the seed and
its name): the same seed gives the same bytes. A dataset folder is complete when its hidden
``.simulate.json`` names the current settings; a re-run keeps complete ones and rewrites the
rest, and a ``summary.json`` with the same seed and parameters means the whole output is done.
These images are for training only, never evidence of accuracy.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.files import write_text_atomic
from hypermodal.common.progress import progress as progress_iter
from hypermodal.sources.simulate.anatomy import Anatomy, build_anatomy
from hypermodal.sources.simulate.jobs import (
    Settings,
    Written,
    write_ct_dataset,
    write_drr_dataset,
    write_export_dataset,
    write_mr_dataset,
    write_pet_dataset,
)
from hypermodal.sources.simulate.volumes import (
    DATASET_JSON,
    RealDataset,
    SourceVolume,
    list_datasets,
    read_volume,
    volume_files,
)
from hypermodal.sources.simulate.write import hash_text

SIM_VERSION = 3
SUMMARY_JSON = "summary.json"
MARKER = ".simulate.json"
KIND_LABEL = {"drr": "XR", "ct": "CT", "pet": "PT", "mr": "MR"}


def _fingerprint(datasets: list[RealDataset]) -> str:
    """What the output depends on in the samples folder: names, labels, file names and sizes."""
    parts = []
    for ds in datasets:
        parts.append(f"{ds.name}|{ds.label}|{ds.body_part}|{ds.phantom}")
        parts.extend(f"{p.relative_to(ds.folder)}:{p.stat().st_size}" for p in ds.files)
    return f"{hash_text(*parts):016x}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Output:
    """The output folder: which datasets are complete, writing one, the summary."""

    def __init__(self, out_dir: Path, key: str) -> None:
        self.root = out_dir
        self.key = key
        self.entries: dict[str, dict[str, Any]] = {}

    def done(self, name: str) -> dict[str, Any] | None:
        marker = _read_json(self.root / name / MARKER)
        if marker and marker.get("key") == self.key and (self.root / name / DATASET_JSON).exists():
            return marker["entry"]
        return None

    def produce(
        self, name: str, meta: dict[str, Any], make: Callable[[Path], Written]
    ) -> dict[str, Any]:
        """Reuse a complete dataset or (re)write it: files, then dataset.json, then the marker."""
        entry = self.done(name)
        if entry is None:
            folder = self.root / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            start = time.perf_counter()
            written = make(folder)
            entry = {
                "kind": meta["simulation"],
                "source": meta["simulated_from"],
                "label": meta["label"],
                "files": written.files,
                "images": written.images,
                "skipped": written.skipped,
                "seconds": round(time.perf_counter() - start, 3),
            }
            if written.files:
                write_text_atomic(folder / DATASET_JSON, json.dumps(meta, indent=2) + "\n")
            write_text_atomic(folder / MARKER, json.dumps({"key": self.key, "entry": entry}))
        if entry["files"]:
            self.entries[name] = entry
        return entry

    def prune(self) -> None:
        """Remove simulated dataset folders (ours: they carry the marker) not made this run."""
        for folder in sorted(self.root.glob("sim-*")):
            if folder.is_dir() and folder.name not in self.entries and (folder / MARKER).exists():
                shutil.rmtree(folder)


def _meta(name: str, label: str, source: str, kind: str, body_part: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "synthetic": True,
        "simulated_from": source,
        "simulation": kind,
        "body_part": body_part,
    }


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, hash_text(name) & 0xFFFFFFFF])


def _sources(
    ds: RealDataset, skipped: list[dict[str, str]]
) -> list[tuple[str, SourceVolume, Anatomy]]:
    out = []
    for path in volume_files(ds):
        try:
            vol = read_volume(path, ds.name, ds.label, ds.body_part)
            anatomy = build_anatomy(vol)
        except ValueError as exc:
            skipped.append({"source": ds.name, "file": path.name, "reason": str(exc)})
            continue
        out.append((path.name, vol, anatomy))
    return out


def _simulate_volumes(
    out: _Output, ds: RealDataset, settings: Settings, skipped: list[dict[str, str]], order: int
) -> None:
    """The DRR, CT, PET (and, of an MR dataset, MR export) datasets of one real dataset's
    volumes (read and turned into anatomy only if needed)."""
    kinds = ("drr", "ct", "pet", "mr") if ds.label == "MR" else ("drr", "ct", "pet")
    names = {kind: f"sim-{kind}.{ds.name}" for kind in kinds}
    cache: list[list[tuple[str, SourceVolume, Anatomy]]] = []

    def sources() -> list[tuple[str, SourceVolume, Anatomy]]:
        if not cache:
            cache.append(_sources(ds, skipped))
        return cache[0]

    def anatomies() -> list[tuple[str, Anatomy]]:
        return [(name, anatomy) for name, _, anatomy in sources()]

    writers = {
        "drr": write_drr_dataset,
        "ct": write_ct_dataset,
        "pet": write_pet_dataset,
        "mr": write_mr_dataset,
    }
    for kind, name in names.items():
        meta = _meta(name, KIND_LABEL[kind], ds.name, kind, ds.body_part)
        extra = {"offset": order} if kind == "pet" else {}

        def make(folder: Path, kind: str = kind, name: str = name, extra: dict = extra) -> Written:
            rng = _rng(settings.seed, name)
            inputs = sources() if kind == "mr" else anatomies()
            return writers[kind](
                folder, name, inputs, ds.name, ds.body_part, settings, rng, **extra
            )

        out.produce(name, meta, make)


def _simulated_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != DATASET_JSON
    )


def _export(
    out: _Output, name: str, label: str, source: RealDataset, files: list[Path], settings: Settings
) -> None:
    """The export dataset ``name`` of ``files`` (a real dataset's, or a simulated one's)."""
    meta = _meta(name, label, source.name, "export", source.body_part)
    out.produce(
        name,
        meta,
        lambda f: write_export_dataset(f, files, label, settings, _rng(settings.seed, name)),
    )


def simulate_corpus(
    samples_dir: Path | str,
    out_dir: Path | str,
    *,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Simulate radiographs, PET and exports from a samples folder (see the module doc).

    Args:
        samples_dir: A folder of real datasets (``hypermodal samples DIR``).
        out_dir: Where the simulated datasets go.
        seed: Same seed, same bytes.
        scale: Multiplies how many images are made (1.0: about 600-1200 2D images).
        progress: Show a progress bar on a terminal.

    Returns:
        The summary (also ``out_dir/summary.json``), with ``"reused": True`` when an existing
        complete output was kept as it was.

    Raises:
        FileNotFoundError: ``samples_dir`` is not a folder.
        ValueError: ``scale`` is not positive, or ``samples_dir`` holds no dataset.
    """
    samples, root = Path(samples_dir), Path(out_dir)
    if not samples.is_dir():
        raise FileNotFoundError(f"samples folder {samples} does not exist")
    if not scale > 0:
        raise ValueError(f"scale must be positive, not {scale}")
    if root.resolve().is_relative_to(samples.resolve()):
        raise ValueError(f"the output folder {root} must not be inside the samples folder")
    datasets = list_datasets(samples)
    if not datasets:
        raise ValueError(f"{samples} holds no dataset folders")
    settings = Settings.for_scale(seed, scale)
    parameters = {
        "version": SIM_VERSION,
        "scale": float(scale),
        **settings.to_dict(),
        "samples": _fingerprint(datasets),
    }
    old = _read_json(root / SUMMARY_JSON)
    if old and old.get("seed") == settings.seed and old.get("parameters") == parameters:
        return {**old, "reused": True}
    root.mkdir(parents=True, exist_ok=True)
    out = _Output(root, f"{settings.seed}:{hash_text(json.dumps(parameters, sort_keys=True)):016x}")
    skipped: list[dict[str, str]] = []
    started = time.perf_counter()
    steps = [("volumes", ds) for ds in datasets if volume_files(ds)]
    steps += [("export", ds) for ds in datasets if not ds.phantom]
    for order, (step, ds) in enumerate(progress_iter(steps, progress, desc="simulate")):
        if step == "volumes":
            _simulate_volumes(out, ds, settings, skipped, order)
        else:
            _export(out, f"sim-export.{ds.name}", ds.label, ds, list(ds.files), settings)
    for kind in ("drr", "pet"):  # exports of the simulated images too
        for ds in datasets:
            sim = f"sim-{kind}.{ds.name}"
            if sim in out.entries:
                files = _simulated_files(root / sim)
                _export(out, f"sim-export-{kind}.{ds.name}", KIND_LABEL[kind], ds, files, settings)
    out.prune()
    summary = _summary(out.entries, skipped, settings.seed, parameters, started)
    write_text_atomic(root / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    return {**summary, "reused": False}


def _summary(
    entries: dict[str, dict[str, Any]],
    skipped: list[dict[str, str]],
    seed: int,
    parameters: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    by_label: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for e in entries.values():
        by_label[e["label"]] = by_label.get(e["label"], 0) + e["images"]
        by_kind[e["kind"]] = by_kind.get(e["kind"], 0) + e["images"]
    return {
        "seed": seed,
        "parameters": parameters,
        "datasets": dict(sorted(entries.items())),
        "totals": {
            "datasets": len(entries),
            "files": sum(e["files"] for e in entries.values()),
            "images": sum(e["images"] for e in entries.values()),
            "images_per_label": dict(sorted(by_label.items())),
            "images_per_kind": dict(sorted(by_kind.items())),
            "seconds": round(time.perf_counter() - started, 3),
        },
        "skipped_sources": skipped,
        "note": "simulated from real anatomy for training only; never evidence of accuracy",
    }
