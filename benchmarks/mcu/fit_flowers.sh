#!/usr/bin/env bash
# Issue 22's target: `fit --data` on flower photos for an Ethos-U55-128 with 256 KiB of SRAM trains the two
# leading candidates, quantizes the winner to INT8 and scores fp32 and INT8 on the seeded hold-out
# (benchmarks/mcu/fit_flowers.md: the report's numbers). One thread: about 12 min on a 2-core CPU.
# Usage: bash benchmarks/mcu/fit_flowers.sh   (OUT=folder for the runs, default benchmarks/mcu/work/fit-flowers)
set -euo pipefail
PY=${PY:-.venv/bin/python}
SHARED=$(cd "${FDM_SHARED:-../shared}" && pwd)
OUT=${OUT:-benchmarks/mcu/work/fit-flowers}
export OMP_NUM_THREADS=1
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} $PY -m fdmobilenet.cli fit --target ethos-u55-128 --max-sram 256KiB \
  --data "$SHARED/datasets/flowers-256/train" --epochs 8 --train-top 2 --threads 1 --out "$OUT"
