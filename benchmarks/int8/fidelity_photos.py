"""Photos for the INT8 fidelity study (``fidelity.py``): what INT8 is calibrated on, and photos of *other* classes.

- ``calib``: 1,000 Imagenette photos (100 per class, seeded) - the 10 classes a user calibrates with;
- ``generic``: the 160 COCO photos of ``detection/coco-voc20`` (everyday scenes), mixed into calibration by
  the "+ generic" routes and never measured on;
- measured on (never calibrated on): ``sample50`` (imagenet-sample-50: one photo each of 50 ImageNet classes,
  none of them Imagenette's; labelled, 1000-way top-1), ``flowers`` (300 of flowers-256), ``cifar``
  (300 CIFAR-10 photos, 32 px upsampled to 224: blurry, far from ImageNet), and ``imagenette`` (300 other
  Imagenette photos: the calibration classes, for contrast).

Each set is preprocessed once with the eval transform (resize 256, center crop 224, bilinear) and cached as
uint8 under ``work/photos``, so every route sees the exact same input tensors.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from photos import SHARED, _crop_uint8, normalized

from fdmobilenet.data.images import find_images
from fdmobilenet.preprocess import Preprocess, imagenet_classes

DATA = SHARED / "datasets"
MEASURED = ("sample50", "flowers", "cifar", "imagenette")
OTHER = ("sample50", "flowers", "cifar")  # photos of classes outside the calibration's


def _sample(files: list[Path], n: int | None, seed: str) -> list[Path]:
    files = sorted(files)
    if n is not None and len(files) > n:
        files = sorted(random.Random(seed).sample(files, n))
    return files


def paths(name: str) -> list[Path]:
    """The files of one set, seeded."""
    if name in ("calib", "imagenette"):
        out, held = [], []
        for d in sorted(p for p in (DATA / "imagenette/train").iterdir() if p.is_dir()):
            files = _sample(find_images(d), None, "")
            random.Random(f"fidelity-{d.name}").shuffle(files)
            out += sorted(files[:100])
            held += sorted(files[100:130])
        return out if name == "calib" else held
    if name == "generic":
        return find_images(DATA / "detection/coco-voc20/JPEGImages")
    if name == "sample50":
        return find_images(DATA / "imagenet-sample-50")
    if name == "flowers":
        return _sample(find_images(DATA / "flowers-256/train"), 300, "fidelity-flowers")
    if name == "cifar":
        return _sample(find_images(DATA / "cifar10/train"), 300, "fidelity-cifar")
    raise KeyError(name)


def available() -> bool:
    return all((DATA / d).is_dir() for d in ("imagenette/train", "imagenet-sample-50", "flowers-256/train"))


def cached(name: str, cache: Path) -> tuple[torch.Tensor, list[Path]]:
    """(uint8 N x 3 x 224 x 224 eval crops, paths) of one set, built once into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    files = paths(name)
    f = cache / f"fidelity-{name}.npy"
    if not f.exists():
        pre = Preprocess()
        arr = np.stack([_crop_uint8(str(p), pre) for p in files])
        np.save(str(f) + ".tmp.npy", arr)
        os.replace(str(f) + ".tmp.npy", f)
        print(f"cached {len(files)} {name} photos in {f}", file=sys.stderr)
    x = torch.from_numpy(np.load(f))
    if len(x) != len(files):
        raise RuntimeError(f"{f} holds {len(x)} photos, the set has {len(files)}: delete the cache")
    return x, files


def sample50_labels(files: list[Path]) -> torch.Tensor:
    """ImageNet indices of imagenet-sample-50's photos (their folders are synsets)."""
    synsets, _ = imagenet_classes()
    return torch.tensor([synsets.index(p.parent.name) for p in files])


__all__ = ["MEASURED", "OTHER", "available", "cached", "normalized", "paths", "sample50_labels"]


def official_model(width: str, work: Path):
    """(model in eval mode, metadata) of the authors' weights at ``width`` ("0.25", "0.5"), converted once into
    ``work/<width>/official.safetensors``."""
    from fdmobilenet.models import build_from_weights, convert_authors_checkpoint

    weights = work / width / "official.safetensors"
    if not weights.exists():
        weights.parent.mkdir(parents=True, exist_ok=True)
        convert_authors_checkpoint(SHARED / f"weights/official/{width}x-FDMobileNet-224.pth.tar", weights)
    model, meta = build_from_weights(weights)
    return model.eval(), meta
