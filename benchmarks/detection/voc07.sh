#!/usr/bin/env bash
# The paper's detection protocol for users who own PASCAL VOC 2007: train on VOC 2007 trainval, score
# mAP@0.5 (11-point, the paper's metric, and all-point) on VOC 2007 test, FD-MobileNet against MobileNet V1
# at the same backbone budget, every backbone from classification weights you give.
#
#   benchmarks/detection/voc07.sh VOCDEVKIT [OUT]
#
# VOCDEVKIT holds VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}. The checkpoint is
# picked on a seeded 5 % of trainval (test never picks it). Settings (environment):
#   BACKBONES  "model=weights ..." pairs; default: the authors' 0.5x and 0.25x FD-MobileNet
#              (../shared/weights/official); add e.g. "ssdlite_mobilenet_v1:0.125=mb.safetensors" for a
#              bare family at a width (MobileNet V1 at 12 MFLOPs has no released ImageNet weights: pretrain it
#              with `fdmobilenet train` on ImageNet the same way as the FD-MobileNet you compare it with)
#   EPOCHS (default 120), RESOLUTION (320), SEED (0), PYTHON (python3), and any extra `train` flags in TRAIN_ARGS
# Results: OUT/<model>/ (the run) and OUT/results.jsonl (one line per model: eval --json on VOC 2007 test).
set -euo pipefail
DEVKIT=${1:?usage: voc07.sh VOCDEVKIT [OUT]}
OUT=${2:-runs/voc07}
PY=${PYTHON:-python3}
SHARED=${FDM_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/../shared}
BACKBONES=${BACKBONES:-"fd_mobilenet_050=$SHARED/weights/official/0.5x-FDMobileNet-224.pth.tar fd_mobilenet_025=$SHARED/weights/official/0.25x-FDMobileNet-224.pth.tar"}
VOC="$DEVKIT/VOC2007"
for need in JPEGImages Annotations ImageSets/Main/trainval.txt ImageSets/Main/test.txt; do
  [ -e "$VOC/$need" ] || { echo "voc07.sh: $VOC/$need is missing (expected VOCdevkit/VOC2007 with trainval and test)" >&2; exit 2; }
done
mkdir -p "$OUT"
# a view of VOC2007 whose lists are trainval and test only, so training uses all of trainval (with a seeded
# hold-out to pick the checkpoint) rather than train/val; the photos and annotations are linked, not copied
VIEW="$OUT/VOC2007-trainval-test"
if [ ! -d "$VIEW" ]; then
  mkdir -p "$VIEW/ImageSets/Main"
  ln -s "$(cd "$VOC" && pwd)/JPEGImages" "$VIEW/JPEGImages"
  ln -s "$(cd "$VOC" && pwd)/Annotations" "$VIEW/Annotations"
  cp "$VOC/ImageSets/Main/trainval.txt" "$VOC/ImageSets/Main/test.txt" "$VIEW/ImageSets/Main/"
fi
for pair in $BACKBONES; do
  spec=${pair%%=*}; weights=${pair#*=}
  model=${spec%%:*}; width=""
  [ "$spec" != "$model" ] && width="--width ${spec#*:}"
  run="$OUT/${spec/:/-w}"
  resume=""
  [ -f "$run/last.state.pt" ] && resume="--resume"
  # shellcheck disable=SC2086
  $PY -m fdmobilenet.cli train --data "$VIEW" --model "$model" $width --pretrained "$weights" \
    --epochs "${EPOCHS:-120}" --resolution "${RESOLUTION:-320}" --val-split 0.05 --seed "${SEED:-0}" \
    --out "$run" $resume ${TRAIN_ARGS:-}
  $PY -m fdmobilenet.cli eval --weights "$run/best.safetensors" --data "$VIEW" --json | tail -n 1 >> "$OUT/results.jsonl"
done
echo "VOC 2007 test results: $OUT/results.jsonl"
