"""Issue 20's headline check: on Imagenette at 12 MFLOPs, the engine's defaults (what `compare` runs) beside
the plain loop, for FD-MobileNet, MobileNet V1 and ShuffleNet V1, with paired-bootstrap verdicts.

Reads the rows ``engine_vs_plain.py --case imagenette-{fd,mb,sh}`` wrote (``--results``), plus plain-loop
result files written by ``plain_loop.py --json`` with the same arguments (``--plain``, named
``plain-MODEL-WIDTH-SEED.json``), and writes one results JSON-lines file and a Markdown report. Engine runs
without ``val_predictions.csv`` (trained before that file existed) get it computed from their
``best.safetensors`` on the same validation photos, so every engine run enters the verdicts.

    python benchmarks/reference/imagenette_report.py --engine engine.jsonl --plain DIR --work WORK \
        --out benchmarks/reference/results-imagenette
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fdmobilenet._utils import machine_info
from fdmobilenet.classreport import write_predictions
from fdmobilenet.evaluate import evaluate, open_eval_data
from fdmobilenet.models import build_from_weights
from fdmobilenet.preprocess import Preprocess
from fdmobilenet.train.verdicts import PREDICTIONS, pair_verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_vs_plain import report  # noqa: E402

FAMILIES = {
    "fd": ("FD-MobileNet 0.25x", "fd_mobilenet_025", ""),
    "mb": ("MobileNet V1 0.125x", "mobilenet_v1", "0.125"),
    "sh": ("ShuffleNet V1 g=3 0.225x", "shufflenet_v1", "0.225"),
}
SPLIT = "split-imagenette-val-fraction-0.15"


def run_dir(work: Path, tag: str, seed: int) -> Path:
    return work / "runs" / f"imagenette-{tag}-defaults-{seed}"


def ensure_predictions(run: Path, val: Path) -> None:
    """``val_predictions.csv`` of the run's best weights on its validation photos (computed if missing)."""
    if (run / PREDICTIONS).is_file():
        return
    model, meta = build_from_weights(run / "best.safetensors")
    folder = open_eval_data(val, meta.get("class_names"))
    tf = Preprocess.from_meta(meta).transform()
    torch.manual_seed(0)
    r = evaluate(model, folder, tf, batch_size=128, keep_preds=True)
    write_predictions(run / PREDICTIONS, r.index, r.targets, r.preds)
    print(f"{run.name}: top-1 {r.top1:.2f} from best.safetensors ({r.n} photos)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", type=Path, required=True, help="engine_vs_plain.py --results file")
    p.add_argument("--plain", type=Path, required=True, help="folder of plain-MODEL-WIDTH-SEED.json")
    p.add_argument("--work", type=Path, required=True, help="engine_vs_plain.py --work folder")
    p.add_argument("--out", type=Path, required=True, help="writes OUT.jsonl and OUT.md")
    a = p.parse_args()
    rows = [json.loads(line) for line in a.engine.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["case"].startswith("imagenette-")]
    for tag, (_, model, width) in FAMILIES.items():
        for f in sorted(a.plain.glob(f"plain-{model}-{width}-*.json")):
            r = json.loads(f.read_text())
            rows.append({"case": f"imagenette-{tag}", "runner": "plain", "seed": r["seed"], "top1": r["val_top1"],
                         "img_s": r["img_s"], "wall_s": r["wall_s"]})  # fmt: skip
    rows.sort(key=lambda r: (list(FAMILIES).index(r["case"].split("-")[1]), r["case"], r["runner"] != "plain",
                             r["runner"], r["seed"]))  # fmt: skip
    a.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    runs: dict[str, dict[int, Path]] = {}
    for r in rows:
        tag = r["case"].split("-", 1)[1]
        if r["runner"] == "engine (defaults)" and tag in FAMILIES:
            run = run_dir(a.work, tag, r["seed"])
            ensure_predictions(run, a.work / SPLIT / "val")
            runs.setdefault(tag, {})[r["seed"]] = run
    lines = [
        "| budget | A | B | A − B (points) | 95 % interval | verdict | photos | seeds |",
        "|---|---|---|---:|---|---|---:|---:|",
    ]
    for x, y in (("fd", "mb"), ("fd", "sh"), ("mb", "sh")):
        if x in runs and y in runs:
            v = pair_verdict(12, FAMILIES[x][0], FAMILIES[y][0], runs[x], runs[y])
            interval = f"[{v['lo']:+.2f}, {v['hi']:+.2f}]" if v["lo"] is not None else "—"
            diff = f"{v['diff']:+.2f}" if v["diff"] is not None else "—"
            lines.append(f"| 12 | {v['a']} | {v['b']} | {diff} | {interval} | {v['verdict']} | {v['photos']} | "
                         f"{v['seeds']} |")  # fmt: skip
    info = machine_info()
    head = [
        "# Imagenette at 12 MFLOPs: the engine's defaults beside the plain loop", "",
        f"- written {info['date']}; {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"torch {info['torch']}",
        "- Imagenette (`../shared/datasets/imagenette/train`, 9,469 ImageNet photos of 10 classes), a seeded 15 % "
        "hold-out (`split.py --val-fraction 0.15 --seed 0`: 8,049 train / 1,420 val photos), 224 px, 10 epochs, "
        "from scratch; widths of `compare --budgets 12`",
        "- plain: `plain_loop.py` (torchvision RandomResizedCrop(224, scale 0.36-1) + flip, SGD Nesterov, batch 64, "
        "lr 0.1 one-cycle, label smoothing 0.1, wd 4e-5, a 10-way head, photos decoded into memory once); "
        "engine: `fdmobilenet train --data SPLIT --model FAMILY --width W --resolution 224 --epochs 10` with "
        "no recipe flags, which is what the default `compare` runs",
        "- val top-1 of the last epoch (as the plain loop reports) and the engine's best epoch; img/s are not "
        "comparable between rows here (runs shared the CPU with other work): the side-by-side speed is in "
        "`results-speed.md`",
        "", "",
    ]  # fmt: skip
    verdicts = ["", "", "## Verdicts (engine runs, paired bootstrap over validation photos and seeds)", "", *lines]
    a.out.with_suffix(".md").write_text(
        "\n".join(head) + report(a.out.with_suffix(".jsonl")) + "\n".join(verdicts) + "\n"
    )
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
