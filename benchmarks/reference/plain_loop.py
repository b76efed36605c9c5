"""A plain PyTorch training loop: the yardstick the engine (``fdmobilenet train``) is measured against.

Nothing from fdmobilenet but ``create_model`` (and ``load_weights`` for fine-tuning): torchvision
transforms, a DataLoader, SGD with Nesterov momentum, OneCycleLR, label smoothing. Photos are decoded
once into memory (shorter side resized to ``--short-side``), as a careful user would do on a CPU.

    python benchmarks/reference/plain_loop.py --train DIR/train --val DIR/val --model fd_mobilenet_025 \
        --resolution 224 --epochs 20 --seed 0 --json out.json

Prints (and writes with --json) final val top-1, images/s of the training loop and wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

import fdmobilenet as fdm

EXTS = (".jpg", ".jpeg", ".png")


def load_folder(root: Path, short_side: int, classes: list[str] | None = None):
    """PIL images (resized so the shorter side is ``short_side``) and labels of ROOT/<class>/*."""
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for y, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() not in EXTS:
                continue
            im = Image.open(f).convert("RGB")
            s = short_side / min(im.size)
            if s < 1:
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
            images.append(im)
            labels.append(y)
    return images, labels, classes


class Images(Dataset):
    def __init__(self, images, labels, tf):
        self.images, self.labels, self.tf = images, labels, tf

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.tf(self.images[i]), self.labels[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--val", required=True, type=Path)
    p.add_argument("--model", default="fd_mobilenet_025")
    p.add_argument("--width", type=float, help="width multiplier of a bare family name (e.g. mobilenet_v1)")
    p.add_argument("--pretrained", help="weights to fine-tune from (classifier re-initialised)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.36, 1.0))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=4e-5)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)

    t_load = time.perf_counter()
    tr_x, tr_y, classes = load_folder(a.train, a.short_side)
    va_x, va_y, _ = load_folder(a.val, a.short_side, classes)
    load_s = time.perf_counter() - t_load
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    train_tf = T.Compose(
        [T.RandomResizedCrop(a.resolution, scale=tuple(a.crop_scale)), T.RandomHorizontalFlip(), T.ToTensor(),
         T.Normalize(mean, std)]
    )  # fmt: skip
    val_tf = T.Compose(
        [T.Resize(int(a.resolution / 0.875)), T.CenterCrop(a.resolution), T.ToTensor(), T.Normalize(mean, std)]
    )
    g = torch.Generator().manual_seed(a.seed)
    kw = {"num_workers": a.workers, "persistent_workers": a.workers > 0}
    train_loader = DataLoader(
        Images(tr_x, tr_y, train_tf), a.batch_size, shuffle=True, drop_last=True, generator=g, **kw
    )
    val_loader = DataLoader(Images(va_x, va_y, val_tf), 128, **kw)

    kw = {"width": a.width} if a.width else {}
    model = fdm.create_model(a.model, num_classes=1000 if a.pretrained else len(classes), **kw)
    if a.pretrained:
        fdm.load_weights(model, a.pretrained)
        model.reset_classifier(len(classes))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=a.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, epochs=a.epochs, steps_per_epoch=len(train_loader))
    crit = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)

    t0, seen, train_s = time.perf_counter(), 0, 0.0
    for epoch in range(a.epochs):
        model.train()
        te = time.perf_counter()
        for x, y in train_loader:
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        train_s += time.perf_counter() - te
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += int((model(x).argmax(1) == y).sum())
                n += len(y)
        top1 = 100 * correct / n
        print(f"epoch {epoch + 1}/{a.epochs} loss {float(loss):.3f} val top-1 {top1:.2f}%", flush=True)
    result = {
        "model": a.model, "width": a.width, "seed": a.seed, "epochs": a.epochs, "val_top1": round(top1, 2),
        "n_train": len(tr_y), "n_val": len(va_y), "img_s": round(seen / train_s, 1),
        "wall_s": round(time.perf_counter() - t0 + load_s, 1), "decode_s": round(load_s, 1),
    }  # fmt: skip
    print(json.dumps(result))
    if a.json:
        a.json.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
