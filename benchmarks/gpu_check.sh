#!/usr/bin/env bash
# GPU training throughput check, for a lent GPU machine (one prepared run, < 10 minutes on an H100).
#
#   bash benchmarks/gpu_check.sh            # from the repository root (or anywhere)
#
# Builds synthetic slice stores on the machine (write_store_arrays, via benchmarks/train_step.py),
# then prints training images/s for ResNet-18 and ResNet-50 at 224 and 128 px on the fast path
# (uint8 batches pinned and scaled on the GPU, channels-last, bf16 autocast), next to the fp32
# figures for ResNet-18 at 224 (our input path, and the paper's naive float32 loader), and
# torch.compile when it compiles in time. 16384 images per store: no epoch boundary (new loader
# workers) falls inside a timed window. Target: >= 12,000 images/s ResNet-18 at 224 on one H100.
# Results also go to $OUT/gpu_check.jsonl (or ./gpu_check.jsonl) and the log to gpu_check.log.
#
# Knobs for a dry run of this script without a GPU (defaults are the real check):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BATCH=2 GPU_CHECK_IMAGES=64 GPU_CHECK_STEPS=1 GPU_CHECK_COMPILE=0
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
BATCH="${GPU_CHECK_BATCH:-256}"
IMAGES="${GPU_CHECK_IMAGES:-16384}"
STEPS="${GPU_CHECK_STEPS:-40}"
WARMUP=$(( STEPS > 3 ? STEPS * 3 / 8 : 1 ))
COMPILE="${GPU_CHECK_COMPILE:-1}"
RESULTS_DIR="${OUT:-$PWD}"
mkdir -p "$RESULTS_DIR"
JSON="$RESULTS_DIR/gpu_check.jsonl"
LOG="$RESULTS_DIR/gpu_check.log"
: >"$JSON"
exec > >(tee "$LOG") 2>&1

# 1. a Python with CUDA torch: the repo's .venv if it has one, else the machine's python3
PY=""
for cand in "${PYTHON:-}" .venv/bin/python python3 python; do
  [ -n "$cand" ] || continue
  if command -v "$cand" >/dev/null 2>&1 &&
    timeout 120 "$cand" -c "import torch, sys; sys.exit(0 if '$DEVICE' == 'cpu' or torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY="$cand"
    break
  fi
done
if [ -z "$PY" ]; then
  echo "gpu_check: no Python with CUDA-enabled torch found" >&2
  exit 2
fi
# 2. hypermodal importable: installed, or from src/ (no network needed)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! timeout 120 "$PY" -c "import torchvision, pandas, pyarrow, hypermodal.train" 2>/dev/null; then
  timeout 300 "$PY" -m pip install -q -e . || true
fi
timeout 120 "$PY" -c "import torchvision, pandas, pyarrow, hypermodal.train" || {
  echo "gpu_check: hypermodal's dependencies (torchvision, pandas, pyarrow) are missing" >&2
  exit 2
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

STORES="$(mktemp -d "${TMPDIR:-/tmp}/hm-gpu-stores.XXXXXX")"
trap 'rm -rf "$STORES"' EXIT
CPUS="$(nproc)"
WORKERS=$(( CPUS > 9 ? 8 : (CPUS > 2 ? CPUS - 1 : 1) ))
BENCH=("$PY" benchmarks/train_step.py --device "$DEVICE" --batch "$BATCH" --images "$IMAGES" --workers "$WORKERS"
  --store-dir "$STORES" --json "$JSON")

echo
echo "== fast path: uint8 -> GPU, bf16 autocast, channels-last (eager)"
timeout 300 "${BENCH[@]}" --paths ours --amp bf16 --channels-last \
  --models resnet18 resnet50 --sizes 224 128 --steps "$STEPS" --warmup "$WARMUP" ||
  echo "gpu_check: fast-path run failed or timed out (rc $?)"

echo
echo "== fp32 side by side, ResNet-18 at 224: the paper's naive loader vs our uint8 path"
timeout 180 "${BENCH[@]}" --paths naive ours --models resnet18 --sizes 224 --steps "$STEPS" --warmup "$WARMUP" ||
  echo "gpu_check: fp32 run failed or timed out (rc $?)"

echo
echo "== torch.compile (bf16, channels-last), ResNet-18 at 224 and 128"
if [ "$COMPILE" = 1 ]; then
  timeout 240 "${BENCH[@]}" --paths ours --amp bf16 --channels-last --compile \
    --models resnet18 --sizes 224 128 --steps "$STEPS" --warmup "$WARMUP" ||
    echo "gpu_check: torch.compile run failed or timed out (rc $?); eager figures above stand"
fi

echo
echo "== the real loop: hypermodal train, ResNet-18 at 224, batch $BATCH, amp auto, 2 epochs of $IMAGES"
if [ -f "$STORES/store-224-$IMAGES/store.json" ]; then
  timeout 240 "$PY" -m hypermodal.cli train "$STORES/store-224-$IMAGES" --out "$STORES/run" \
    --epochs 2 --batch-size "$BATCH" --workers "$WORKERS" --device "$DEVICE" --no-progress >"$STORES/train.json" &&
    "$PY" - "$STORES/run/history.csv" <<'PYEOF' || echo "gpu_check: train() run failed or timed out"
import sys
import pandas as pd
h = pd.read_csv(sys.argv[1])
for _, r in h.iterrows():
    print(f"epoch {int(r.epoch)}: {r.images_per_s:9.0f} images/s (train loop, incl. loader), "
          f"train {r.train_seconds:.1f}s, loss {r.train_loss:.4f}")
PYEOF
else
  echo "gpu_check: no 224 store was built; skipping the train() run"
fi

echo
echo "== summary (images/s)"
"$PY" - "$JSON" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"{'model':9s} {'size':>4s} {'path':5s} {'amp':9s} {'ch-last':7s} {'compile':7s} {'images/s':>9s}")
for r in rows:
    print(f"{r['model']:9s} {r['size']:4d} {r['path']:5s} {r['amp']:9s} {str(r['channels_last']):7s} "
          f"{str(r['compile']):7s} {r['images_per_s']:9.0f}")
best = max((r["images_per_s"] for r in rows if r["model"] == "resnet18" and r["size"] == 224
            and r["path"] == "ours"), default=0.0)
print(f"ResNet-18 @224 best: {best:.0f} images/s (target >= 12000 on one H100):",
      "MET" if best >= 12000 else "NOT MET")
PYEOF
