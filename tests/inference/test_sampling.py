"""Series from headers and the images sampled from them: only the picked images are decoded."""

import shutil

import nibabel as nib
import pandas as pd
import pytest

from hypermodal.common.engines import engine_scope
from hypermodal.common.isolation import DecodeLimits
from hypermodal.inference import predict
from hypermodal.inference.decoding import Sampler, read_headers
from hypermodal.inference.sampling import group_series, plan_series, spread_indices
from tests.helpers import make_ct_series, nibabel_file, pydicom_file


@pytest.mark.parametrize("total,n", [(1, 8), (2, 8), (10, 4), (11, 3), (200, 8), (500, 1), (7, 7)])
def test_spread_indices_are_spread_and_hold_the_middle(total, n):
    picks = spread_indices(total, n)
    assert picks == sorted(set(picks)) and len(picks) == min(n, total)
    assert (total - 1) // 2 in picks
    assert all(0 <= p < total for p in picks)
    if 2 <= n < total:
        assert picks[0] == 0 and picks[-1] == total - 1
        gaps = [b - a for a, b in zip(picks, picks[1:], strict=False)]
        assert max(gaps) <= 2 * (total - 1) / (n - 1) + 1  # no long stretch without a pick
    assert spread_indices(total, None) == list(range(total))


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """A 20-file CT series under shuffled names, a 10-frame MR, a NIfTI volume, a broken file."""
    root = tmp_path_factory.mktemp("volumes")
    ordered = make_ct_series(root / "ct", 20, seed=3)
    shutil.copy(pydicom_file("emri_small.dcm"), root / "emri.dcm")
    shutil.copy(nibabel_file("anatomical.nii"), root / "brain.nii")
    shutil.copy(pydicom_file("MR_truncated.dcm"), root / "broken.dcm")
    img = nib.load(root / "brain.nii")
    axial = [c in "SI" for c in nib.aff2axcodes(img.affine)].index(True)
    return root, ordered, img.shape[axial]


def test_files_are_grouped_and_ordered_by_position_from_headers(volumes):
    root, ordered, _ = volumes
    files = sorted((root / "ct").iterdir())
    with engine_scope("local", workers=1, limits=DecodeLimits(in_process=True)) as runner:
        infos, failed = read_headers(files, runner, progress=False)
    assert not failed
    (series,) = group_series(infos)
    assert series.num_images == 20
    assert [f.path for f in series.files] == [str(p) for p in ordered]  # space, not name
    plan = plan_series(series, 4)
    picked = [ordered.index(next(p for p in ordered if str(p) == k)) for k in plan]
    assert picked == spread_indices(20, 4) and all(v == [0] for v in plan.values())


def test_predict_decodes_only_the_sampled_images(volumes, tiny_checkpoint, tmp_path):
    root, ordered, n_slices = volumes
    out, images_out = tmp_path / "series.csv", tmp_path / "images.parquet"
    s = predict(
        [root], tiny_checkpoint, out, images_out=images_out, slices=4, workers=2, progress=False
    )
    images = pd.read_parquet(images_out)
    series = pd.read_csv(out)
    # 4 images decoded per series; the other files of the CT series are never decoded
    assert len(images) == 12 == s.images
    ct = images[images.path.str.contains("/ct/")]
    assert sorted(ct.path) == sorted(str(ordered[i]) for i in spread_indices(20, 4))
    emri = images[images.path.str.endswith("emri.dcm")]
    assert sorted(emri["index"]) == spread_indices(10, 4)
    brain = images[images.path.str.endswith("brain.nii")]
    assert sorted(brain["index"]) == spread_indices(n_slices, 4)
    # every file counts: seen = decoded + sampled out + unreadable
    assert (s.files_seen, s.files_predicted, s.files_sampled_out, s.files_skipped) == (23, 6, 16, 1)
    assert s.reconciles() and s.series == 3 == len(series)
    by_path = series.set_index(series.path.map(lambda p: p.rsplit("/", 1)[-1]))
    assert by_path.loc[ordered[0].name, "num_images"] == 20
    assert by_path.loc[ordered[0].name, "num_files"] == 20
    assert by_path.loc["emri.dcm", "num_images"] == 10
    assert by_path.loc["brain.nii", "num_images"] == n_slices
    assert (series["images_decoded"] == 4).all()
    assert s.images_in_series == 20 + 10 + n_slices


def test_all_slices_decodes_every_image(volumes, tiny_checkpoint, tmp_path):
    root, _, n_slices = volumes
    images_out = tmp_path / "images.csv"
    s = predict(
        [root],
        tiny_checkpoint,
        tmp_path / "s.csv",
        images_out=images_out,
        slices=None,
        workers=1,
        progress=False,
    )
    assert len(pd.read_csv(images_out)) == 20 + 10 + n_slices == s.images
    assert s.files_sampled_out == 0 and s.files_predicted == 22 and s.files_skipped == 1


def test_an_unreadable_file_leaves_its_series_to_the_others(tmp_path, tiny_checkpoint):
    ordered = make_ct_series(tmp_path / "ct", 5)
    ordered[2].write_bytes(ordered[2].read_bytes()[:-1000])  # the middle one: truncated
    s = predict(
        [tmp_path / "ct"],
        tiny_checkpoint,
        tmp_path / "s.csv",
        slices=1,
        workers=1,
        progress=False,
    )
    assert s.series == 1 and s.files_skipped == 1 and s.files_predicted == 1
    assert s.files_sampled_out == 3 and s.reconciles()
    row = pd.read_csv(tmp_path / "s.csv").iloc[0]
    assert row["num_images"] == 4 and row["images_decoded"] == 1


def test_a_series_whose_sample_failed_to_decode_gets_another_round(volumes):
    root, ordered, _ = volumes
    with engine_scope("local", workers=1, limits=DecodeLimits(in_process=True)) as runner:
        infos, _ = read_headers(ordered[:5], runner, progress=False)
    groups = group_series(infos)
    sampler = Sampler(groups, 1, {str(p): i for i, p in enumerate(ordered[:5])})
    first = sampler.next_round()
    assert first == [(str(ordered[2]), None)]  # the middle file, all of its one image
    second = sampler.next_round()  # nothing of the first round decoded: the others' middle
    assert second == [(str(ordered[1]), None)]
    sampler.done(groups[0].key)
    assert sampler.next_round() == [] and sampler.files_tried() == 2
