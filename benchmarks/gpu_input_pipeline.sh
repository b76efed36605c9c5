#!/usr/bin/env bash
# Issue 6's GPU measurements in one device call (prepared, not yet run: no GPU was lent so far).
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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

python3 benchmarks/input_pipeline.py --device cuda --copies 80 --batch 512 --batches 12 \
    --workers "$WORKERS" --out "$OUT/input_pipeline_gpu.md"

# the real command, with validation, checkpoints and the 160 -> 224 schedule, on 4,000 replicated photos
DATA=$(mktemp -d)
python3 -c "
import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks')
from input_pipeline import SHARED, replicate
replicate(SHARED / 'datasets/imagenet-sample-50', Path('$DATA'), 80)"
python3 -m fdmobilenet.cli prepare "$DATA" "$DATA.packed" --workers "$WORKERS"
python3 -m fdmobilenet.cli train --data "$DATA.packed" --loader gpu --model fd_mobilenet_050 --epochs 2 \
    --batch-size 512 --workers "$WORKERS" --train-resolution 160,224@2 --out "$DATA.run" 2>&1 | tail -n 8
cp "$DATA.run/metrics.jsonl" "$OUT/train_loader_gpu_metrics.jsonl"
