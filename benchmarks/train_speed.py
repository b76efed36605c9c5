"""Training speed, one script, three cases (each writes a Markdown results file):

``engine``   Does the engine's input keep up with the model? ``fdmobilenet train`` fed from memory
             (``--in-memory``) and from image folders (PIL workers), against the model-only step on random
             tensors, interleaved in rounds so machine drift hits every row alike. The engine's own ``img_s``
             (training steps only, from ``metrics.jsonl``) is compared with a loop running the same optimizer
             step (SGD Nesterov, label smoothing) at the same batch and threads. (Formerly ``train_speed.py``.)
``model``    The model's cost alone: img/s of one training step (forward, cross-entropy, backward, SGD
             Nesterov) of FD-MobileNet 0.25x/0.5x/1x on random tensors at 224 px and CIFAR's 32 px, per CPU
             thread count; on a GPU with the trainer's settings (bf16 autocast, channels_last). The load
             average is recorded with every row (a shared machine changes CPU numbers a lot).
             (Formerly ``train_throughput.py``.)
``pipeline`` Input pipelines side by side, each as loader-only and end-to-end train-step img/s:
             (a) model only, random tensors already on the device; (b) regular loader: PIL decode +
             torchvision RandomResizedCrop/flip per image, DataLoader workers; (c) ``train --loader gpu``:
             bytes from workers, batch decode_jpeg on the device, one roi_align crop, run one batch ahead by
             a prefetch thread on its own CUDA stream (also without prefetch); (d) the same on
             ``fdmobilenet prepare`` shards; (e) ``--in-memory``: the decoded uint8 cache on the device,
             batched augmentation. ``--data photos``: ../shared/datasets/imagenet-sample-50 replicated
             (ImageNet-sized photos); ``--data cifar``: a CIFAR-10 subset (32 px JPEGs).
             (Formerly ``input_pipeline.py``; ``gpu_input_pipeline.sh`` runs it with GPU settings.)

    python benchmarks/train_speed.py engine --data SPLIT --out benchmarks/train_speed.md
    python benchmarks/train_speed.py model --device cpu --steps 5 --out benchmarks/train_throughput.md
    python benchmarks/train_speed.py pipeline [--data photos|cifar] [--model NAME] [--resolution R] \
        [--copies 20] [--batch 64] [--batches 8] [--device cpu|cuda] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

import fdmobilenet as fdm
from fdmobilenet import __version__
from fdmobilenet._utils import machine_info
from fdmobilenet.data.augment import BatchAugment
from fdmobilenet.data.batchloader import BatchDecodeLoader, Prefetcher
from fdmobilenet.data.folders import scan_folder
from fdmobilenet.data.images import ImageDataset, collate_skip_bad
from fdmobilenet.data.memcache import cache_size, load_or_build
from fdmobilenet.data.packed import PackedFolder, prepare

SHARED = Path(os.environ.get("FDM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def model_only(
    name: str,
    res: int,
    batch: int,
    classes: int,
    steps: int,
    device: torch.device | None = None,
    channels_last: bool = False,
    label_smoothing: float = 0.1,
    warmup: int = 2,
) -> float:
    """Images/s of the training step alone (forward, loss, backward, SGD Nesterov) on random tensors.

    ``channels_last``: the input in the layout the in-memory pipeline hands the model (oneDNN runs it
    faster). On a GPU the trainer's settings apply: channels_last model and input, bf16 autocast.
    """
    device = device or torch.device("cpu")
    gpu = device.type == "cuda"
    model = fdm.create_model(name, num_classes=classes, resolution=res).to(device).train()
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
    x = torch.randn(batch, 3, res, res, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    if channels_last or gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

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
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


# --- engine: fdmobilenet train against the model-only step -------------------------------------------


def engine_run(data: Path, extra: list[str], model_name: str, res: int, batch: int, out: Path) -> float:
    """Mean training img/s of a 1-epoch ``fdmobilenet train`` run (the engine's own measurement)."""
    cmd = [sys.executable, "-m", "fdmobilenet.cli", "train", "--data", str(data), "--model", model_name]
    cmd += ["--resolution", str(res), "--batch-size", str(batch), "--epochs", "1", "--out", str(out), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["img_s"]


def case_engine(a: argparse.Namespace) -> None:
    classes = sum(1 for d in (a.data / "train").iterdir() if d.is_dir())
    rows: dict[str, list[float]] = {"model only (random tensors)": [], "model only, channels-last input": [],
                                    "engine --in-memory": [], "engine, folders (PIL, 2 workers)": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            rows["model only (random tensors)"].append(model_only(a.model, a.resolution, a.batch, classes, a.steps))
            cl = model_only(a.model, a.resolution, a.batch, classes, a.steps, channels_last=True)
            rows["model only, channels-last input"].append(cl)
            mem = engine_run(a.data, ["--in-memory"], a.model, a.resolution, a.batch, Path(tmp) / f"mem{r}")
            rows["engine --in-memory"].append(mem)
            pil = engine_run(a.data, ["--workers", "2"], a.model, a.resolution, a.batch, Path(tmp) / f"pil{r}")
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


# --- model: the training step per model, resolution and thread count ---------------------------------


def case_model(a: argparse.Namespace) -> None:
    device = torch.device(a.device)
    threads = a.threads if device.type == "cpu" else [torch.get_num_threads()]
    rows = []
    for res, batch in ((224, 32 if device.type == "cpu" else 256), (32, 128 if device.type == "cpu" else 1024)):
        for name in ("fd_mobilenet_025", "fd_mobilenet_050", "fd_mobilenet_100"):
            for th in threads:
                torch.set_num_threads(th)
                load = os.getloadavg()[0]
                ips = model_only(name, res, batch, 1000, a.steps, device, label_smoothing=0.0)
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
        f"- Command: `python benchmarks/train_speed.py model --device {a.device} --steps {a.steps}`",
        "- What: one SGD step (forward, loss, backward, update) on random tensors, 1000 classes; "
        "data loading excluded. `load` is the 1-minute load average just before the row "
        "(the machine was shared: above the core count, other processes competed for the CPU).",
        "",
        "| model | resolution | batch | threads | img/s | load |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {r} | {b} | {t} | {ips:.1f} | {load:.2f} |" for n, r, b, t, ips, load in rows]
    Path(a.out).write_text("\n".join(lines) + "\n")


# --- pipeline: loaders side by side -------------------------------------------------------------------


def replicate(src: Path, dst: Path, copies: int) -> Path:
    for p in sorted(src.rglob("*.JPEG")):
        d = dst / p.parent.name
        d.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            target = d / f"{p.stem}_{c}.JPEG"
            if not target.exists():
                os.link(p, target) if p.stat().st_dev == dst.stat().st_dev else shutil.copy(p, target)
    return dst


def timed(batches, n_batches: int, step=None) -> float:
    """img/s over ``n_batches`` after one warm-up batch."""
    it = iter(batches)
    x, y = next(it)[:2]
    if step:
        step(x, y)
    seen, t0 = 0, time.perf_counter()
    for _ in range(n_batches):
        x, y = next(it)[:2]
        if step:
            step(x, y)
        seen += x.shape[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def case_pipeline(a: argparse.Namespace) -> None:
    dev = torch.device(a.device)
    res = a.resolution
    model = fdm.create_model(a.model).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    def step(x, y):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.data == "photos":
            folder_dir = replicate(SHARED / "datasets/imagenet-sample-50", Path(tmp) / "photos", a.copies)
        else:
            folder_dir = Path(tmp) / "cifar"
            for d in sorted((SHARED / "datasets/cifar10/train").iterdir()):
                (folder_dir / d.name).mkdir(parents=True)
                for p in sorted(d.glob("*.jpg"))[: a.per_class]:
                    os.symlink(p, folder_dir / d.name / p.name)
        folder = scan_folder(folder_dir)
        prepared = Path(tmp) / "packed"
        t0 = time.perf_counter()
        prepare(folder_dir, prepared, max(32, int(res / 0.875)), shards=4, progress=False)
        prep_s = time.perf_counter() - t0
        packed = PackedFolder.open(prepared)
        n = len(folder.samples)

        def random_batches():
            while True:
                yield torch.randn(a.batch, 3, res, res, device=dev), torch.randint(0, 1000, (a.batch,), device=dev)

        tf = T.Compose(
            [T.RandomResizedCrop(res), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)]
        )
        t0 = time.perf_counter()
        mem = load_or_build(folder, cache_size(folder, res), Path(tmp) / "cache", progress=False).to(dev)
        cache_s = time.perf_counter() - t0
        aug = BatchAugment(res, "rrc")

        def in_memory():
            while True:
                perm = torch.randperm(len(mem.labels), device=dev)
                for k in range(0, len(perm) - a.batch + 1, a.batch):
                    sel = perm[k : k + a.batch]
                    yield aug(mem.images[sel], sizes=mem.sizes[sel.cpu()]), mem.labels[sel]

        def regular():
            return DataLoader(
                ImageDataset(folder.samples, tf),
                batch_size=a.batch,
                shuffle=True,
                num_workers=a.workers,
                collate_fn=collate_skip_bad,
                persistent_workers=a.workers > 0,
                pin_memory=dev.type == "cuda",
            )

        def batched(src, prefetch=True):
            loader = BatchDecodeLoader(src, a.batch, res, device=dev, workers=a.workers, train=True)
            return Prefetcher(loader, dev) if prefetch else loader

        cases = [
            ("(a) model only, random tensors", random_batches),
            ("(b) regular loader (PIL per image)", regular),
            (f"(c) --loader gpu: batched decode on {dev.type}, no prefetch", lambda: batched(folder, False)),
            (f"(c) --loader gpu: batched decode on {dev.type} + prefetch", lambda: batched(folder)),
            (f"(d) --loader gpu on prepared shards ({dev.type}) + prefetch", lambda: batched(packed)),
            (f"(e) in-memory uint8 cache on {dev.type}, batched augmentation", in_memory),
        ]
        for name, make in cases:
            loader_only = None if name.startswith("(a)") else timed(make(), a.batches)
            end_to_end = timed(make(), a.batches, step)
            rows.append((name, loader_only, end_to_end))
            print(f"{name:<48} loader {loader_only or float('nan'):8.1f} img/s   train step {end_to_end:8.1f} img/s")

    info = machine_info()
    lines = [
        f"# Input pipeline throughput ({a.model}, {res} px, training step, {a.data})",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cores']} CPU cores ({info['cpu']}); device: {dev}"
        + (f" ({torch.cuda.get_device_name()})" if dev.type == "cuda" else ""),
        f"- versions: Python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
        f"- data: {n} files ("
        + (f"{a.copies} copies of the 50 ImageNet sample photos" if a.data == "photos" else "CIFAR-10 subset, 32 px")
        + f"); batch {a.batch}, "
        f"{a.batches} timed batches after 1 warm-up, {a.workers} loader workers",
        f"- one-time costs: `prepare` (shorter side {max(32, int(res / 0.875))}, q90, 4 shards) {prep_s:.1f} s; "
        f"in-memory cache build {cache_s:.1f} s ({mem.images.shape[-1]} px, {mem.images.numel() / 2**20:.0f} MiB)",
        "- command: `python benchmarks/train_speed.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| path | loader only (img/s) | end-to-end train step (img/s) |",
        "|---|---|---|",
    ]
    for name, lo, e2e in rows:
        lines.append(f"| {name} | {'—' if lo is None else f'{lo:.0f}'} | {e2e:.0f} |")
    if dev.type != "cuda":
        lines += [
            "",
            "No GPU on this machine: rows (c) and (d) decode on the CPU here. The GPU rows (nvJPEG decode, "
            "targets >= 10k img/s for (c) and >= 20k for (d) on one H100) are not measured yet.",
        ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="case", required=True)

    e = sub.add_parser("engine", help="fdmobilenet train (--in-memory, PIL folders) against the model-only step")
    e.add_argument("--data", type=Path, required=True, help="DIR/train + DIR/val (e.g. a benchmarks/reference split)")
    e.add_argument("--model", default="fd_mobilenet_025")
    e.add_argument("--resolution", type=int, default=224)
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--rounds", type=int, default=2)
    e.add_argument("--steps", type=int, default=20, help="timed steps of the model-only loop")
    e.add_argument("--out", type=Path, default=Path("benchmarks/train_speed.md"))
    e.set_defaults(run=case_engine)

    m = sub.add_parser("model", help="the training step alone, FD-MobileNet 0.25x/0.5x/1x at 224 and 32 px")
    m.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    m.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to measure")
    m.add_argument("--steps", type=int, default=5, help="timed steps per row (after 2 warm-up steps)")
    m.add_argument("--out", help="write a Markdown results file here")
    m.set_defaults(run=case_model)

    ap = sub.add_parser("pipeline", help="input pipelines (PIL, --loader gpu, prepared shards, --in-memory)")
    ap.add_argument("--data", choices=("photos", "cifar"), default="photos")
    ap.add_argument("--model", default="fd_mobilenet_050")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--per-class", type=int, default=300, help="--data cifar: images per class")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).with_name("input_pipeline.md")))
    ap.set_defaults(run=case_pipeline)

    a = p.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
