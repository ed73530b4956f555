"""Measure what classifying IDC with ``predict`` costs here, and the counts it scales to.

Per image: read + decode + preprocess + the default model (ONNX Runtime, one thread), in one
process, on pydicom's CT_small written as a series. Per series: ``predict`` (8 instances per
series, 2 decoding workers) over ``--series`` series of ``--slices`` files. IDC's counts come
from ``idc-index-data``'s index. Prints one JSON object (the figures of ``docs/capacity.md``).

    .venv/bin/python benchmarks/idc_predict_cost.py --series 12 --slices 40
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def idc_counts() -> dict[str, float]:
    import duckdb

    from hypermodal.sources.plan.idc_index import default_index_path, index_version

    sql = f"""SELECT count(*), sum(instanceCount), sum(series_size_MB),
        sum(least(instanceCount, 8)), sum(least(instanceCount, 8) * series_size_MB / instanceCount)
        FROM read_parquet('{default_index_path()}')"""
    series, instances, mb, sampled, sampled_mb = duckdb.connect().sql(sql).fetchall()[0]
    return {
        "index_version": index_version(),
        "series": int(series),
        "instances": int(instances),
        "total_tb": round(mb / 1e6, 2),
        "sampled_instances": int(sampled),
        "sampled_tb": round(sampled_mb / 1e6, 2),
        "header_tb_at_most": round(instances * 65536 / 1e12, 2),
    }


def per_image(files: list[Path], repeats: int = 3) -> float:
    import numpy as np

    from hypermodal.inference.decoding import decode_file
    from hypermodal.inference.model import load_model, predict_proba
    from hypermodal.inference.predict import default_model_path

    loaded = load_model(default_model_path(), device="cpu", threads=1)
    pre = loaded.preprocess.to_dict()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for f in files:
            item = decode_file((str(f), None, pre))
            predict_proba(loaded, np.asarray(item["images"]))
        best = min(best, (time.perf_counter() - start) / len(files))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=12)
    parser.add_argument("--slices", type=int, default=40)
    args = parser.parse_args()
    from tests.helpers import make_ct_series

    from hypermodal.inference import predict

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        files: list[Path] = []
        for i in range(args.series):
            uid = f"1.2.826.0.1.3680043.8.498.{i + 1}"
            files += make_ct_series(root / f"s{i}", args.slices, seed=i, series_uid=uid)
        image_s = per_image(files[: args.slices])
        start = time.perf_counter()
        summary = predict([root], None, Path(tmp) / "out.csv", workers=2, progress=False)
        wall = time.perf_counter() - start
    print(
        json.dumps(
            {
                "per_image_s_one_core": round(image_s, 5),
                "series": summary.series,
                "files": summary.files_seen,
                "images_decoded": summary.images,
                "predict_wall_s_2_cpus": round(wall, 2),
                "per_series_s_2_cpus": round(wall / max(1, summary.series), 4),
                "idc": idc_counts(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
