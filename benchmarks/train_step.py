"""Training-step throughput (images/s), our input path next to the paper's naive one.

Both paths train the same network with the same SGD step on the same synthetic images read
from a slice store (``write_store_arrays``, built once per size in ``--store-dir``):

* ``naive`` — the paper's code: a per-image ``Dataset`` returns a float32 tensor normalised on
  the CPU (``/255``), ``DataLoader`` collates the batch, float32 crosses to the device; fp32,
  contiguous memory format.
* ``ours``  — :class:`hypermodal.store.loader.BatchFeeder`: one sorted fancy-index read per batch of
  the memory-mapped uint8 store (pinned on CUDA), uint8 crosses to the device and
  :func:`~hypermodal.inference.model.to_model_input` scales it there; optional bf16 autocast,
  channels-last and ``torch.compile``.

A step is timed from asking the loader for the batch to the end of ``optimizer.step()``; on the
CPU the figure is ``batch / median step time`` after warm-up steps. On CUDA the steps are not
synchronised one by one (that would stop the copy of the next batch from overlapping the
current step): the figure is ``batch × steps / wall time`` of the timed steps, synchronised
before and after. ``input ms`` is the median host time to get a batch ready for the network
(loader + conversion + transfer call): on a CPU the network dominates the step, and this column
shows what the input path itself costs.

Examples::

    python benchmarks/train_step.py                                   # CPU, resnet18 224/128/112
    python benchmarks/train_step.py --device cuda --batch 256 --amp bf16 --channels-last \\
        --models resnet18 resnet50 --sizes 224 128 --paths ours --workers 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hypermodal.inference.model import autocast_context, resolve_device, to_model_input
from hypermodal.labels import ClassVocabulary
from hypermodal.models import build_model
from hypermodal.store import SliceStore, write_store_arrays
from hypermodal.store.loader import BatchFeeder

CLASSES = ("CT", "MR", "PT", "XR")


def synthetic_store(root: Path, size: int, n: int) -> SliceStore:
    """A store of ``n`` random ``size²`` uint8 images in four classes (built once, reused)."""
    path = root / f"store-{size}-{n}"
    if (path / "store.json").exists():  # written last: the store is complete
        return SliceStore.open(path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = [CLASSES[i % 4] for i in range(n)]
    table = pd.DataFrame({"dataset": "synthetic", "label": labels, "split": "train"})
    return write_store_arrays(path, images, table, ClassVocabulary())


class NaiveImages(Dataset):
    """The paper's loader: one image at a time, float32, normalised on the CPU."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = np.asarray(self.images[i], dtype=np.float32) / 255.0
        return torch.from_numpy(img)[None], int(self.labels[i])


def _forever(make_iter: Any) -> Any:
    epoch = 0
    while True:
        yield from make_iter(epoch)
        epoch += 1


def measure(
    path: str,
    model_name: str,
    store: SliceStore,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    workers: int,
    amp: str,
    channels_last: bool,
    compile_model: bool,
    input_only: bool = False,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(model_name, len(CLASSES), in_chans=1).to(device)
    naive = path == "naive"
    cl = channels_last and not naive
    if cl:
        model.to(memory_format=torch.channels_last)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if not naive else None
    if device.type != "cuda":
        amp_dtype = None
    step_model = torch.compile(model) if compile_model and not naive else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.005)
    labels = store.labels()
    rows = store.rows("train")
    if naive:
        loader = DataLoader(
            NaiveImages(store.images, labels),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=False,
            persistent_workers=workers > 0,
        )
        batches = _forever(lambda _e: iter(loader))
    else:
        feed = BatchFeeder(
            store.images, labels, rows, batch, shuffle=True, device=device, workers=workers
        )
        batches = _forever(lambda e: (b for b in feed.epoch(e) if len(b[1]) == batch))
    model.train()
    times: list[float] = []
    input_times: list[float] = []
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t_start = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t_start = time.perf_counter()
        t0 = time.perf_counter()
        if naive:
            xf, y = next(batches)
            x = xf.to(device, non_blocking=False)
        else:
            xu8, y, _rows = next(batches)
            x = to_model_input(xu8, device, None, cl)
        y = y.to(device, non_blocking=True)
        input_times.append(time.perf_counter() - t0)
        if input_only:
            times.append(input_times[-1])
            continue
        with autocast_context(device, amp_dtype):
            logits = step_model(x)
            loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not cuda:
            times.append(time.perf_counter() - t0)
    sync()
    wall = time.perf_counter() - t_start
    med = statistics.median(times[warmup:]) if not cuda else wall / steps
    return {
        "path": path,
        "model": model_name,
        "size": int(store.preprocess.size),
        "batch": batch,
        "device": str(device),
        "amp": "off" if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "channels_last": cl,
        "compile": bool(compile_model and not naive),
        "workers": workers,
        "steps": steps,
        "input_only": input_only,
        "median_step_s": med,
        "median_input_s": statistics.median(input_times[warmup:]),
        "wall_s": wall,
        "images_per_s": batch / med,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["resnet18"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 128, 112])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--paths", nargs="+", default=["naive", "ours"], choices=["naive", "ours"])
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile (ours only)")
    ap.add_argument(
        "--input-only", action="store_true", help="time only the input path (no network step)"
    )
    ap.add_argument("--images", type=int, default=0, help="store size (default 4 batches)")
    ap.add_argument("--store-dir", type=Path, default=None, help="reuse stores across runs")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--json", type=Path, default=None, help="append results as JSON lines")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    n = args.images or max(4 * args.batch, 256)
    tmp = None
    root = args.store_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="hm-bench-")
        root = Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"# device {device} ({name}), torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, batch {args.batch}, median of {args.steps} steps"
    )
    print(
        f"{'model':9s} {'size':>4s}  {'path':5s} {'amp':5s} {'ch-last':7s} {'compile':7s}"
        f" {'input ms':>8s} {'step ms':>8s} {'images/s':>9s}  vs naive"
    )
    results = []
    for model_name in args.models:
        for size in args.sizes:
            store = synthetic_store(root, size, n)
            naive_ips = None
            for path in args.paths:
                r = measure(
                    path,
                    model_name,
                    store,
                    device,
                    args.batch,
                    args.steps,
                    args.warmup,
                    args.workers,
                    args.amp,
                    args.channels_last,
                    args.compile,
                    args.input_only,
                )
                results.append(r)
                if path == "naive":
                    naive_ips = r["images_per_s"]
                ratio = f"{r['images_per_s'] / naive_ips:5.2f}x" if naive_ips else "    -"
                print(f"{model_name:9s} {size:4d}  {path:5s} {r['amp']:5s} "
                      f"{str(r['channels_last']):7s} {str(r['compile']):7s} "
                      f"{r['median_input_s'] * 1e3:8.1f} "
                      f"{r['median_step_s'] * 1e3:8.1f} {r['images_per_s']:9.1f}  {ratio}",
                      flush=True)  # fmt: skip
    if args.json:
        with args.json.open("a") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
