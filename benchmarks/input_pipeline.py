"""Input-pipeline throughput of a training step, side by side in one run.

Rows, each as loader-only img/s and end-to-end train-step img/s:
  (a) model only, random tensors already on the device
  (b) regular loader: PIL decode + torchvision RandomResizedCrop/flip per image, DataLoader workers
  (c) `train --loader gpu`: bytes from workers, batch decode_jpeg on the device, one roi_align crop,
      run one batch ahead by a prefetch thread on its own CUDA stream (also shown without prefetch)
  (d) the same on `fdmobilenet prepare` shards (shorter side 256)
  (e) --in-memory: the decoded uint8 cache on the device, batched augmentation
--data photos: ../shared/datasets/imagenet-sample-50 replicated (ImageNet-sized photos), 224 px;
--data cifar: a CIFAR-10 subset (32 px JPEGs), for the in-memory path.

    python benchmarks/input_pipeline.py [--data photos|cifar] [--model NAME] [--resolution R] \
        [--copies 20] [--batch 64] [--batches 8] [--device cpu|cuda] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T

from fdmobilenet import create_model
from fdmobilenet._utils import machine_info
from fdmobilenet.data.augment import BatchAugment
from fdmobilenet.data.batchloader import BatchDecodeLoader, Prefetcher
from fdmobilenet.data.folders import scan_folder
from fdmobilenet.data.images import ImageDataset, collate_skip_bad
from fdmobilenet.data.memcache import cache_size, load_or_build
from fdmobilenet.data.packed import PackedFolder, prepare

SHARED = Path(os.environ.get("FDM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=("photos", "cifar"), default="photos")
    ap.add_argument("--model", default="fd_mobilenet_050")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--per-class", type=int, default=300, help="--data cifar: images per class")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    a = ap.parse_args()
    dev = torch.device(a.device)
    res = a.resolution
    model = create_model(a.model).to(dev).train()
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
        "- command: `python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:]) + "`",
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


if __name__ == "__main__":
    main()
