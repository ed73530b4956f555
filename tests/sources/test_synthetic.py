"""The synthetic workload generator (throughput and memory tests only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hypermodal.io import iter_images, read_header
from hypermodal.sources.synthetic import CLASS_SPECS, class_spec, write_synthetic


def test_each_class_has_its_size_modality_and_depth(tmp_path):
    paths = write_synthetic(tmp_path, 1, ["CT", "MR", "PET", "XR"], seed=0)
    seen = {}
    for p in paths:
        h = read_header(p)
        ((_, img),) = list(iter_images(p, [0]))
        seen[h.modality] = (h.rows, h.columns, img.shape, h.extra.get("bits_stored"))
    assert seen == {
        "CT": (512, 512, (512, 512), 12),
        "MR": (256, 256, (256, 256), 12),
        "PT": (128, 128, (128, 128), 16),
        "DX": (2500, 2000, (2500, 2000), 14),
    }


def test_ct_is_in_hounsfield_units(tmp_path):
    (p,) = write_synthetic(tmp_path, 1, ["CT"])
    ((_, img),) = list(iter_images(p, [0]))
    assert img.min() < -900 and 0 < np.median(img[200:300, 200:300]) < 200


def test_same_seed_same_files_other_seed_other_pixels(tmp_path):
    a = write_synthetic(tmp_path / "a", 3, ["MR"], seed=5)
    b = write_synthetic(tmp_path / "b", 3, ["MR"], seed=5)
    c = write_synthetic(tmp_path / "c", 3, ["MR"], seed=6)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != c[0].read_bytes()
    assert a[0].read_bytes() != a[1].read_bytes()
    assert len({read_header(p).instance for p in a}) == 3


@pytest.mark.parametrize("compress", ["rle", "jpeg2000"])
def test_compressed_files_decode_to_the_uncompressed_pixels(tmp_path, compress):
    plain = write_synthetic(tmp_path / "plain", 2, ["PT"], seed=1, frames=2)
    packed = write_synthetic(tmp_path / compress, 2, ["PT"], seed=1, frames=2, compress=compress)
    for p, q in zip(plain, packed, strict=True):
        assert read_header(q).transfer_syntax != read_header(p).transfer_syntax
        assert q.stat().st_size < p.stat().st_size
        for (i, x), (j, y) in zip(iter_images(p, [0, 1]), iter_images(q, [0, 1]), strict=True):
            assert i == j and np.array_equal(x, y)


def test_multi_frame_files_hold_distinct_frames(tmp_path):
    (p,) = write_synthetic(tmp_path, 1, ["PT"], frames=4)
    assert read_header(p).num_images == 4
    frames = [img for _, img in iter_images(p, range(4))]
    assert not np.array_equal(frames[0], frames[1])


def test_unknown_class_or_codec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic class"):
        write_synthetic(tmp_path, 1, ["US"])
    with pytest.raises(ValueError, match="unknown compression"):
        write_synthetic(tmp_path, 1, ["CT"], compress="zip")
    assert class_spec("pet") is CLASS_SPECS["PT"] and class_spec("dx") is CLASS_SPECS["XR"]


def test_catalog_sees_one_dataset_per_class(tmp_path):
    from hypermodal.catalog import build_catalog, read_catalog

    write_synthetic(tmp_path / "src", 2, ["CT", "PT"], frames=3)
    build_catalog([tmp_path / "src"], tmp_path / "cat.parquet", workers=1, progress=False)
    cat = read_catalog(tmp_path / "cat.parquet")
    assert cat.groupby("label").size().to_dict() == {"CT": 6, "PT": 6}
    assert cat["dataset"].nunique() == 2


def test_cli_synth(tmp_path):
    from hypermodal.cli import app

    result = CliRunner().invoke(
        app, ["synth", str(tmp_path), "--n", "2", "--classes", "MR,PET", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["files"] == 4 and info["slices"] == 4
    assert len(list(tmp_path.rglob("*.dcm"))) == 4
