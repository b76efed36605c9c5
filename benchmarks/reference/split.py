"""Make DST/train and DST/val (symlinks) from SRC/<class>/<images>: a seeded, stratified hold-out.

The engine and the plain loop then train and score on exactly the same photos, whatever seed each
run uses. ``--per-class N`` keeps N training images per class (e.g. the 2k CIFAR-10 subset), and
``--val-per-class M`` takes M validation images per class instead of a fraction.

    python benchmarks/reference/split.py SRC DST --val-fraction 0.2 --seed 0
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

EXTS = (".jpg", ".jpeg", ".png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--val-per-class", type=int)
    p.add_argument("--per-class", type=int, help="training images per class (default: all the rest)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if (a.dst / "train").exists():
        print(f"{a.dst} exists; kept")
        return
    rng = random.Random(a.seed)
    for cls in sorted(d for d in a.src.iterdir() if d.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in EXTS)
        rng.shuffle(files)
        n_val = a.val_per_class if a.val_per_class is not None else round(a.val_fraction * len(files))
        val, train = files[:n_val], files[n_val:]
        train = train[: a.per_class] if a.per_class else train
        for part, chosen in (("train", train), ("val", val)):
            d = a.dst / part / cls.name
            d.mkdir(parents=True)
            for f in chosen:
                (d / f.name).symlink_to(f.resolve())
    n = {part: sum(1 for _ in (a.dst / part).rglob("*.*")) for part in ("train", "val")}
    print(f"{a.dst}: {n['train']} train / {n['val']} val images")


if __name__ == "__main__":
    main()
