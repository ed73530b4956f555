"""``samples.json``: every dataset, the counts, the files not taken and the licences of a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypermodal.labels import ClassVocabulary
from hypermodal.sources.samples.manifest import PackageManifest
from hypermodal.sources.samples.records import Verdict
from hypermodal.sources.samples.wheels import WheelInfo
from hypermodal.sources.samples.write import counts

#: Version of the ``samples.json`` layout (also part of the rerun fingerprint).
SCHEMA_VERSION = 1


def _rejected_rows(verdicts: list[Verdict], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rejected files, each pointed at the dataset that holds its image or study, if any."""
    by_sop = {
        f["sop_instance_uid"]: m["name"]
        for m in metas
        for f in m["files"]
        if f.get("sop_instance_uid")
    }
    by_study = {
        f["study_instance_uid"]: m["name"]
        for m in metas
        for f in m["files"]
        if f.get("study_instance_uid")
    }
    rejected = []
    for v in verdicts:
        if v.kind != "rejected":
            continue
        row = v.to_dict()
        if v.sop and v.sop in by_sop:
            row["same_sop_as_dataset"] = by_sop[v.sop]
        elif v.study and v.study in by_study:
            row["same_study_as_dataset"] = by_study[v.study]
        rejected.append(row)
    return rejected


def _notes(totals: dict[str, Any], missing: list[str], vocab: ClassVocabulary) -> list[str]:
    notes = []
    if "PT" in missing:
        notes.append(
            "No real PET (PT) image ships in any of these packages: the only PET-named items "
            "are nibabel's tinypet.v (a 10x10x3 synthetic ECAT toy) and pydicom's colour "
            "palettes pet.dcm / pet20step.dcm (lookup tables, no image)."
        )
    for cls in vocab.classes:
        row = totals["by_class"][cls]
        if 0 < row["datasets_real"] < 3:
            notes.append(
                f"Only {row['datasets_real']} real (non-template, non-phantom) {cls} dataset(s): "
                "too few to put whole datasets in train, validate and test."
            )
    return notes


def _dataset_row(meta: dict[str, Any], vocab: ClassVocabulary) -> dict[str, Any]:
    classes = {
        vocab.label_for_modality(f["modality"])
        if f["modality"]
        else vocab.normalise_label(meta["label"])
        for f in meta["files"]
    }
    return {
        "name": meta["name"],
        "label": meta["label"],
        "modalities": meta["modalities"],
        "classes": sorted(c for c in classes if c),
        "body_part": meta["body_part"],
        "template": meta["template"],
        "phantom": meta["phantom"],
        "package": meta["source"]["package"],
        "files": len(meta["files"]),
        "images": meta["images"],
        "re_encodings": sum(len(f["re_encodings"]) for f in meta["files"]),
    }


def _package_row(wheel: WheelInfo, metas: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": wheel.pkg.name,
        "version": wheel.version,
        "licence": wheel.licence,
        "licence_field": wheel.licence_field,
        "licence_expected": wheel.pkg.licence,
        "wheel": wheel.path.name,
        "wheel_sha256": wheel.sha256,
        "datasets": sum(1 for m in metas if m["source"]["package"] == wheel.pkg.name),
    }


def summarise(
    metas: list[dict[str, Any]],
    verdicts: list[Verdict],
    wheels: dict[str, WheelInfo],
    selected: Sequence[PackageManifest],
    vocab: ClassVocabulary,
    fingerprint: str,
) -> dict[str, Any]:
    """The content of ``samples.json`` for the written datasets (``metas``) and the verdicts."""
    totals = counts(metas, vocab)
    missing = [c for c in vocab.classes if totals["by_class"][c]["datasets"] == 0]
    return {
        "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "packages": [_package_row(wheels[p.name], metas) for p in selected],
        "datasets": [_dataset_row(m, vocab) for m in metas],
        "totals": totals,
        "missing_classes": missing,
        "notes": _notes(totals, missing, vocab),
        "rejected": _rejected_rows(verdicts, metas),
        "excluded": [v.to_dict() for v in verdicts if v.kind == "excluded"],
    }
