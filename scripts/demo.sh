#!/usr/bin/env bash
# The main job on built-in real data: train on scikit-learn's handwritten digits (about a minute on a
# 2-core CPU) and use the result with eval and predict; profile the family; and, when the authors'
# weights are in ../shared, convert them and evaluate/predict on the shared ImageNet photos.
set -euo pipefail
OUT=${1:-demo-out}
SHARED=${2:-../shared}
FDM=${FDM:-.venv/bin/fdmobilenet}
mkdir -p "$OUT"

echo "== Training FD-MobileNet 0.5x on the built-in digits (1,797 real 8x8 scans, upsampled to 32 px)"
# --resume: a second `make demo` reuses the finished run (or finishes an interrupted one).
$FDM train --out "$OUT/digits" --resume
echo "== The trained weights on the exported validation images, and a few predictions"
$FDM eval --weights "$OUT/digits/best.safetensors" --data "$OUT/digits/digits-val"
$FDM predict --weights "$OUT/digits/best.safetensors" --topk 2 \
  "$(ls "$OUT"/digits/digits-val/3/*.png | head -1)" "$(ls "$OUT"/digits/digits-val/8/*.png | head -1)"

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
  echo "(skipping the authors' weights on ImageNet photos: $W or $DATA not found. The weights come from the"
  echo " authors' repository at a pinned commit: python -c 'import fdmobilenet as f; f.create_model(\"fd_mobilenet_050\", pretrained=True)'"
  echo " downloads, checks and converts them once; offline, see docs/model-card.md, or set FDM_SHARED=DIR)"
fi
