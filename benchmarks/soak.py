"""Kill-and-resume soak (issue 14): N cycles of a tiny training run, each stopped at a random moment by
SIGKILL or by SIGTERM to the whole process group (as Slurm, docker stop and Kubernetes do), then resumed
to the end. Every cycle must end with weights bit-identical to an uninterrupted run, the same metrics,
and no temporary file left behind.

    PYTHONPATH=src python benchmarks/soak.py --cycles 50 --json benchmarks/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fdmobilenet._utils import atomic_write_bytes, machine_info
from fdmobilenet.weights import read_weights

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FDM_SHARED", REPO.parent / "shared"))
ARGS = [
    "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "4", "--batch-size", "8", "--lr", "0.05",
    "--lr-base-batch", "8", "--val-split", "0.2", "--deterministic", "--seed", "5", "--threads", "1",
    "--checkpoint-every", "2",
]  # fmt: skip


def dataset(dst: Path, per_class: int) -> Path:
    """``dst/<class>/`` with symlinks to ``per_class`` CIFAR-10 training JPEGs per class."""
    src = SHARED / "datasets" / "cifar10" / "train"
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / d.name).mkdir(parents=True)
        for f in sorted(os.listdir(d))[:per_class]:
            (dst / d.name / f).symlink_to(d / f)
    return dst


def train(data: Path, out: Path, workers: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fdmobilenet.cli", "train", "--data", str(data), *ARGS, "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*cmd, "--out", str(out), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGTERM reaches the loader workers too
    )


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = read_weights(a)[0], read_weights(b)[0]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def rows(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["epoch"], r["val_top1"]) for r in map(json.loads, lines)]


def rows_or_none(out: Path) -> list[str]:
    path = out / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def cycle(i: int, rng: random.Random, data: Path, ref: Path, work: Path, window: tuple[float, float]) -> dict:
    """One run interrupted at a random moment of its training (one in five twice), resumed to the end, checked."""
    out = work / f"c{i:03d}"
    workers = rng.choice([0, 2])
    stops = []
    for k in range(1 + (rng.random() < 0.2)):
        proc = train(data, out, workers, *(["--resume"] if k else []))
        t0 = time.perf_counter()
        while not (out / "config.json").exists() and proc.poll() is None:  # setup done (or before: resumed)
            time.sleep(0.005)
        time.sleep(rng.uniform(*window))
        delay = time.perf_counter() - t0
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        err = proc.communicate(timeout=300)[1]
        tb = "Traceback" in err
        stops.append({"signal": sig.name, "after_s": round(delay, 2), "exit": proc.returncode, "traceback": tb,
                      "stderr_tail": err[-1500:] if tb else ""})  # fmt: skip
    proc = train(data, out, workers, "--resume")
    err = proc.communicate(timeout=300)[1]
    temps = [str(p) for p in out.rglob("*.tmp")] + [str(p) for p in out.rglob("*.next")]
    ok = proc.returncode == 0 and same_weights(out / "last.safetensors", ref / "last.safetensors")
    ok = ok and rows(out) == rows(ref) and not temps and not any(s["traceback"] for s in stops)
    result = {"cycle": i, "workers": workers, "stops": stops, "resume_exit": proc.returncode, "temp_files": temps,
              "identical": ok, "stderr_tail": "" if ok else err[-800:]}  # fmt: skip
    if ok:
        shutil.rmtree(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="fdm-soak-") as tmp:
        work = Path(tmp)
        data = dataset(work / "data", per_class=8)  # 64 training images: 8 steps an epoch
        ref = work / "reference"
        t0 = time.perf_counter()
        proc = train(data, ref, 0)
        while not (ref / "config.json").exists() and proc.poll() is None:  # imports and setup done
            time.sleep(0.005)
        started = time.perf_counter()
        epochs = int(ARGS[ARGS.index("--epochs") + 1])
        while proc.poll() is None and len(rows_or_none(ref)) < epochs:  # the last epoch's metrics row
            time.sleep(0.005)
        trained = time.perf_counter() - started
        assert proc.wait() == 0, proc.stderr.read()
        print(f"reference run: {time.perf_counter() - t0:.1f} s, of which training {trained:.1f} s", flush=True)
        results, t0 = [], time.perf_counter()
        for i in range(a.cycles):  # stops land anywhere in the training, from setup done to the last epoch
            r = cycle(i, rng, data, ref, work, (0.0, trained))
            results.append(r)
            stops = ", ".join(f"{s['signal']}@{s['after_s']}s->{s['exit']}" for s in r["stops"])
            verdict = "identical" if r["identical"] else "DIFFERENT"
            print(f"cycle {i + 1:>3}/{a.cycles}: {verdict} ({stops})", flush=True)
            for text in [s["stderr_tail"] for s in r["stops"]] + [r["stderr_tail"]]:
                if text:
                    print(text, flush=True)
        wall = time.perf_counter() - t0
    summary = {
        "cycles": a.cycles,
        "identical": sum(r["identical"] for r in results),
        "interruptions": sum(len(r["stops"]) for r in results),
        "sigkill": sum(s["signal"] == "SIGKILL" for r in results for s in r["stops"]),
        "sigterm": sum(s["signal"] == "SIGTERM" for r in results for s in r["stops"]),
        "stopped_mid_run": sum(s["exit"] != 0 for r in results for s in r["stops"]),  # the others had finished
        "temp_files_left": sum(len(r["temp_files"]) for r in results),
        "wall_s": round(wall, 1),
        "machine": machine_info(),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "machine"}))
    if a.json:
        atomic_write_bytes(a.json, json.dumps({**summary, "results": results}, indent=1).encode())
    sys.exit(0 if summary["identical"] == a.cycles else 1)


if __name__ == "__main__":
    main()
