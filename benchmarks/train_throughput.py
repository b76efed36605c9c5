"""Training throughput (images/s) of FD-MobileNet 0.25x/0.5x/1x at 224 px and at CIFAR's 32 px.

Measures the optimizer step of ``fdmobilenet train`` (forward, cross-entropy, backward, SGD with
Nesterov momentum) on random tensors, so the number is the model's cost, not the JPEG decoder's.
On a GPU it uses the trainer's GPU settings (bf16 autocast, channels_last). The load average is
recorded with every row because other processes on a shared machine change CPU numbers a lot.

    python benchmarks/train_throughput.py --out benchmarks/train_throughput.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch
import torchvision
from torch import nn

from fdmobilenet import __version__
from fdmobilenet.models import create_model


def measure(name: str, res: int, batch: int, device: torch.device, steps: int, warmup: int = 2) -> float:
    model = create_model(name, num_classes=1000, resolution=res).to(device)
    gpu = device.type == "cuda"
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    x = torch.randn(batch, 3, res, res, device=device)
    if gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to measure")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row (after 2 warm-up steps)")
    p.add_argument("--out", help="write a Markdown results file here")
    a = p.parse_args()
    device = torch.device(a.device)
    threads = a.threads if device.type == "cpu" else [torch.get_num_threads()]
    rows = []
    for res, batch in ((224, 32 if device.type == "cpu" else 256), (32, 128 if device.type == "cpu" else 1024)):
        for name in ("fd_mobilenet_025", "fd_mobilenet_050", "fd_mobilenet_100"):
            for th in threads:
                torch.set_num_threads(th)
                load = os.getloadavg()[0]
                ips = measure(name, res, batch, device, a.steps)
                rows.append((name, res, batch, th, ips, load))
                print(f"{name:<18} {res:>4} px  batch {batch:>4}  threads {th}  {ips:9.1f} img/s  (load {load:.2f})")
    if not a.out:
        return
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [
        "# Training throughput",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {dev}, {os.cpu_count()} CPU cores ({platform.system()} {platform.release()})",
        f"- Versions: fdmobilenet {__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}",
        f"- Command: `python benchmarks/train_throughput.py --device {a.device} --steps {a.steps}`",
        "- What: one SGD step (forward, loss, backward, update) on random tensors, 1000 classes; "
        "data loading excluded. `load` is the 1-minute load average just before the row "
        "(the machine was shared: above the core count, other processes competed for the CPU).",
        "",
        "| model | resolution | batch | threads | img/s | load |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {r} | {b} | {t} | {ips:.1f} | {load:.2f} |" for n, r, b, t, ips, load in rows]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
