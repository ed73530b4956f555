"""``predict`` throughput with the default model, against the same CNN alone, side by side.

The fused prediction adds, per image, the intensity statistics of the decoded values and a
forest evaluation, and per batch the fusion; this measures what that costs. Both variants run
the same files, the same CNN weights and the same engine, interleaved repeat by repeat (this
machine is noisy); medians and their ratio are printed.

* ``pixels only``: the default checkpoint with its ``evidence`` key removed (the CNN decides).
* ``fused``: the default checkpoint as shipped (CNN + feature forest + header + fusion).

    .venv/bin/python benchmarks/predict_evidence.py                  # the bundled samples
    .venv/bin/python benchmarks/predict_evidence.py --inputs DIR --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from hypermodal.default_model import MODEL_PATH
from hypermodal.inference import predict
from hypermodal.inference.backends import is_onnx_bundle
from hypermodal.inference.onnx_bundle import read_bundle, write_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, default=None, help="files to classify")
    parser.add_argument("--model", type=Path, default=MODEL_PATH)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        inputs = args.inputs
        if inputs is None:
            from hypermodal.sources.samples import gather_samples

            inputs = tmp_path / "samples"
            gather_samples(inputs, progress=False)
        if is_onnx_bundle(args.model):  # the bundled model: an ONNX bundle
            bundle = read_bundle(args.model)
            bundle.meta["evidence"] = None
            pixels_only = tmp_path / "pixels-only.onnx.zip"
            write_bundle(pixels_only, bundle)  # a new content digest for what is left
        else:
            import torch

            from hypermodal.train.checkpoint import save_checkpoint

            data = torch.load(args.model, map_location="cpu", weights_only=True)
            data.pop("evidence", None)
            data.pop("tensor_digest", None)
            pixels_only = tmp_path / "pixels-only.pt"
            save_checkpoint(pixels_only, data)  # a new tensor digest for what is left
        variants = {"pixels only": pixels_only, "fused": args.model}
        rates: dict[str, list[float]] = {name: [] for name in variants}
        images = 0
        for _ in range(args.repeats):
            for name, ckpt in variants.items():
                s = predict(
                    [inputs],
                    ckpt,
                    tmp_path / "p.parquet",
                    slices=None,  # every image: the rate of the models, not of sampling
                    workers=args.workers,
                    progress=False,
                )
                rates[name].append(s.images_per_second)
                images = s.images
        base = statistics.median(rates["pixels only"])
        print(f"{images} images, {args.repeats} repeats, medians (images/s, whole predict run):")
        for name, values in rates.items():
            med = statistics.median(values)
            print(f"  {name:12s} {med:8.1f} img/s   ratio to pixels only {med / base:5.2f}")


if __name__ == "__main__":
    main()
