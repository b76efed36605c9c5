"""Decode an image folder once into a uint8 tensor cache, reused until the files change.

For CIFAR-scale datasets (and a few thousand photos) decoding dominates a tiny network's
training step; keeping every image as one (N, 3, S, S) uint8 tensor on the training device
removes it from the loop entirely. The cache is a safetensors file keyed by a fingerprint of
the file list (relative path, size, mtime), so any added, removed or edited file rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save as st_save

from .._utils import atomic_write_bytes
from .folders import Folder
from .images import BadImageError, load_image


@dataclass
class MemoryDataset:
    """Images (N, 3, S, S) uint8 and labels (N,) int64, plus what was skipped and why."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    bad: list[tuple[str, str]]
    cache_file: Path | None = None
    rebuilt: bool = False

    def to(self, device: torch.device | str) -> MemoryDataset:
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def subset(self, index: torch.Tensor | list[int]) -> MemoryDataset:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.images.device)
        return MemoryDataset(self.images[idx], self.labels[idx], self.classes, [], self.cache_file, self.rebuilt)


def fingerprint(folder: Folder, size: int) -> str:
    """Hash of every sample's relative path, label, byte size and mtime, and the stored size."""
    h = hashlib.sha256(f"v1 size={size}\n".encode())
    for path, label in folder.samples:
        st = os.stat(path)
        h.update(f"{path.relative_to(folder.root)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_size(folder: Folder, resolution: int, crop_pct: float = 0.875, probe: int = 64) -> int:
    """Side of the cached squares: what evaluation resizes to (resolution/crop_pct), but never more
    than the images' typical shorter side -- upsampling 32 px CIFAR into a 256 px cache would only
    cost memory (50,000 images: 150 MB at 32 px, 9.8 GB at 256)."""
    step = max(1, len(folder.samples) // probe)
    sides = []
    for path, _ in folder.samples[::step][:probe]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
        except OSError:
            continue
    target = int(round(resolution / crop_pct))
    return min(target, int(np.median(sides))) if sides else target


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bilinear, antialiased), centre square: every image the same shape."""
    w, h = img.size
    if (w, h) != (size, size):
        s = size / min(w, h)
        # truncate the long side as torchvision's Resize does, so the crop matches the eval transform
        img = img.resize((max(size, int(w * s)), max(size, int(h * s))), Image.BILINEAR)
        w, h = img.size
        left, top = int(round((w - size) / 2)), int(round((h - size) / 2))  # as torchvision CenterCrop
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def load_or_build(folder: Folder, size: int, cache_dir: str | Path, progress: bool = True) -> MemoryDataset:
    """The cached tensors of ``folder`` at ``size``² pixels; decoded (and saved atomically) when
    the cache is missing or its fingerprint no longer matches the files."""
    cache_dir = Path(cache_dir)
    fp = fingerprint(folder, size)
    # the file list names the cache (a train and a val split of one folder differ); mtimes only invalidate it
    listing = "\n".join(str(p.resolve()) for p, _ in folder.samples)
    name = hashlib.sha256(listing.encode()).hexdigest()[:10]
    cache_file = cache_dir / f"memcache-{folder.root.name}-{name}-{size}.safetensors"
    if cache_file.is_file():
        try:
            with safe_open(str(cache_file), "pt") as f:
                meta = f.metadata() or {}
                if meta.get("fingerprint") == fp:
                    return MemoryDataset(
                        f.get_tensor("images"),
                        f.get_tensor("labels"),
                        json.loads(meta["classes"]),
                        [tuple(b) for b in json.loads(meta["bad"])],
                        cache_file,
                        rebuilt=False,
                    )
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    images = np.empty((len(folder.samples), 3, size, size), dtype=np.uint8)
    labels, bad, n = [], [], 0
    it = folder.samples
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"decoding {folder.root.name} into memory", unit="img", leave=False, disable=None)
    for path, label in it:
        try:
            images[n] = fit_square(load_image(path, draft_size=size), size)
        except BadImageError as e:
            bad.append((str(path), e.reason))
            continue
        labels.append(label)
        n += 1
    if n == 0:
        raise ValueError(f"{folder.root}: none of the {len(folder.samples)} images could be decoded")
    ds = MemoryDataset(
        torch.from_numpy(images[:n]), torch.tensor(labels, dtype=torch.long), folder.classes, bad, cache_file, True
    )
    meta = {"fingerprint": fp, "classes": json.dumps(folder.classes), "bad": json.dumps(bad), "size": str(size)}
    atomic_write_bytes(cache_file, st_save({"images": ds.images, "labels": ds.labels}, metadata=meta))
    return ds
