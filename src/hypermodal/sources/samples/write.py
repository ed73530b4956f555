"""The corpus on disk: one folder per dataset, ``dataset.json`` written last, and the counts.

Every file is written atomically and ``dataset.json`` last, so a dataset folder without it is
unfinished and is redone; a folder whose ``dataset.json`` and files are already as they should
be is left alone.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypermodal.common.files import file_digest, write_bytes_atomic, write_text_atomic
from hypermodal.labels import ClassVocabulary
from hypermodal.sources.samples.dedupe import Cluster
from hypermodal.sources.samples.group import Dataset
from hypermodal.sources.samples.manifest import PACKAGE_ORDER, PackageManifest
from hypermodal.sources.samples.wheels import WheelInfo

log = logging.getLogger(__name__)

SAMPLES_JSON = "samples.json"
DATASET_JSON = "dataset.json"


def relative_names(clusters: list[Cluster]) -> dict[str, str]:
    """File name in the dataset folder per canonical key; parent folder added on clashes."""
    names = Counter(cl.canonical.name for cl in clusters)
    out = {}
    for cl in clusters:
        img = cl.canonical
        out[img.key] = img.name if names[img.name] == 1 else f"{img.parent}/{img.name}"
    if len(set(out.values())) != len(out):
        for cl in clusters:  # still clashing: prefix the package
            out[cl.canonical.key] = f"{cl.canonical.package}/{out[cl.canonical.key]}"
    return out


def _file_entry(cl: Cluster, rel: str) -> dict[str, Any]:
    img = cl.canonical
    entry: dict[str, Any] = {
        "path": rel,
        "source_path": img.source_path,
        "package": img.package,
        "sha256": img.sha256,
        "size": len(img.data),
        "format": img.fmt,
        "modality": img.modality,
        "images": img.images,
        "rows": img.rows,
        "columns": img.columns,
        "pixel_sha256": img.pixel_sha256,
    }
    if img.fmt == "dicom":
        entry["sop_instance_uid"] = img.sop
        entry["study_instance_uid"] = img.study
        entry["transfer_syntax"] = img.transfer_syntax
        entry["lossy"] = img.lossy
        if img.unpacked:
            entry["unpacked"] = img.unpacked
    entry.update({k: v for k, v in img.extra.items() if v is not None})
    entry["re_encodings"] = [m.key for m in cl.others]
    entry["re_encoding_evidence"] = {m.key: cl.evidence[m.key] for m in cl.others}
    return entry


def dataset_meta(
    ds: Dataset, wheels: dict[str, WheelInfo]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(dataset.json content, {relative path: bytes})`` of one dataset folder."""
    names = relative_names(ds.clusters)
    files = sorted(
        (_file_entry(cl, names[cl.canonical.key]) for cl in ds.clusters), key=lambda f: f["path"]
    )
    payload = {names[cl.canonical.key]: cl.canonical.data for cl in ds.clusters}
    packages = sorted(
        {img.package for cl in ds.clusters for img in (cl.canonical, *cl.others)},
        key=lambda p: PACKAGE_ORDER.get(p, 99),
    )
    main = wheels[ds.package]
    modalities: Counter[str] = Counter()
    for f in files:
        modalities[f["modality"] or ds.label or "unknown"] += f["images"]
    meta: dict[str, Any] = {
        "name": ds.id,
        "label": ds.label,
        "body_part": ds.body_part,
        "template": ds.template,
        "phantom": ds.phantom,
        "source": {"package": main.pkg.name, "version": main.version, "licence": main.licence},
        "sources": [
            {"package": p, "version": wheels[p].version, "licence": wheels[p].licence}
            for p in packages
        ],
        "modalities": dict(sorted(modalities.items())),
        "images": sum(f["images"] for f in files),
        "files": files,
        "note": ds.note,
    }
    return meta, payload


def write_dataset(out_dir: Path, meta: dict[str, Any], payload: dict[str, bytes]) -> bool:
    """Write one dataset folder; ``False`` when it was already complete and identical."""
    ddir = out_dir / meta["name"]
    meta_path = ddir / DATASET_JSON
    text = json.dumps(meta, indent=2) + "\n"
    if meta_path.is_file() and meta_path.read_text() == text and _files_ok(ddir, meta):
        _remove_strays(ddir, set(payload) | {DATASET_JSON})
        return False
    if meta_path.exists():
        meta_path.unlink()  # from here on the folder counts as unfinished
    ddir.mkdir(parents=True, exist_ok=True)
    shas = {f["path"]: f["sha256"] for f in meta["files"]}
    for rel, data in payload.items():
        target = ddir / rel
        if (
            target.is_file()
            and target.stat().st_size == len(data)
            and file_digest(target) == shas[rel]
        ):
            continue
        write_bytes_atomic(target, data)
    _remove_strays(ddir, set(payload) | {DATASET_JSON})
    write_text_atomic(meta_path, text)
    return True


def _files_ok(ddir: Path, meta: dict[str, Any]) -> bool:
    for f in meta.get("files", []):
        path = ddir / f["path"]
        if not path.is_file() or path.stat().st_size != f.get("size", -1):
            return False
        if file_digest(path) != f["sha256"]:
            return False
    return True


def _remove_strays(ddir: Path, keep: set[str]) -> None:
    for path in sorted(ddir.rglob("*"), reverse=True):
        rel = path.relative_to(ddir).as_posix()
        if path.is_file() or path.is_symlink():
            if rel not in keep:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def remove_stale(out_dir: Path, produced: set[str], packages: Sequence[PackageManifest]) -> None:
    """Delete dataset folders of these packages that this run did not produce."""
    prefixes = {f"{p.name}." for p in packages}
    for child in sorted(out_dir.iterdir()):
        if not child.is_dir() or child.name in produced:
            continue
        if any(child.name.startswith(prefix) for prefix in prefixes):
            log.info("removing stale dataset %s", child.name)
            shutil.rmtree(child)


def corpus_complete(out_dir: Path, summary: dict[str, Any]) -> bool:
    """Whether every dataset that ``summary`` lists is on disk, finished and intact."""
    for row in summary.get("datasets", []):
        meta_path = out_dir / row["name"] / DATASET_JSON
        if not meta_path.is_file():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            return False
        if meta.get("name") != row["name"] or len(meta.get("files", [])) != row["files"]:
            return False
        if not _files_ok(out_dir / row["name"], meta):
            return False
    return True


def counts(datasets: list[dict[str, Any]], vocab: ClassVocabulary) -> dict[str, Any]:
    """Totals of ``samples.json``: datasets, files and images, by modality and by class."""
    by_modality: dict[str, dict[str, int]] = {}
    by_class: dict[str, dict[str, int]] = {
        c: {"datasets": 0, "datasets_real": 0, "files": 0, "images": 0} for c in vocab.classes
    }
    unmapped = {"datasets": 0, "files": 0, "images": 0}
    for meta in datasets:
        real = not (meta["template"] or meta["phantom"])
        seen_mod: set[str] = set()
        seen_cls: set[str] = set()
        for f in meta["files"]:
            mod = f["modality"] or meta["label"] or "unknown"
            cls = (
                vocab.label_for_modality(f["modality"])
                if f["modality"]
                else vocab.normalise_label(meta["label"])
            )
            row = by_modality.setdefault(mod, {"datasets": 0, "files": 0, "images": 0})
            row["files"] += 1
            row["images"] += f["images"]
            if mod not in seen_mod:
                row["datasets"] += 1
                seen_mod.add(mod)
            target = by_class[cls] if cls in by_class else unmapped
            target["files"] += 1
            target["images"] += f["images"]
            key = cls or "-"
            if key not in seen_cls:
                target["datasets"] += 1
                if cls in by_class and real:
                    target["datasets_real"] += 1
                seen_cls.add(key)
    by_class["not in classes"] = unmapped
    return {
        "datasets": len(datasets),
        "files": sum(len(m["files"]) for m in datasets),
        "images": sum(m["images"] for m in datasets),
        "by_modality": dict(sorted(by_modality.items())),
        "by_class": by_class,
    }
