"""Capacity plan for the paper's corpus, computed from measured per-unit figures.

Every input is a flag whose default is the figure measured on this machine kind (see
``docs/capacity.md`` for where each came from); pass your own measurements to re-plan:

    .venv/bin/python benchmarks/capacity.py
    .venv/bin/python benchmarks/capacity.py --build-rate 1100 --gpu-rate 2800 --epochs 30

Prints Markdown tables: store size, build time on N cores, training time on K GPUs.
"""

from __future__ import annotations

import argparse


def hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=float, default=6.4e6, help="2D slices in the corpus")
    ap.add_argument("--size", type=int, default=224, help="stored side length (uint8)")
    ap.add_argument(
        "--manifest-bytes", type=float, default=330, help="in-memory manifest bytes per row"
    )
    ap.add_argument(
        "--manifest-file-bytes", type=float, default=40, help="Parquet manifest bytes per row"
    )
    ap.add_argument(
        "--build-rate", type=float, default=950, help="store build images/s, 1 core, uncompressed"
    )
    ap.add_argument("--baseline-rate", type=float, default=270, help="paper pipeline images/s/core")
    ap.add_argument("--j2k-rate", type=float, default=33, help="build images/s/core, JPEG 2000")
    ap.add_argument(
        "--j2k-fraction", type=float, default=0.0, help="share of slices stored as JPEG 2000"
    )
    ap.add_argument("--scaling", type=float, default=0.9, help="parallel efficiency per core")
    ap.add_argument("--catalog-rate", type=float, default=3900, help="header reads/s/core")
    ap.add_argument("--cores", default="1,16,64,256")
    ap.add_argument("--cores-per-host", type=int, default=16)
    ap.add_argument("--source-mb", type=float, default=0.53, help="source MB per slice (512² CT)")
    ap.add_argument(
        "--io-mbs", type=float, default=537, help="sequential read/write MB/s of the build host"
    )
    ap.add_argument(
        "--gpu-rate", type=float, default=3000, help="training images/s per GPU (ASSUMED)"
    )
    ap.add_argument("--loader-rate", type=float, default=20000, help="loader images/s/process")
    ap.add_argument(
        "--disk-random-mbs", type=float, default=368, help="random 49 KB reads MB/s, per node"
    )
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--gpus", default="1,4,8,32")
    a = ap.parse_args()

    n = a.slices
    per = a.size * a.size
    print(f"## Store for {n / 1e6:.1f} M slices at {a.size}x{a.size} uint8\n")
    print("| item | size |\n|---|---|")
    print(f"| images.u8 ({per:,} B/slice) | {n * per / 1e9:,.0f} GB |")
    print(
        f"| manifest.parquet (~{a.manifest_file_bytes:.0f} B/row) | "
        f"{n * a.manifest_file_bytes / 1e9:.2f} GB |"
    )
    print(
        f"| manifest in RAM, all columns (~{a.manifest_bytes:.0f} B/row) | "
        f"{n * a.manifest_bytes / 1e9:.1f} GB |"
    )
    print(f"| manifest in RAM, split+label_index+ok (~22 B/row) | {n * 22 / 1e9:.2f} GB |")

    print("\n## Build time (catalog + store), N cores\n")
    rate_mix = 1 / ((1 - a.j2k_fraction) / a.build_rate + a.j2k_fraction / a.j2k_rate)
    print(
        f"per core: catalog {a.catalog_rate:,.0f} headers/s; store {rate_mix:,.0f} images/s "
        f"({a.j2k_fraction:.0%} JPEG 2000); paper baseline {a.baseline_rate:,.0f} images/s; "
        f"parallel efficiency {a.scaling:.0%}\n"
    )
    io_floor = n * max(a.source_mb, per / 1e6) / a.io_mbs
    print(
        f"I/O floor on one host: {n * a.source_mb / 1e6:.1f} TB of sources read at "
        f"{a.io_mbs:,.0f} MB/s = {hours(io_floor)}; with {a.cores_per_host} cores per host, "
        f"N cores = N/{a.cores_per_host} hosts each reading its share "
        "(store time = the larger of CPU and I/O)\n"
    )
    print("| cores | catalog | store (ours) | store (paper baseline) | all-JPEG 2000 store |")
    print("|---|---|---|---|---|")
    for c in (int(x) for x in a.cores.split(",")):
        eff = 1.0 if c == 1 else a.scaling
        cat = n / (a.catalog_rate * c * eff)
        floor = io_floor / max(1.0, c / a.cores_per_host)
        ours = max(n / (rate_mix * c * eff), floor)
        base = max(n / (a.baseline_rate * c * eff), floor)
        j2k = n / (a.j2k_rate * c * eff)
        print(f"| {c} | {hours(cat)} | {hours(ours)} | {hours(base)} | {hours(j2k)} |")

    print(f"\n## Training, {a.epochs} epochs, K GPUs\n")
    print(
        f"GPU rate {a.gpu_rate:,.0f} images/s per GPU (assumed, not measured here); loader "
        f"{a.loader_rate:,.0f} images/s per process (measured); random-read disk "
        f"{a.disk_random_mbs:,.0f} MB/s (measured, cache dropped, 16 threads); "
        f"{a.gpus_per_node} GPUs per node\n"
    )
    print(
        "| GPUs | images/s needed | loader headroom per rank | disk MB/s per node "
        "| time per epoch | "
        f"{a.epochs} epochs |"
    )
    print("|---|---|---|---|---|---|")
    for k in (int(x) for x in a.gpus.split(",")):
        need = a.gpu_rate * k
        headroom = a.loader_rate / a.gpu_rate
        mbs = a.gpu_rate * min(k, a.gpus_per_node) * per / 1e6
        epoch = n / need
        flag = "" if mbs <= a.disk_random_mbs else " (> this disk: NVMe or RAM cache)"
        print(
            f"| {k} | {need:,.0f} | {headroom:.1f}x | {mbs:,.0f}{flag} | {hours(epoch)} | "
            f"{hours(epoch * a.epochs)} |"
        )


if __name__ == "__main__":
    main()
