#!/usr/bin/env bash
# The main job on built-in real data: profile the family and, when the authors' weights are in
# ../shared, convert them and evaluate/predict on the shared ImageNet photos.
set -euo pipefail
OUT=${1:-demo-out}
SHARED=${2:-../shared}
FDM=".venv/bin/fdmobilenet"
mkdir -p "$OUT"

echo "== The paper's matched budgets (MACs at 224 px)"
$FDM profile fd_mobilenet_100 fd_mobilenet_050 fd_mobilenet_025 mobilenet_v1_050 mobilenet_v1_025 \
  shufflenet_v1_g3_100 shufflenet_v1_g3_050 shufflenet_v1_g3_025

W="$SHARED/weights/official/0.5x-FDMobileNet-224.pth.tar"
DATA="$SHARED/datasets/imagenet-sample-50"
if [ -f "$W" ] && [ -d "$DATA" ]; then
  echo "== The authors' 0.5x weights on 50 ImageNet photos"
  $FDM convert "$W" "$OUT/fd_mobilenet_050.safetensors"
  $FDM eval --weights "$OUT/fd_mobilenet_050.safetensors" --data "$DATA"
  $FDM predict --weights "$OUT/fd_mobilenet_050.safetensors" --topk 3 "$(find "$DATA" -name '*.JPEG' | sort | head -1)"
else
  echo "(skipping the official-weights part: $W or $DATA not found)"
fi
