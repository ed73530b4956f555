"""CNN inference: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side.

One run, the same weights (the bundled default model), the same real images (the bundled
sample corpus, preprocessed as ``predict`` does), the same threads; the three engines are
interleaved repeat by repeat (this machine is shared and noisy) and the medians and their
ratios to PyTorch are printed. At the model's own side (96 px) it also measures what int8
costs in agreement:

* the CNN's probabilities: ONNX Runtime fp32 against PyTorch (max |Δp|), int8 against fp32
  (top-1 agreement, max and mean |Δp|) on every corpus image, and on the images of the datasets
  that did not calibrate (int8 is calibrated on every other dataset folder);
* the fused decision (CNN + features + series + header) of ``predict`` on every image of the
  corpus, int8 against fp32 and fp32 against the PyTorch checkpoint of the same model.

Other sides (``--sizes 96,224``) run the same weights on images preprocessed to that side
(throughput only: the network was trained at 96)::

    .venv/bin/python benchmarks/onnx_inference.py
    .venv/bin/python benchmarks/onnx_inference.py --sizes 96,224 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hypermodal.default_model import MODEL_PATH
from hypermodal.inference import load_model, predict, predict_proba
from hypermodal.inference.backends import cpu_count
from hypermodal.inference.onnx_export import export_onnx
from hypermodal.inference.onnx_quantize import (
    agreement,
    calibration_set,
    default_calibration_corpus,
)
from hypermodal.preprocess import PreprocessConfig

ALL = 10**9


def pt_checkpoint(bundle: Path, out: Path, side: int | None = None) -> Path:
    """The PyTorch checkpoint of ``bundle`` (same weights and evidence), optionally trained
    and fed at ``side``."""
    from hypermodal.evidence import EvidenceModel
    from hypermodal.inference.onnx_bundle import read_bundle
    from hypermodal.train.checkpoint import save_checkpoint

    b = read_bundle(bundle)
    skip = ("format", "format_version", "content_digest", "onnx", "source", "int8", "evidence")
    payload = {k: v for k, v in b.meta.items() if k not in skip}
    payload["model_state"] = load_model(bundle, backend="torch").model.state_dict()
    payload["evidence"] = EvidenceModel.from_state(b.evidence_state()).to_state()
    if side is not None:
        payload["preprocess"] = {**payload["preprocess"], "size": side}
        payload["train_size"] = side
    save_checkpoint(out, payload)
    return out


def rate(loaded: Any, batch: np.ndarray) -> float:
    start = time.perf_counter()
    predict_proba(loaded, batch)
    return len(batch) / (time.perf_counter() - start)


def speed(models: dict[str, Any], batch: np.ndarray, repeats: int) -> dict[str, float]:
    for m in models.values():  # warm up: sessions, allocators, caches
        predict_proba(m, batch[:8])
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, m in models.items():
            rates[name].append(rate(m, batch))
    return {name: statistics.median(r) for name, r in rates.items()}


def fused(corpus: Path, models: dict[str, Path], tmp: Path) -> dict[str, Any]:
    """``predict`` on every image of the corpus with each model; agreement of the decisions."""
    tables = {}
    for name, model in models.items():
        images = tmp / f"images-{name}.parquet"
        predict(
            [corpus], model, tmp / f"series-{name}.parquet", images, slices=None, progress=False
        )
        tables[name] = pd.read_parquet(images).set_index(["path", "index"]).sort_index()
    ref = tables["ort-fp32"]
    out: dict[str, Any] = {"images": len(ref)}
    for name in ("ort-int8", "torch"):
        other = tables[name].loc[ref.index]
        pcols = [c for c in ref.columns if c.startswith("p_")]
        out[name] = {
            "same_prediction": round(float((other["prediction"] == ref["prediction"]).mean()), 6),
            "max_abs_diff_fused_p": round(float(np.abs(other[pcols] - ref[pcols]).max().max()), 6),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=None, help="the sample corpus folder")
    parser.add_argument("--sizes", default="96", help="network input sides, e.g. 96,224")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--no-predict", action="store_true", help="skip the fused comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = args.samples or default_calibration_corpus()
    datasets = sorted(p for p in corpus.iterdir() if p.is_dir())
    calib, held = datasets[0::2], datasets[1::2]
    report: dict[str, Any] = {"threads": args.threads, "batch": args.batch, "sizes": {}}
    print(f"threads {args.threads}, batch {args.batch}, {args.repeats} repeats, corpus {corpus}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for side in (int(s) for s in args.sizes.split(",")):
            fp32 = MODEL_PATH
            if side != load_model(MODEL_PATH).train_size:
                fp32 = tmp / f"fp32-{side}.onnx.zip"
                export_onnx(pt_checkpoint(MODEL_PATH, tmp / f"m{side}.pt", side), fp32)
            int8 = tmp / f"int8-{side}.onnx.zip"
            export_onnx(fp32, int8, int8=True, calibration=calib)
            models = {
                "torch": load_model(fp32, backend="torch"),
                "ort-fp32": load_model(fp32, threads=args.threads),
                "ort-int8": load_model(int8, threads=args.threads),
            }
            pre = PreprocessConfig.from_dict(models["ort-fp32"].meta["preprocess"])
            images, _ = calibration_set([corpus], pre, limit=ALL, per_file=ALL)
            held_images, _ = calibration_set(held, pre, limit=ALL, per_file=ALL)
            p = {name: predict_proba(m, images) for name, m in models.items()}
            ph = {
                name: predict_proba(models[name], held_images) for name in ("ort-fp32", "ort-int8")
            }
            rng = np.random.default_rng(0)
            batch = images[
                rng.choice(len(images), size=args.batch, replace=len(images) < args.batch)
            ]
            rates = speed(models, batch, args.repeats)
            entry = {
                "images_per_second": {k: round(v, 1) for k, v in rates.items()},
                "ratio_to_torch": {k: round(v / rates["torch"], 2) for k, v in rates.items()},
                "fp32_vs_torch": agreement(p["torch"], p["ort-fp32"]),
                "int8_vs_fp32_all": agreement(p["ort-fp32"], p["ort-int8"]),
                "int8_vs_fp32_held_out": agreement(ph["ort-fp32"], ph["ort-int8"]),
                "bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
            }
            if side == 96 and not args.no_predict:
                models_paths = {
                    "ort-fp32": fp32,
                    "ort-int8": int8,
                    "torch": pt_checkpoint(fp32, tmp / "torch.pt"),
                }
                entry["fused"] = fused(corpus, models_paths, tmp)
            report["sizes"][side] = entry
            print(f"\n{side} px: images/s (median of {args.repeats}), ratio to PyTorch eager")
            for name, r in rates.items():
                print(f"  {name:9s} {r:8.1f}   x{r / rates['torch']:.2f}")
            print(
                f"  ONNX Runtime fp32 vs PyTorch: max |dp| {entry['fp32_vs_torch']['max_abs_diff']}"
            )
            for key in ("int8_vs_fp32_all", "int8_vs_fp32_held_out"):
                a = entry[key]
                print(
                    f"  {key}: {a['images']} images, top-1 agreement {a['top1_agreement']:.4f}, "
                    f"max |dp| {a['max_abs_diff']:.4f}, mean |dp| {a['mean_abs_diff']:.5f}"
                )
            print(
                f"  bundle size: fp32 {entry['bytes']['fp32'] / 1e6:.1f} MB, "
                f"int8 {entry['bytes']['int8'] / 1e6:.1f} MB"
            )
            if "fused" in entry:
                f = entry["fused"]
                print(
                    f"  fused predict on {f['images']} images: int8 same decision "
                    f"{f['ort-int8']['same_prediction']:.4f} (max |dp| "
                    f"{f['ort-int8']['max_abs_diff_fused_p']}); PyTorch .pt same decision "
                    f"{f['torch']['same_prediction']:.4f} (max |dp| "
                    f"{f['torch']['max_abs_diff_fused_p']})"
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
