#!/usr/bin/env bash
# Which part of the package's old initialisation cost FD-MobileNet 0.25x its accuracy in short runs: the strongest
# simple loop (strong_loop.py) on the Imagenette 15 % hold-out, 10 epochs, 128 px (a third of 224 px's cost),
# once with its own network (PyTorch's init), once with the package's network initialised as the authors did
# (`--base-init authors`), and once per layer group given PyTorch's init instead (`--init GROUP`).
# Rows are appended to results-init-ablation.jsonl; yardstick_report.py renders them into results-yardstick.md.
set -euo pipefail
cd "$(dirname "$0")"
SHARED=${FDM_SHARED:-../../../shared}
python split.py "$SHARED/datasets/imagenette/train" work/split-imagenette-val-fraction-0.15 --val-fraction 0.15 --seed 0
SPLIT=work/split-imagenette-val-fraction-0.15
RUN=(python strong_loop.py --train "$SPLIT/train" --val "$SPLIT/val" --epochs 10 --threads 2 --resolution 128
     --short-side 146 --json results-init-ablation.jsonl)
for seed in ${SEEDS:-0}; do
  "${RUN[@]}" --seed "$seed" --net own
  "${RUN[@]}" --seed "$seed" --net package --base-init authors
  for group in all pw dw fc stem; do
    "${RUN[@]}" --seed "$seed" --net package --base-init authors --init "$group"
  done
  "${RUN[@]}" --seed "$seed" --net own --pct-start 0.3
done
