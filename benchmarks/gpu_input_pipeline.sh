#!/usr/bin/env bash
# Issue 6's GPU measurements in one device call (prepared, not yet run: no GPU was lent so far):
# a thin wrapper running `benchmarks/train_speed.py pipeline` with GPU settings, then a real training run.
#
#   (c) `train --loader gpu` >= 10k img/s and (d) the same on prepared shards >= 20k img/s, end to end,
#   FD-MobileNet 0.5x at 224 px on one H100, plus a real 2-epoch `train --loader gpu` run.
#
# The device machine receives the checkout, not ../shared; copy the 50 photos in first (5 MB, untracked,
# and a shared/ folder inside the checkout travels):
#   mkdir -p shared/datasets && cp -r ../shared/datasets/imagenet-sample-50 shared/datasets/
# then run:  bash benchmarks/gpu_input_pipeline.sh   (results land in $OUT, default benchmarks/)
set -euo pipefail
export FDM_SHARED=${FDM_SHARED:-$PWD/shared}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-benchmarks}
WORKERS=${WORKERS:-$(nproc)}
DEVICE=${DEVICE:-cuda}       # DEVICE=cpu COPIES=2 BATCH=16 BATCHES=2 EPOCHS=1: a dry run of this script on a CPU
COPIES=${COPIES:-80}         # 80 x 50 = 4,000 ImageNet-sized photos
BATCH=${BATCH:-512}
BATCHES=${BATCHES:-12}
EPOCHS=${EPOCHS:-2}
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PY" benchmarks/train_speed.py pipeline --device "$DEVICE" --copies "$COPIES" --batch "$BATCH" --batches "$BATCHES" \
    --workers "$WORKERS" --out "$OUT/input_pipeline_$DEVICE.md"

# the real command, with validation, checkpoints and the 160 -> 224 schedule, on 4,000 replicated photos
DATA=$(mktemp -d)
"$PY" -c "
import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks')
from train_speed import SHARED, replicate
replicate(SHARED / 'datasets/imagenet-sample-50', Path('$DATA'), $COPIES)"
"$PY" -m fdmobilenet.cli prepare "$DATA" "$DATA.packed" --workers "$WORKERS"
"$PY" -m fdmobilenet.cli train --data "$DATA.packed" --loader gpu --device "$DEVICE" --model fd_mobilenet_050 \
    --epochs "$EPOCHS" --batch-size "$BATCH" --lr-base-batch 256 --workers "$WORKERS" --train-resolution 160,224@2 \
    --out "$DATA.run" 2>&1 | tail -n 8
cp "$DATA.run/metrics.jsonl" "$OUT/train_loader_gpu_metrics_$DEVICE.jsonl"
