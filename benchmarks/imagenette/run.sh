#!/usr/bin/env bash
# The headline benchmark: FD-MobileNet vs MobileNet V1 vs ShuffleNet V1 at 12 and 40 MFLOPs on Imagenette
# (9,469 ImageNet training photos of 10 classes, 224x224), trained from scratch at 224 px with the default
# recipe (`compare` with no recipe flags), plus FD-MobileNet fine-tuned from the authors' 0.25x/0.5x weights,
# and the authors' weights as they are (1000-way top-1) on the same held-out photos.
# Imagenette's own val split is not in shared/: a seeded 15 % of train is held out (benchmarks/reference/split.py).
#
# Usage: EPOCHS=5 bash benchmarks/imagenette/run.sh   (about 50 min for 5 epochs on a 2-core CPU)
set -euo pipefail
FDM=${FDM:-.venv/bin/fdmobilenet}
PY=${PY:-.venv/bin/python}
SHARED=$(cd "${FDM_SHARED:-../shared}" && pwd)
EPOCHS=${EPOCHS:-5}
OUT=benchmarks/imagenette
WORK=$OUT/work   # git-ignored: split, converted weights, runs

$PY benchmarks/reference/split.py "$SHARED/datasets/imagenette/train" "$WORK/split" --val-fraction 0.15 --seed 0
mkdir -p "$WORK/weights"
for w in 025 050; do
  src="$SHARED/weights/official/$([ $w = 025 ] && echo 0.25x || echo 0.5x)-FDMobileNet-224.pth.tar"
  [ -f "$WORK/weights/fd_mobilenet_$w.safetensors" ] || $FDM convert "$src" "$WORK/weights/fd_mobilenet_$w.safetensors"
  # the authors' ImageNet weights as they are: 1000-way top-1 on the held-out photos (synset folders)
  $FDM eval --weights "$WORK/weights/fd_mobilenet_$w.safetensors" --data "$WORK/split/val" --json > "$OUT/authors_$w.json"
done

$FDM compare --data "$WORK/split" --budgets 12,40 --families fd_mobilenet,mobilenet_v1,shufflenet_v1 \
  --resolution 224 --epochs "$EPOCHS" --in-memory --pretrained-from "$WORK/weights" --out "$WORK/compare"
cp "$WORK/compare/results.md" "$WORK/compare/results.json" "$WORK/compare/accuracy_vs_mflops.png" "$OUT/"
$PY - "$OUT" "$EPOCHS" <<'PY'
import json, sys
from pathlib import Path
from fdmobilenet._utils import machine_info
out, epochs = Path(sys.argv[1]), sys.argv[2]
info = machine_info()
authors = {w: json.loads((out / f"authors_{w}.json").read_text()) for w in ("025", "050")}
lines = [
    "", "## Run", "",
    f"- date {info['date']}; {info['cpu']}, {info['cores']} cores; Python {info['python']}, torch {info['torch']}",
    f"- `EPOCHS={epochs} bash benchmarks/imagenette/run.sh`: `compare` defaults (recipe auto -> small, batch auto),"
    " `--in-memory` (the photos are 224x224 squares, so the memory cache holds them whole)",
    "- the authors' ImageNet weights as they are, 1000-way top-1 / top-5 on the same held-out photos: "
    + "; ".join(f"{w[0]}.{w[1:]}x {a['top1']:.2f} / {a['top5']:.2f} % ({a['n']} photos)" for w, a in authors.items()),
]
(out / "results.md").write_text((out / "results.md").read_text() + "\n".join(lines) + "\n")
PY
echo "wrote $OUT/results.md, results.json, accuracy_vs_mflops.png"
