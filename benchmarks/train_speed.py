"""Does the engine's input keep up with the model? ``fdmobilenet train`` fed from memory (``--in-memory``)
and from image folders (PIL workers), against the model-only step on random tensors -- side by side in one
run, interleaved in rounds so machine drift hits every row alike.

The engine's own ``img_s`` (training steps only, from ``metrics.jsonl``) is compared with a loop that runs
the same optimizer step (SGD Nesterov, label smoothing) on random tensors, at the same batch and threads.

    python benchmarks/train_speed.py --data SPLIT --out benchmarks/train_speed.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import fdmobilenet as fdm
from fdmobilenet._utils import machine_info


def model_only(model_name: str, res: int, batch: int, classes: int, steps: int, channels_last: bool = False) -> float:
    """Images/s of the training step alone (forward, loss, backward, SGD) on random tensors.

    ``channels_last``: the input in the layout the in-memory pipeline hands the model (oneDNN runs it faster).
    """
    model = fdm.create_model(model_name, num_classes=classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
    x, y = torch.randn(batch, 3, res, res), torch.randint(0, classes, (batch,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def engine(data: Path, extra: list[str], model_name: str, res: int, batch: int, out: Path) -> float:
    """Mean training img/s of a 1-epoch ``fdmobilenet train`` run (the engine's own measurement)."""
    cmd = [sys.executable, "-m", "fdmobilenet.cli", "train", "--data", str(data), "--model", model_name]
    cmd += ["--resolution", str(res), "--batch-size", str(batch), "--epochs", "1", "--out", str(out), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["img_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="DIR/train + DIR/val (e.g. a benchmarks/reference split)")
    p.add_argument("--model", default="fd_mobilenet_025")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="timed steps of the model-only loop")
    p.add_argument("--out", type=Path, default=Path("benchmarks/train_speed.md"))
    a = p.parse_args()
    classes = sum(1 for d in (a.data / "train").iterdir() if d.is_dir())
    rows: dict[str, list[float]] = {"model only (random tensors)": [], "model only, channels-last input": [],
                                    "engine --in-memory": [], "engine, folders (PIL, 2 workers)": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            rows["model only (random tensors)"].append(model_only(a.model, a.resolution, a.batch, classes, a.steps))
            cl = model_only(a.model, a.resolution, a.batch, classes, a.steps, channels_last=True)
            rows["model only, channels-last input"].append(cl)
            mem = engine(a.data, ["--in-memory"], a.model, a.resolution, a.batch, Path(tmp) / f"mem{r}")
            rows["engine --in-memory"].append(mem)
            pil = engine(a.data, ["--workers", "2"], a.model, a.resolution, a.batch, Path(tmp) / f"pil{r}")
            rows["engine, folders (PIL, 2 workers)"].append(pil)
            print({k: v[-1] for k, v in rows.items()}, flush=True)
    ref = statistics.median(rows["model only (random tensors)"])
    info = machine_info()
    lines = [
        f"# Training speed: the engine's input against the model ({a.model}, {a.resolution} px, batch {a.batch})",
        "",
        f"- date {info['date']}; {info['cpu']}, {info['cores']} cores; Python {info['python']}, torch {info['torch']}",
        f"- data: `{a.data}` (one epoch per engine run); {a.rounds} interleaved rounds, medians",
        "- command: `python benchmarks/train_speed.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| path | img/s (median) | runs | vs model only |",
        "|---|---:|---|---:|",
    ]
    for name, v in rows.items():
        med = statistics.median(v)
        lines.append(f"| {name} | {med:.0f} | {', '.join(f'{x:.0f}' for x in v)} | {med / ref:.2f} |")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
