"""The strongest simple training loop we could write: the yardstick ``fdmobilenet train`` is judged against.

Independent of the package by default (``--net own`` builds FD-MobileNet / MobileNet V1 from the paper's
arrays with PyTorch's default initialisation); ``--net package`` trains ``fdmobilenet.create_model`` instead,
and ``--init`` re-initialises chosen layer groups of it, which is how the initialisation ablation is run.

Recipe (each part was tried against its obvious variants, see results-yardstick.md): photos decoded once,
shorter side resized to 256; torchvision v2 ``RandomResizedCrop(224, scale=(0.36, 1), antialias=True)`` +
horizontal flip per image; SGD Nesterov momentum 0.9, lr 0.1, weight decay 4e-5 on every parameter,
``OneCycleLR(pct_start)`` stepped per batch, label smoothing 0.1, batch 64 from a fresh ``randperm`` each epoch
(last partial batch dropped); scored once at the end, resize 256 + centre crop 224.

    python benchmarks/reference/strong_loop.py --train SPLIT/train --val SPLIT/val --family fd_mobilenet \
        --width 0.25 --epochs 10 --seed 0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

EXTS = (".jpg", ".jpeg", ".png")
FD = [(64, 2), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 1)]
MB = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]


def cbr(cin: int, cout: int, k: int, s: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def own_net(family: str, width: float, num_classes: int) -> nn.Module:
    """The paper's network from its arrays, PyTorch's default initialisation (nothing re-initialised)."""
    table = {"fd_mobilenet": FD, "mobilenet_v1": MB}[family]
    cin = int(32 * width)
    layers = [cbr(3, cin, 3, 2)]
    for c, s in table:
        cout = int(c * width)
        layers += [cbr(cin, cin, 3, s, groups=cin), cbr(cin, cout, 1, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def reinit(model: nn.Module, groups: set[str]) -> None:
    """PyTorch's default initialisation (each layer's ``reset_parameters``) for the chosen layer groups:
    ``stem`` (first conv), ``dw`` (depthwise convs), ``pw`` (other convs), ``fc`` (linear layers), ``bn``."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            g = "stem" if m is convs[0] else ("dw" if m.groups > 1 and m.groups == m.in_channels else "pw")
        elif isinstance(m, nn.Linear):
            g = "fc"
        elif isinstance(m, nn.BatchNorm2d):
            g = "bn"
        else:
            continue
        if g in groups:
            m.reset_parameters()


def load_folder(root: Path, short_side: int, classes: list[str] | None = None):
    """uint8 CHW tensors (shorter side resized to ``short_side``) and labels of ROOT/<class>/*."""
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for y, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() not in EXTS:
                continue
            with Image.open(f) as im:
                im = im.convert("RGB")
                s = short_side / min(im.size)
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
                images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous())
            labels.append(y)
    return images, labels, classes


class Images(Dataset):
    def __init__(self, images, labels, tf):
        self.images, self.labels, self.tf = images, labels, tf

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.tf(self.images[i]), self.labels[i]


class PermSampler(torch.utils.data.Sampler):
    """A fresh ``randperm`` each epoch from the loop's own generator."""

    def __init__(self, n: int, g: torch.Generator):
        self.n, self.g = n, g

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.g).tolist())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--val", required=True, type=Path)
    p.add_argument("--family", default="fd_mobilenet", help="fd_mobilenet, mobilenet_v1 (own or package), "
                   "shufflenet_v1 (package only)")  # fmt: skip
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--net", choices=("own", "package"), default="own")
    p.add_argument("--base-init", choices=("pytorch", "authors"), help="package net: initialise it this way "
                   "first (``reset_parameters(scheme)``; default: as create_model does)")  # fmt: skip
    p.add_argument("--init", default="", help="package net: layer groups then given PyTorch's default init, "
                   "comma-separated (stem,dw,pw,fc,bn or all)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.36, 1.0))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=4e-5)
    p.add_argument("--pct-start", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--no-nesterov", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every-epoch", action="store_true", help="score after every epoch (slower)")
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
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    train_tf = v2.Compose(
        [v2.RandomResizedCrop(a.resolution, scale=tuple(a.crop_scale), antialias=True), v2.RandomHorizontalFlip(),
         *norm]
    )  # fmt: skip
    val_tf = v2.Compose([v2.Resize(round(a.resolution / 0.875), antialias=True), v2.CenterCrop(a.resolution), *norm])
    g = torch.Generator().manual_seed(a.seed)
    kw = {"num_workers": a.workers, "persistent_workers": a.workers > 0}
    train_loader = DataLoader(
        Images(tr_x, tr_y, train_tf), a.batch_size, sampler=PermSampler(len(tr_y), g), drop_last=True, **kw
    )
    val_loader = DataLoader(Images(va_x, va_y, val_tf), 128, **kw)

    if a.net == "own":
        model = own_net(a.family, a.width, len(classes))
    else:
        import fdmobilenet as fdm

        model = fdm.create_model(a.family, width=a.width, num_classes=len(classes))
        if a.base_init:
            model.reset_parameters(a.base_init)
        if a.init:
            reinit(model, {"stem", "dw", "pw", "fc", "bn"} if a.init == "all" else set(a.init.split(",")))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=not a.no_nesterov, weight_decay=a.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, a.lr, epochs=a.epochs, steps_per_epoch=len(train_loader), pct_start=a.pct_start
    )
    crit = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)

    def score() -> float:
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += int((model(x).argmax(1) == y).sum())
                n += len(y)
        return 100 * correct / n

    t0, seen, train_s, curve = time.perf_counter(), 0, 0.0, []
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
        if not math.isfinite(float(loss)):
            raise SystemExit(f"diverged at epoch {epoch + 1}")
        if a.every_epoch or epoch + 1 == a.epochs:
            curve.append(round(score(), 2))
        print(f"epoch {epoch + 1}/{a.epochs} loss {float(loss):.3f}" + (f" val {curve[-1]}" if curve else ""),
              flush=True)  # fmt: skip
    result = {
        "family": a.family, "width": a.width, "net": a.net, "base_init": a.base_init, "init": a.init,
        "pct_start": a.pct_start, "lr": a.lr, "wd": a.wd,
        "seed": a.seed, "epochs": a.epochs, "resolution": a.resolution, "val_top1": curve[-1], "curve": curve,
        "n_train": len(tr_y), "n_val": len(va_y), "img_s": round(seen / train_s, 1),
        "wall_s": round(time.perf_counter() - t0 + load_s, 1),
    }  # fmt: skip
    print(json.dumps(result))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with a.json.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
