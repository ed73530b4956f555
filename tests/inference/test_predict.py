import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermodal.inference import predict
from tests.helpers import nibabel_file, pydicom_file


@pytest.fixture(scope="module")
def archive(tmp_path_factory, real_corpus):
    """A small 'archive' of DICOM, NIfTI and PNG files plus a broken one."""
    root, _ = real_corpus
    arch = tmp_path_factory.mktemp("archive")
    shutil.copy(pydicom_file("emri_small.dcm"), arch / "emri.dcm")  # 10 frames, one series
    shutil.copy(pydicom_file("CT_small.dcm"), arch / "ct.dcm")
    (arch / "sub").mkdir()
    shutil.copy(nibabel_file("anatomical.nii"), arch / "sub" / "brain.nii")
    shutil.copy(root / "png-xr" / "leg.png", arch / "sub" / "leg.png")
    shutil.copy(pydicom_file("MR_truncated.dcm"), arch / "sub" / "broken.dcm")
    return arch


def test_predict_dicom_nifti_png_rows_and_probabilities(archive, tiny_checkpoint, tmp_path):
    out = tmp_path / "pred.csv"
    images = tmp_path / "images.csv"
    series = tmp_path / "series.parquet"
    s = predict(
        [archive],
        tiny_checkpoint,
        out,
        images_out=images,
        series_out=series,
        slices=None,
        batch_size=7,
        workers=2,
        progress=False,
    )
    df = pd.read_csv(images)
    classes = ["CT", "MR", "PT", "XR"]
    assert list(df.columns[:3]) == ["path", "index", "prediction"]
    assert all(f"p_{c}" in df for c in classes)
    probs = df[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (df["prediction"] == np.array(classes)[probs.argmax(axis=1)]).all()
    per_file = df.groupby(df["path"].map(lambda p: Path(p).name)).size().to_dict()
    import nibabel as nib

    img = nib.load(archive / "sub" / "brain.nii")
    axial = [c in "SI" for c in nib.aff2axcodes(img.affine)].index(True)
    assert per_file == {"emri.dcm": 10, "ct.dcm": 1, "brain.nii": img.shape[axial], "leg.png": 1}
    assert sorted(df[df.path.str.endswith("emri.dcm")]["index"]) == list(range(10))
    assert (df[df.path.str.endswith("ct.dcm")]["header_label"] == "CT").all()
    # counts reconcile and the broken file is reported, not fatal
    assert s.files_seen == 5 and s.files_predicted == 4 and s.files_skipped == 1
    errors = [json.loads(x) for x in (tmp_path / "pred.csv.errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.dcm") and errors[0]["reason"]
    # one row per series/volume, probabilities = mean over its images; --series-out: a copy
    ser = pd.read_parquet(series)
    same = pd.read_csv(out)
    for column in ("series", "path", "prediction", "num_images", "images_decoded"):
        assert list(ser[column]) == list(same[column])
    assert len(ser) == 4 == s.series
    emri = ser[ser.path.str.endswith("emri.dcm")].iloc[0]
    assert emri["num_images"] == 10 == emri["images_decoded"]
    rows = df[df.path.str.endswith("emri.dcm")]
    for c in classes:
        assert emri[f"p_{c}"] == pytest.approx(rows[f"p_{c}"].mean(), abs=1e-6)


def test_predict_matches_the_store_path(real_store, tiny_checkpoint, tmp_path):
    """An image classified from its file gets the same probabilities as from the store."""
    from hypermodal.inference import load_model, predict_proba
    from hypermodal.store import SliceStore

    st = SliceStore.open(real_store)
    row = int(st.rows("test")[0])
    rec = st.table.iloc[row]
    images = tmp_path / "p.parquet"
    predict(
        [rec["path"]],
        tiny_checkpoint,
        tmp_path / "s.csv",
        images_out=images,
        slices=None,
        progress=False,
        workers=1,
    )
    df = pd.read_parquet(images)
    loaded = load_model(tiny_checkpoint)
    expected = predict_proba(loaded, st.images[row : row + 1])[0]
    got = df[df["index"] == rec["index"]][[f"p_{c}" for c in loaded.classes]].to_numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_output_format_is_checked_before_work(archive, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        predict([archive], tiny_checkpoint, tmp_path / "pred.xlsx", progress=False)
    with pytest.raises(FileNotFoundError):
        predict([tmp_path / "missing"], tiny_checkpoint, tmp_path / "p.csv", progress=False)


SERIES_COLUMNS = [
    "series",
    "path",
    "folder",
    "prediction",
    "confidence",
    *(f"p_{c}" for c in ("CT", "MR", "PT", "XR")),
    "header_label",
    "agreement",
    "pixel_prediction",
    "feature_prediction",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "num_files",
    "num_images",
    "images_decoded",
]


def test_the_series_table_carries_the_headers(archive, tiny_checkpoint, tmp_path):
    """By default ``out`` is one row per series, with what its headers say about it."""
    out = tmp_path / "series.csv"
    s = predict([archive], tiny_checkpoint, out, workers=1, progress=False)
    df = pd.read_csv(out, dtype={"PatientID": str, "StudyDate": str})
    assert list(df.columns) == SERIES_COLUMNS
    assert s.series == len(df) == 4 and s.reconciles()
    ct = df[df.path.str.endswith("ct.dcm")].iloc[0]
    assert (ct["PatientID"], ct["StudyDate"], ct["StudyDescription"]) == ("1CT1", "20040119", "e+1")
    assert ct["Modality"] == "CT" and ct["SeriesInstanceUID"] == ct["series"]
    assert ct["StudyInstanceUID"].startswith("1.3.6.1.4.1.5962")
    emri = df[df.path.str.endswith("emri.dcm")].iloc[0]
    assert (emri["num_images"], emri["images_decoded"]) == (10, 8)  # the default sample
    nii = df[df.path.str.endswith("brain.nii")].iloc[0]
    assert nii["series"] == nii["path"] and pd.isna(nii["SeriesInstanceUID"])
    assert nii["agreement"] == "no header" and nii["folder"] == str(archive / "sub")
    assert s.series_per_class == df["prediction"].value_counts().to_dict()
    assert s.images_in_series == int(df["num_images"].sum())
