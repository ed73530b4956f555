"""``simulate_corpus`` and ``hypermodal simulate`` on a small folder of real datasets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypermodal.cli import app
from hypermodal.io import iter_images, read_header
from hypermodal.sources.simulate import simulate_corpus
from tests.helpers import copy_into, make_real_corpus, nibabel_file

SCALE = 0.25
CONTRACT = {"name", "label", "synthetic", "simulated_from", "simulation", "body_part"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """The shared real corpus plus a real EPI head volume (a usable anatomy source)."""
    root = tmp_path_factory.mktemp("samples")
    make_real_corpus(root)
    copy_into(nibabel_file("example4d.nii.gz"), root / "nifti-epi")
    meta = {"name": "nifti-epi", "label": "MR", "body_part": "HEAD"}
    (root / "nifti-epi" / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def simulated(samples, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim")
    return out, simulate_corpus(samples, out, seed=3, scale=SCALE)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("summary.json", ".simulate.json")
    }


def test_datasets_follow_the_contract(samples, simulated):
    out, summary = simulated
    real = {p.name for p in samples.iterdir() if p.is_dir()}
    names = set(summary["datasets"])
    assert {"sim-drr.nifti-epi", "sim-pet.nifti-epi", "sim-export-drr.nifti-epi"} <= names
    assert {"sim-export.ct-small", "sim-export.cr-leg", "sim-export.ultrasound"} <= names
    assert not any("nifti-mr" in n and "export" not in n for n in names)  # a crop: no anatomy
    assert [s["source"] for s in summary["skipped_sources"]] == ["nifti-mr"]
    for name, entry in summary["datasets"].items():
        meta = json.loads((out / name / "dataset.json").read_text())
        assert set(meta) == CONTRACT and meta["name"] == name and meta["synthetic"] is True
        assert meta["simulated_from"] in real and name.endswith("." + meta["simulated_from"])
        assert meta["simulation"] == entry["kind"] and name.startswith(f"sim-{meta['simulation']}")
        assert meta["label"] == entry["label"]
    labels = {n: e["label"] for n, e in summary["datasets"].items()}
    assert labels["sim-drr.nifti-epi"] == labels["sim-export-drr.nifti-epi"] == "XR"
    assert labels["sim-pet.nifti-epi"] == labels["sim-export-pet.nifti-epi"] == "PT"
    assert labels["sim-mr.nifti-epi"] == "MR"  # MR exports of an MR volume; none of CT slabs
    assert not any(n.startswith("sim-mr.") and "ct" in n for n in labels)
    assert labels["sim-export.ct-small"] == "CT" and labels["sim-export.ultrasound"] == "OTHER"
    assert labels["sim-export.png-xr"] == "XR"
    totals = summary["totals"]
    assert totals["images"] == sum(e["images"] for e in summary["datasets"].values())
    assert totals["images_per_label"]["XR"] >= 3 and totals["images_per_label"]["PT"] >= 8
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["seed"] == 3 and on_disk["parameters"]["scale"] == SCALE


def test_files_are_readable(simulated):
    out, summary = simulated
    for name in summary["datasets"]:
        files = [p for p in (out / name).rglob("*") if p.is_file() and p.suffix != ".json"]
        files = [p for p in files if not p.name.startswith(".")]
        assert files
        for path in files[:: max(1, len(files) // 5)]:
            header = read_header(path)
            _, image = next(iter_images(path, [0]))
            if name.startswith("sim-drr"):
                assert header.modality in ("DX", "CR")
            elif name.startswith("sim-pet"):
                assert header.modality == "PT" or header.format == "nifti"
                assert image.min() >= 0
            elif name.startswith(("sim-ct", "sim-mr")):
                assert header.format == "nifti" and header.modality is None
            else:
                assert header.format == "raster" and path.suffix in (".png", ".jpg")
                assert 0 <= image.min() and image.max() <= 255


def test_same_seed_same_bytes_and_resume(samples, simulated, tmp_path):
    out, _ = simulated
    before = _digests(out)
    result = CliRunner().invoke(
        app,
        ["simulate", str(samples), "--out", str(tmp_path), "--seed", "3", "--scale", str(SCALE)],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["reused"] is False and printed["totals"]["images"] > 0
    assert _digests(tmp_path) == before
    # a complete output is reused as it is
    assert simulate_corpus(samples, out, seed=3, scale=SCALE)["reused"] is True
    # an interrupted one: only what is missing is made again
    (out / "summary.json").unlink()
    victim = out / "sim-export.ct-small"
    for p in victim.iterdir():
        p.unlink()
    kept = out / "sim-drr.nifti-epi"
    stamp = {p: p.stat().st_mtime_ns for p in kept.iterdir()}
    again = simulate_corpus(samples, out, seed=3, scale=SCALE)
    assert again["reused"] is False and (out / "summary.json").exists()
    assert {p: p.stat().st_mtime_ns for p in kept.iterdir()} == stamp
    assert _digests(out) == before


def test_one_patient_per_simulated_volume(simulated):
    out, _ = simulated
    drrs = sorted((out / "sim-drr.nifti-epi").glob("*.dcm"))
    headers = [read_header(p) for p in drrs]
    assert len(drrs) >= 2
    assert len({h.patient for h in headers}) == 1 and len({h.study for h in headers}) == 1
    assert len({h.series for h in headers}) == len(drrs)


def test_another_seed_differs(samples, simulated, tmp_path):
    out, _ = simulated
    other = simulate_corpus(samples, tmp_path, seed=4, scale=SCALE)
    assert set(other["datasets"]) == set(json.loads((out / "summary.json").read_text())["datasets"])
    a, b = _digests(out), _digests(tmp_path)
    shared = a.keys() & b.keys()  # file names carry views and formats, which the seed draws
    assert shared and all(a[k] != b[k] for k in shared if k.endswith(".dcm"))


def test_missing_samples_folder_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["simulate", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert (
        result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
    )
    with pytest.raises(ValueError, match="scale"):
        simulate_corpus(tmp_path, tmp_path / "o", scale=0)


def test_unreadable_files_are_skipped_not_fatal(simulated):
    _, summary = simulated
    # mr-small holds a truncated DICOM and a text file beside the real image
    entry = summary["datasets"]["sim-export.mr-small"]
    assert entry["skipped"] >= 1 and entry["images"] >= 1
