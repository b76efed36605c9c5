"""Imagenette split for the INT8 study: photos to calibrate / fine-tune on, and disjoint photos to score on.

Imagenette's photos are ImageNet *training* photos of 10 classes, so scoring the authors' weights on them is
in-sample for the fp32 model; that is fine here, because what is measured is how much INT8 loses against
fp32 on the same photos. The split is stratified and seeded, and written to ``split.json`` next to the cache.
The eval transform (resize 256, center crop 224, bilinear) is applied once and kept as uint8, so every
variant sees the exact same input tensors.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from fdmobilenet.preprocess import Preprocess, imagenet_classes

SHARED = Path(os.environ.get("FDM_SHARED", Path(__file__).resolve().parents[3] / "shared"))
ROOT = SHARED / "datasets/imagenette/train"
TUNE_PER_CLASS = 400  # 4,000 photos to calibrate / fine-tune on; the other 5,469 are scored


def split(seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """{'tune': [(path, imagenet_index)], 'score': [...]}: per class, a seeded TUNE_PER_CLASS go to tune."""
    synsets, _ = imagenet_classes()
    out: dict[str, list[tuple[str, int]]] = {"tune": [], "score": []}
    for d in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in d.iterdir() if f.suffix.lower() in (".jpeg", ".jpg"))
        random.Random(f"{seed}-{d.name}").shuffle(files)
        label = synsets.index(d.name)
        out["tune"] += [(f, label) for f in sorted(files[:TUNE_PER_CLASS])]
        out["score"] += [(f, label) for f in sorted(files[TUNE_PER_CLASS:])]
    return out


def _crop_uint8(path: str, pre: Preprocess) -> np.ndarray:
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(pre.resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(pre.resolution)])
    with Image.open(path) as im:
        return np.asarray(tf(im.convert("RGB")), dtype=np.uint8).transpose(2, 0, 1).copy()


def cached(part: str, cache: Path, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 N×3×224×224 crops, labels, paths) of one part of the split, built once into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    parts = split(seed)
    (cache / "split.json").write_text(json.dumps({k: [p for p, _ in v] for k, v in parts.items()}, indent=0))
    f = cache / f"{part}-{seed}.npy"
    paths = [p for p, _ in parts[part]]
    labels = torch.tensor([y for _, y in parts[part]])
    if not f.exists():
        pre = Preprocess()
        arr = np.stack([_crop_uint8(p, pre) for p in paths])
        np.save(str(f) + ".tmp.npy", arr)
        os.replace(str(f) + ".tmp.npy", f)
        print(f"cached {len(paths)} {part} photos in {f}", file=sys.stderr)
    return torch.from_numpy(np.load(f, mmap_mode="r")[:]), labels, paths


def normalized(x: torch.Tensor, pre: Preprocess | None = None) -> torch.Tensor:
    """uint8 crops -> the float input the models take (exactly ToTensor + Normalize)."""
    pre = pre or Preprocess()
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std
