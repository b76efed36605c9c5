"""What `--train-resolution` buys: the same run at a constant 224 px and with low-resolution early epochs.

FD-MobileNet 0.5x on the flower photos (native resolution, 2,934 images, seeded 10 % validation
split), the short-from-scratch recipe, `--in-memory`, evaluation always at 224 px. Runs one after
another in one process, so their timings share the machine's state; results and the machine go to
benchmarks/train_resolution.md.

    python benchmarks/train_resolution.py [--epochs 10] [--schedules 224 160,224@9 128,224@9 160,224@16:17]

A schedule may end in ``:EPOCHS`` to train that many epochs instead (the last default row: about the
wall time of 10 epochs at 224 px). Finished runs in --runs are kept and only re-read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torchvision

from fdmobilenet._utils import machine_info
from fdmobilenet.train import load_recipe, make_config, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FDM_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--model", default="fd_mobilenet_050")
    ap.add_argument("--schedules", nargs="+", default=["224", "160,224@9", "128,224@9", "160,224@16:17"])
    ap.add_argument("--runs", default=str(ROOT / "benchmarks" / "train-resolution-runs"))
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    a = ap.parse_args()
    data = SHARED / "datasets" / "flowers-256" / "train"
    rows = []
    for row in a.schedules:
        sched, _, epochs = row.partition(":")
        out = Path(a.runs) / row.replace(",", "_").replace("@", "at").replace(":", "_ep")
        overrides = {"data": str(data), "val_split": 0.1, "model": a.model, "resolution": 224}
        overrides["epochs"] = int(epochs or a.epochs)
        overrides |= {"in_memory": True, "train_resolution": sched, "out": str(out), "seed": 0}
        cfg = make_config(overrides, make_config(load_recipe(str(ROOT / "recipes" / "short-from-scratch.yaml"))))
        result = train(cfg, resume=(out / "last.state.pt").exists(), recipe="short-from-scratch")
        assert result.exit_code == 0, f"{sched}: exit {result.exit_code}"
        m = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rows.append((sched, m))
        print(f"{row:>15}: best {max(r['val_top1'] for r in m):.2f}%  {sum(r['time_s'] for r in m):.0f} s")

    base_time = sum(r["time_s"] for r in rows[0][1])
    info = machine_info()
    lines = [
        f"# `--train-resolution` on flower photos ({a.model}, evaluation at 224 px)",
        "",
        f"- date: {info['date']}; machine: {info['cores']} CPU cores ({info['cpu']}), no GPU",
        f"- versions: Python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
        "- data: ../shared/datasets/flowers-256/train (2,934 photos, 5 classes), seeded 10 % validation split; "
        "recipe recipes/short-from-scratch.yaml, `--in-memory`, seed 0, one run per schedule",
        "- epoch time includes validation at 224 px; one seed, so differences of a point or two are noise",
        "- command: `python benchmarks/train_resolution.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| `--train-resolution` | epochs | best val top-1 % | last val top-1 % | train + val time (s) | time vs 224 |",
        "|---|---|---|---|---|---|",
    ]
    for sched, m in rows:
        t = sum(r["time_s"] for r in m)
        best, last = max(r["val_top1"] for r in m), m[-1]["val_top1"]
        lines.append(f"| `{sched}` | {len(m)} | {best:.2f} | {last:.2f} | {t:.0f} | {t / base_time:.2f}x |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
