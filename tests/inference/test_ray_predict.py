"""``predict --engine ray``: the model on the actors, inputs from a loopback S3 server.

A private local Ray instance (2 CPUs) and a real S3-compatible server on loopback (moto) holding
real DICOM (pydicom's CT_small, MR_small, an ultrasound file, a multi-frame MR and a truncated
file): the tables must be those of the local path on the same files on disk.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermodal.common.rejects import read_errors
from hypermodal.inference import predict
from hypermodal.inference.ray_actors import ActorPool, InferenceWorker
from hypermodal.inference.remote_inputs import RemoteOptions
from tests.common import crash_files as cf
from tests.helpers import pydicom_file
from tests.servers.s3 import BUCKET, s3_server

HAS_RAY = importlib.util.find_spec("ray") is not None
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not HAS_RAY, reason="ray is not installed (pip install 'hypermodal[cluster]')"
    ),
]

FILES = {
    "ct.dcm": "CT_small.dcm",
    "mr.dcm": "MR_small.dcm",
    "us.dcm": "US1_UNCR.dcm",
    "emri.dcm": "emri_small.dcm",  # 10 frames, 8 decoded
    "broken.dcm": "MR_truncated.dcm",
}
PCOLS = ["p_CT", "p_MR", "p_PT", "p_XR", "p_OTHER"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-archive")
    for name, source in FILES.items():
        shutil.copy(pydicom_file(source), root / name)
    return root


@pytest.fixture(scope="module")
def ray_engine():
    from hypermodal.common.engines import RayEngine

    engine = RayEngine(workers=2)  # ray.init(num_cpus=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def local_run(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-local") / "series.csv"
    images = out.with_name("images.csv")
    summary = predict([archive], None, out, images_out=images, workers=2, progress=False)
    return summary, pd.read_csv(out), pd.read_csv(images), read_errors(_errors(out))


@pytest.fixture(scope="module")
def bucket(archive):
    """The archive's files as objects under ``s3://idc-open-data/archive/``."""
    with s3_server() as server:
        for path in sorted(archive.iterdir()):
            server.client.put_object(
                Bucket=BUCKET, Key=f"archive/{path.name}", Body=path.read_bytes(), ACL="public-read"
            )
        yield server


def _errors(out: Path) -> Path:
    return out.with_name(out.name + ".errors.jsonl")


def _same_tables(a: pd.DataFrame, b: pd.DataFrame, key: str) -> None:
    """Same rows and values; probabilities equal to float rounding."""
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a[PCOLS].to_numpy(), b[PCOLS].to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=1e-5, rtol=0)
    rest = [c for c in a.columns if c not in (*PCOLS, "confidence", "path", "folder")]
    pd.testing.assert_frame_equal(a[rest], b[rest])


def test_ray_actors_give_the_tables_of_the_local_path(archive, local_run, ray_engine, tmp_path):
    summary, series, images, errors = local_run
    out = tmp_path / "series.csv"
    got = predict(
        [archive], None, out, images_out=tmp_path / "images.csv", progress=False, engine=ray_engine
    )
    assert len(series) == 4 and summary.files_skipped == 1
    _same_tables(series, pd.read_csv(out), "series")
    pd.testing.assert_frame_equal(
        images.drop(columns=[*PCOLS, "confidence"]),
        pd.read_csv(tmp_path / "images.csv").drop(columns=[*PCOLS, "confidence"]),
    )
    assert read_errors(_errors(out)) == errors  # the truncated file, with the same reason
    assert (got.files_seen, got.files_predicted, got.images, got.series) == (
        summary.files_seen,
        summary.files_predicted,
        summary.images,
        summary.series,
    )
    emri = pd.read_csv(out).set_index("path").loc[str(archive / "emri.dcm")]
    assert (emri["num_images"], emri["images_decoded"]) == (10, 8)


def test_s3_objects_on_ray_answer_as_the_files_on_disk(
    bucket, local_run, ray_engine, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from hypermodal.cli import app

    _, series, _, errors = local_run
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.endpoint)
    out = tmp_path / "s3.csv"
    args = ["predict", f"s3://{BUCKET}/archive/", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(app, [*args, "--engine", "ray"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["series"] == 4
    got = pd.read_csv(out)
    assert got["path"].str.startswith(f"s3://{BUCKET}/archive/").all()
    _same_tables(series, got, "series")
    (err,) = read_errors(_errors(out))
    assert err["path"] == f"s3://{BUCKET}/archive/broken.dcm"
    assert err["reason"] == errors[0]["reason"]


def test_s3_objects_without_ray_answer_as_the_files_on_disk(bucket, local_run, tmp_path):
    """The local engine's decoding processes read the objects; the model runs here."""
    from typer.testing import CliRunner

    from hypermodal.cli import app

    _, series, _, _ = local_run
    env = {"AWS_ENDPOINT_URL": bucket.endpoint}
    out = tmp_path / "s3.csv"
    args = ["predict", f"s3://{BUCKET}/archive", "--out", str(out), "--workers", "2"]
    r = CliRunner().invoke(app, [*args, "--no-progress"], env=env)
    assert r.exit_code == 0, r.output
    _same_tables(series, pd.read_csv(out), "series")
    missing = ["predict", f"s3://{BUCKET}/nothing-here/", "--out", str(tmp_path / "x.csv")]
    r = CliRunner().invoke(app, missing, env=env)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: input s3://{BUCKET}/nothing-here does not exist (no objects under it)"
    ]


def test_report_thumbnails_of_s3_objects_are_the_files_own(bucket, archive, tmp_path, monkeypatch):
    """``--report`` with ``s3://`` inputs: each thumbnail is read from its object, in memory."""
    from hypermodal.inference.report.thumbnails import render_thumbnail

    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.endpoint)
    for name in ("ct.dcm", "emri.dcm"):
        remote = render_thumbnail((f"s3://{BUCKET}/archive/{name}", None, 96))
        local = render_thumbnail((str(archive / name), None, 96))
        assert remote.reason is None and local.reason is None
        assert remote.png == local.png and remote.shown_index == local.shown_index
        assert remote.path == f"s3://{BUCKET}/archive/{name}"
    gone = render_thumbnail((f"s3://{BUCKET}/archive/not-there.dcm", None, 96))
    assert gone.reason and "not-there.dcm" in gone.reason
    report = tmp_path / "report"
    out = tmp_path / "s3.csv"
    predict([f"s3://{BUCKET}/archive/"], None, out, report=report, workers=2, progress=False)
    page = (report / "index.html").read_text()
    assert f"s3://{BUCKET}/archive/ct.dcm" in page  # on a contact sheet, with its image
    assert page.count('src="data:image/png;base64,') >= 4 and "data-unreadable" not in page


class NativeFirstWorker(InferenceWorker):
    """An actor that first decodes each DICOM file with pydicom's own decoders (GDCM,
    pylibjpeg), as a reader without hypermodal's checks would: a bad file crashes the actor."""

    def classify(self, items):
        for location, _ in items:
            try:
                cf.native_decode(location)
            except Exception:  # noqa: BLE001 - only a crash matters here
                pass
        return super().classify(items)


def test_an_actor_that_dies_costs_only_its_file_after_one_retry(archive, ray_engine, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(cf)
    jls = cf.jls_abort_file(tmp_path / "jls-128.dcm")  # GDCM aborts the process on it
    good = [str(archive / "ct.dcm"), str(archive / "mr.dcm")]
    from hypermodal.inference.predict import default_model_path

    chunks = [[(good[0], None), (str(jls), None)], [(good[1], None)]]
    with ActorPool(
        default_model_path(), 2, RemoteOptions(), timeout_s=60, worker_cls=NativeFirstWorker
    ) as pool:
        results = list(pool.run("classify", chunks))
        assert pool.restarts == 2  # the chunk's try, then the file's own retry
    with ActorPool(default_model_path(), 2, RemoteOptions(), timeout_s=60) as clean:
        expected = list(clean.run("classify", [[(g, None)] for g in good]))
    (ct, lost), (mr,) = results
    assert lost == {"path": str(jls), "error": "worker lost twice (the worker died)"}
    for got, (want,) in zip((ct, mr), expected, strict=True):
        np.testing.assert_allclose(got["probs"], want["probs"], atol=1e-6)
        assert got["indices"] == want["indices"] and got["series"] == want["series"]
