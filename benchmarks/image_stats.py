"""The per-image intensity statistics with and without the depth contrast, side by side.

``image_stats`` runs on every image the store build and ``predict`` decode. The depth contrast
(a hole fill, a distance transform and a rank correlation on a grid of at most 16,384 pixels)
is the one spatial statistic among them; this measures what it adds per image, on real slices:
a 512² head CT (CQ500), a 64² MR, a 1760² radiograph (all decoded once beforehand)
and the middle slices of the MNI152 T1 template and the CT brain atlas. The two variants are
interleaved repeat by repeat (this machine is noisy); medians and their ratio are printed.

    .venv/bin/python benchmarks/image_stats.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

import hypermodal.evidence.features as features
from hypermodal.io import iter_images
from hypermodal.sources.samples import gather_samples

REPO = Path(__file__).resolve().parents[1]


def _images(tmp: Path) -> dict[str, list[np.ndarray]]:
    gather_samples(tmp, cache_dir=REPO / ".cache" / "wheels",
                   packages=["pydicom", "pydicom-data", "nilearn", "totalsegmentator"],
                   progress=False)  # fmt: skip
    out: dict[str, list[np.ndarray]] = {}
    for name, folder in (("CT 512²", "pydicom-data.ct-head-cq500"), ("MR 64²", "pydicom.mr-small"),
                         ("XR 1760²", "pydicom-data.cr-leg")):  # fmt: skip
        (path,) = (tmp / folder).glob("*.dcm")
        out[name] = [img for _, img in iter_images(path)][:1] * 20
    for name, folder in (("MNI152 T1", "nilearn.mni152-2009a-t1"),
                         ("CT atlas", "totalsegmentator.ct-brain-atlas")):  # fmt: skip
        (path,) = (tmp / folder).glob("*.nii.gz")
        vol = np.asarray(nib.load(path).dataobj)
        z = vol.shape[2]
        out[name] = [vol[:, :, k].astype(np.float32) for k in range(z // 3, 2 * z // 3, 3)]
    return out


def _time(images: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for img in images:
        features.image_stats(img)
    return (time.perf_counter() - start) / len(images) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    real = features.depth_contrast
    with tempfile.TemporaryDirectory() as tmp:
        sets = _images(Path(tmp))
    print(f"{'images':<12} {'n':>4} {'without ms':>11} {'with ms':>9} {'ratio':>6}")
    for name, images in sets.items():
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.repeats):
            features.depth_contrast = lambda *a: float("nan")  # the statistics before it
            times["without"].append(_time(images))
            features.depth_contrast = real
            times["with"].append(_time(images))
        a, b = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"{name:<12} {len(images):>4} {a:>11.2f} {b:>9.2f} {b / a:>6.2f}")


if __name__ == "__main__":
    main()
