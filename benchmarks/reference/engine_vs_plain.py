"""The engine (``fdmobilenet train``) against the plain loop, side by side: same split, same model,
same epochs, several seeds, one after the other on one machine. Rows go to ``--results`` (JSON lines,
appended; a finished (case, runner, seed) is skipped on a re-run), and ``--report`` renders them.

    python benchmarks/reference/engine_vs_plain.py --case cifar2k --seeds 0 1 2
    python benchmarks/reference/engine_vs_plain.py --report benchmarks/reference/results.md

Cases (splits are made by ``split.py`` under ``--work``; see CASES):
  cifar2k    2,000 CIFAR-10 training images (200 a class), 1,000 others held out; FD 0.25x at 64 px, 5 epochs
  flowers    flowers-256, 20 % held out; FD 0.25x at 224 px, 20 epochs, defaults / --in-memory / README recipe
  finetune   flowers, the authors' 0.5x weights, 5 epochs (the README's fine-tuning command)
  speed224   flowers, FD 0.25x at 224 px, 3 epochs: training img/s of the two loops side by side
  imagenette-fd-long   imagenette-fd with --recipe long (TrivialAugment, random erasing 0.25)
  imagenette-fd-kd   imagenette-fd distilled from the authors' 0.5x ImageNet weights (their 10 matching rows)
  imagenette-fd / -mb / -sh   Imagenette (shared train), seeded 15 % hold-out (1,420 photos), 224 px, 10 epochs,
             12 MFLOPs: FD-MobileNet 0.25x / MobileNet V1 0.125x / ShuffleNet V1 g=3 0.225x, the widths
             `compare --budgets 12` solves; the engine with no recipe flags is what the default `compare` runs
  yard224-fd / -mb / -sh   the same split and networks against the strongest simple loop (``strong_loop.py``,
             runner ``strong``; its own FD-MobileNet / MobileNet V1 with PyTorch's default initialisation, the
             package's ShuffleNet V1), 224 px, 10 epochs
  yard128-fd / -mb / -sh   the same at 128 px (photos resized to 146 px on the shorter side, as the engine's
             eval crop): a third of the cost, for 3 seeds of every family
  yard128-fd-engine-ablation   engine runs with one setting changed (EMA off, no warm-up, weight decay on BN
             and biases, no in-memory cache)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fdmobilenet._utils import machine_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("FDM_SHARED", REPO.parent / "shared"))
FDM = [sys.executable, "-m", "fdmobilenet.cli"]

# case -> (split source and options, {runner: arguments}); {split} and {work} are filled in.
CASES: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "cifar2k": (
        ["datasets/cifar10/train", "--per-class", "200", "--val-per-class", "100"],
        {
            "plain": ["--model", "fd_mobilenet_025", "--resolution", "64", "--short-side", "64", "--epochs", "5"],
            "engine (defaults)": ["--model", "fd_mobilenet_025", "--resolution", "64", "--epochs", "5"],
        },
    ),
    "flowers": (
        ["datasets/flowers-256/train", "--val-fraction", "0.2"],
        {
            "plain": ["--model", "fd_mobilenet_025", "--epochs", "20"],
            "engine (defaults)": ["--model", "fd_mobilenet_025", "--epochs", "20", "--workers", "2"],
            "engine --in-memory": ["--model", "fd_mobilenet_025", "--epochs", "20", "--in-memory"],
        },
    ),
    "finetune": (
        ["datasets/flowers-256/train", "--val-fraction", "0.2"],
        {
            "plain": ["--model", "fd_mobilenet_050", "--pretrained", "{work}/fd_mobilenet_050.safetensors",
                      "--lr", "0.02", "--epochs", "5"],
            # the README's command; --lr 0.01 and 2 workers are what it defaults to on a 2-core machine
            "engine (README)": ["--pretrained", "{work}/fd_mobilenet_050.safetensors", "--model", "fd_mobilenet_050",
                                "--epochs", "5", "--lr", "0.01", "--workers", "2"],
        },
    ),
}  # fmt: skip
CASES["speed224"] = (
    ["datasets/flowers-256/train", "--val-fraction", "0.2"],
    {r: ["--model", "fd_mobilenet_025", "--epochs", "3"] for r in ("plain", "engine (defaults)")},
)
for _tag, _model, _width in (("fd", "fd_mobilenet", "0.25"), ("mb", "mobilenet_v1", "0.125"),
                             ("sh", "shufflenet_v1", "0.225")):  # fmt: skip
    _net = ["--model", _model, "--width", _width, "--resolution", "224", "--epochs", "10"]
    CASES[f"imagenette-{_tag}"] = (
        ["datasets/imagenette/train", "--val-fraction", "0.15"],
        {"plain": _net, "engine (defaults)": _net},
    )
# distillation: the same FD-MobileNet 0.25x run taught by the authors' 0.5x ImageNet model (its 10 rows)
CASES["imagenette-fd-long"] = (
    ["datasets/imagenette/train", "--val-fraction", "0.15"],
    {"engine --recipe long": [*CASES["imagenette-fd"][1]["plain"], "--recipe", "long"]},
)
CASES["imagenette-fd-kd"] = (
    ["datasets/imagenette/train", "--val-fraction", "0.15"],
    {"engine --teacher authors-0.5x": [*CASES["imagenette-fd"][1]["plain"], "--teacher",
                                       "{work}/fd_mobilenet_050.safetensors"]},
)  # fmt: skip


_WIDTHS = (("fd", "fd_mobilenet", "0.25"), ("mb", "mobilenet_v1", "0.125"), ("sh", "shufflenet_v1", "0.225"))
for _res in (224, 128):
    for _tag, _model, _width in _WIDTHS:
        _short = ["--short-side", "146"] if _res == 128 else []
        _strong = ["--family", _model, "--width", _width, "--resolution", str(_res), "--epochs", "10", *_short,
                   *(["--net", "package"] if _tag == "sh" else [])]  # fmt: skip
        CASES[f"yard{_res}-{_tag}"] = (
            ["datasets/imagenette/train", "--val-fraction", "0.15"],
            {"strong": _strong,
             "engine (defaults)": ["--model", _model, "--width", _width, "--resolution", str(_res), "--epochs", "10"]},
        )  # fmt: skip
_FD128 = CASES["yard128-fd"][1]["engine (defaults)"]
CASES["yard128-fd-engine-ablation"] = (
    ["datasets/imagenette/train", "--val-fraction", "0.15"],
    {"engine --ema-decay 0": [*_FD128, "--ema-decay", "0"],
     "engine --warmup-epochs 0": [*_FD128, "--warmup-epochs", "0"],
     "engine --wd-bn-bias": [*_FD128, "--wd-bn-bias"],
     "engine --no-in-memory": [*_FD128, "--no-in-memory", "--workers", "1"]},
)  # fmt: skip


def prepare(case: str, work: Path) -> Path:
    src, opts = CASES[case][0][0], CASES[case][0][1:]
    split = work / f"split-{Path(src).parent.name}-{'-'.join(opts).replace('--', '')}"
    subprocess.run([sys.executable, str(HERE / "split.py"), str(SHARED / src), str(split), *opts], check=True)
    weights = work / "fd_mobilenet_050.safetensors"
    if any("fd_mobilenet_050.safetensors" in a for r in CASES[case][1].values() for a in r) and not weights.is_file():
        src_w = SHARED / "weights/official/0.5x-FDMobileNet-224.pth.tar"
        subprocess.run([*FDM, "convert", str(src_w), str(weights)], check=True)
    return split


def run_one(case: str, runner: str, seed: int, split: Path, work: Path) -> dict:
    args = [a.format(work=work, split=split) for a in CASES[case][1][runner]]
    t0 = time.perf_counter()
    if runner in ("plain", "strong"):
        out = work / f"{runner}-{case}-{seed}.json"
        out.unlink(missing_ok=True)  # strong_loop.py appends
        script = {"plain": "plain_loop.py", "strong": "strong_loop.py"}[runner]
        cmd = [sys.executable, str(HERE / script), "--train", str(split / "train"), "--val"]
        subprocess.run([*cmd, str(split / "val"), *args, "--seed", str(seed), "--json", str(out)], check=True)
        r = json.loads(out.read_text().splitlines()[-1])
        return {"top1": r["val_top1"], "img_s": r["img_s"], "wall_s": round(time.perf_counter() - t0, 1)}
    out = work / "runs" / f"{case}-{'-'.join(runner.split()[1:]).strip('()-').replace(',', '')}-{seed}"
    cmd = [*FDM, "train", "--data", str(split), *args, "--seed", str(seed), "--out", str(out)]
    subprocess.run([*cmd, "--resume"], check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "top1": rows[-1]["val_top1"],  # the last epoch, as the plain loop reports
        "best_top1": max(r["val_top1"] for r in rows),
        "img_s": round(statistics.mean(r["img_s"] for r in rows), 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "recipe": json.loads((out / "config.json").read_text())["recipe"],
    }


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = ["| case | runner | seeds | val top-1 % (last epoch) mean ± sd | best epoch | train img/s | wall s |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for case in dict.fromkeys(r["case"] for r in rows):
        for runner in dict.fromkeys(r["runner"] for r in rows if r["case"] == case):
            rs = [r for r in rows if r["case"] == case and r["runner"] == runner]
            top = [r["top1"] for r in rs]
            spread = f" ± {statistics.stdev(top):.2f}" if len(top) > 1 else " (1 seed)"
            best = statistics.mean(r.get("best_top1", r["top1"]) for r in rs)
            lines.append(
                f"| {case} | {runner} | {len(rs)} | {statistics.mean(top):.2f}{spread} | {best:.2f} | "
                f"{statistics.mean(r['img_s'] for r in rs):.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=list(CASES))
    p.add_argument("--runners", nargs="*", help="subset of the case's runners (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "reference" / "work")
    p.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    p.add_argument("--report", type=Path, help="write the markdown report of --results to this file")
    a = p.parse_args()
    if a.report:
        info = machine_info()
        head = [
            "# The engine against a plain PyTorch loop", "",
            f"- written {info['date']}; {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
            f"torch {info['torch']}; runs one after another, runners alternating per seed",
            "- `python benchmarks/reference/engine_vs_plain.py --case CASE --seeds ...` (cases in its docstring); "
            "val top-1 of the last epoch (as the plain loop reports), and the engine's best epoch",
            "",
            "",
        ]  # fmt: skip
        a.report.write_text("\n".join(head) + report(a.results) + "\n")
        print(a.report.read_text())
        return
    a.work.mkdir(parents=True, exist_ok=True)
    split = prepare(a.case, a.work)
    done = set()
    if a.results.is_file():
        done = {(r["case"], r["runner"], r["seed"]) for r in map(json.loads, a.results.read_text().splitlines())}
    for seed in a.seeds:  # seed-major: the runners alternate, so machine drift hits them alike
        for runner in a.runners or CASES[a.case][1]:
            if (a.case, runner, seed) in done:
                continue
            row = {"case": a.case, "runner": runner, "seed": seed, **run_one(a.case, runner, seed, split, a.work)}
            with open(a.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
