#!/usr/bin/env bash
# The two measured comparisons quoted in the README (2-core CPU; see benchmarks/compare-*/results.md).
set -euo pipefail
FDM=${FDM:-.venv/bin/fdmobilenet}
SHARED=${FDM_SHARED:-../shared}
OUT=${OUT:-benchmarks}

# 1) flower photos at native resolution, trained at 224 (the setting of the paper's claim)
$FDM compare --data "$SHARED/datasets/flowers-256/train" --val-split 0.1 --budgets 12,40 \
  --families fd_mobilenet,mobilenet_v1,shufflenet_v1 --resolution 224 --epochs 10 --seeds 1 \
  --recipe recipes/short-from-scratch.yaml --in-memory --out "$OUT/compare-flowers"

# 2) CIFAR-10 (a 5,000-image subset), upsampled from 32 px to 128 px
SUB=$(mktemp -d)
for d in "$SHARED"/datasets/cifar10/train/*/; do
  c=$(basename "$d"); mkdir -p "$SUB/$c"
  ls "$d" | sort | head -500 | while read -r f; do ln -s "$d$f" "$SUB/$c/$f"; done
done
$FDM compare --data "$SUB" --val-split 0.1 --budgets 12,40 \
  --families fd_mobilenet,mobilenet_v1,shufflenet_v1 --resolution 128 --epochs 10 --seeds 1 \
  --recipe recipes/short-from-scratch.yaml --in-memory --out "$OUT/compare-cifar"
