#!/usr/bin/env bash
# The two measured comparisons quoted in the README (2-core CPU; results in benchmarks/compare-*/).
# Usage: bash benchmarks/compare_runs.sh [flowers|cifar|all|flowers-default]
set -euo pipefail
FDM=${FDM:-.venv/bin/fdmobilenet}
SHARED=$(cd "${FDM_SHARED:-../shared}" && pwd)
OUT=${OUT:-benchmarks}
WHICH=${1:-all}

if [ "$WHICH" = flowers ] || [ "$WHICH" = all ]; then
  # flower photos at native resolution, trained at 224 (the setting of the paper's claim)
  $FDM compare --data "$SHARED/datasets/flowers-256/train" --val-split 0.1 --budgets 12,40 \
    --families fd_mobilenet,mobilenet_v1,shufflenet_v1 --resolution 224 --epochs 10 --seeds 1 \
    --recipe recipes/short-from-scratch.yaml --in-memory --out "$OUT/compare-flowers"
fi

if [ "$WHICH" = flowers-default ]; then
  # issue 11's one-command experiment: `compare` with no recipe or loader flags (recipe auto -> small,
  # batch auto), 20 epochs, 12 MFLOPs, on a seeded 20 % hold-out of flowers-256 (benchmarks/reference/split.py)
  SPLIT=benchmarks/reference/work/split-flowers-256-val-fraction-0.2
  .venv/bin/python benchmarks/reference/split.py "$SHARED/datasets/flowers-256/train" "$SPLIT" --val-fraction 0.2
  $FDM compare --data "$SPLIT" --budgets 12 --families fd_mobilenet,mobilenet_v1 --resolution 224 --epochs 20 \
    --out "$OUT/compare-flowers-default"
fi

if [ "$WHICH" = cifar ] || [ "$WHICH" = all ]; then
  # CIFAR-10 (200 images per class), upsampled from 32 px to 64 px; budgets scaled down to match
  TMP=$(mktemp -d); SUB="$TMP/cifar10-subset"
  for d in "$SHARED"/datasets/cifar10/train/*/; do
    c=$(basename "$d"); mkdir -p "$SUB/$c"
    mapfile -t files < <(find "$d" -name '*.jpg' | sort)
    for f in "${files[@]:0:200}"; do ln -s "$f" "$SUB/$c/"; done
  done
  $FDM compare --data "$SUB" --val-split 0.1 --budgets 2,6 \
    --families fd_mobilenet,mobilenet_v1,shufflenet_v1 --resolution 64 --epochs 10 --seeds 2 \
    --recipe recipes/short-from-scratch.yaml --in-memory --out "$OUT/compare-cifar"
  rm -rf "$TMP"
fi
