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
from ..preprocess import Preprocess, cap_aspect
from .folders import Folder
from .images import BadImageError, load_image

MAX_ASPECT = 4 / 3  # longer sides are cut to 4/3 of the shorter: 4:3 photos stay whole, panoramas lose the ends


@dataclass
class MemoryDataset:
    """Images in a uint8 canvas (N, 3, H, W), each at the top left with its own (h, w) in ``sizes`` (N, 2),
    labels (N,) int64, plus what was skipped and why. Keeping each photo's whole frame (not a centre
    square) gives RandomResizedCrop the same picture to crop from as the per-image PIL pipeline."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    bad: list[tuple[str, str]]
    cache_file: Path | None = None
    rebuilt: bool = False
    sizes: torch.Tensor | None = None  # (N, 2) int64 (h, w); None: every image fills the canvas

    def __post_init__(self) -> None:
        if self.sizes is None:
            n, _, h, w = self.images.shape
            self.sizes = torch.tensor([[h, w]], dtype=torch.long).expand(n, 2).clone()

    def to(self, device: torch.device | str) -> MemoryDataset:
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def subset(self, index: torch.Tensor | list[int]) -> MemoryDataset:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.images.device)
        return MemoryDataset(
            self.images[idx], self.labels[idx], self.classes, [], self.cache_file, self.rebuilt, self.sizes[idx.cpu()]
        )


def fingerprint(folder: Folder, size: int) -> str:
    """Hash of every sample's relative path, label, byte size and mtime, and the stored size."""
    h = hashlib.sha256(f"v2 size={size} aspect={MAX_ASPECT:.4f}\n".encode())
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
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # bad files are listed later
            continue
    target = int(round(resolution / crop_pct))
    return min(target, int(np.median(sides))) if sides else target


def cache_bytes_bound(n_images: int, size: int) -> int:
    """An upper bound of the uint8 cache of ``n_images`` photos at ``size``: each is stored on a canvas
    of at most ``size * MAX_ASPECT`` on either side (portrait and landscape photos share one canvas)."""
    side = int(size * MAX_ASPECT)
    return n_images * 3 * side * side


def fit(img: Image.Image, size: int, max_aspect: float = MAX_ASPECT) -> np.ndarray:
    """Shorter side to ``size`` (bilinear, antialiased, the long side truncated as torchvision's Resize
    does), the longer side centre-cut to at most ``max_aspect`` x ``size``: a (3, h, w) uint8 array."""
    img = cap_aspect(img)  # a 20000x1 file must not become a 5,120,000 x 256 array first
    w, h = img.size
    if min(w, h) != size:
        s = size / min(w, h)
        img = img.resize((max(size, int(w * s)), max(size, int(h * s))), Image.BILINEAR)
        w, h = img.size
    cw, ch = min(w, int(size * max_aspect)), min(h, int(size * max_aspect))
    if (cw, ch) != (w, h):
        left, top = int(round((w - cw) / 2)), int(round((h - ch) / 2))  # as torchvision CenterCrop
        img = img.crop((left, top, left + cw, top + ch))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def load_or_build(
    folder: Folder,
    size: int,
    cache_dir: str | Path,
    progress: bool = True,
    crop: Preprocess | None = None,
) -> MemoryDataset:
    """The cached tensors of ``folder``, each photo's shorter side at ``size`` pixels (``fit``), or, with
    ``crop``, exactly its evaluation crop (``crop.crop()``, ``size`` being ``crop.resolution``); decoded
    (and saved atomically) when the cache is missing or its fingerprint no longer matches the files or
    the crop's settings."""
    cache_dir = Path(cache_dir)
    how = f"-evalcrop resize={crop.resize} {crop.interpolation}" if crop else ""  # same side, other crop: rebuilt
    fp = fingerprint(folder, size) + how
    # the file list names the cache (a train and a val split of one folder differ); mtimes only invalidate it
    listing = "\n".join(str(p.resolve()) for p, _ in folder.samples)
    name = hashlib.sha256(listing.encode()).hexdigest()[:10]
    kind = f"crop{crop.resize}" if crop else ""
    cache_file = cache_dir / f"memcache-{folder.root.name}-{name}-{size}{kind}.safetensors"
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
                        sizes=f.get_tensor("sizes"),
                    )
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    arrays, labels, bad = [], [], []
    from .._progress import Progress

    bar = Progress(len(folder.samples), f"decoding {folder.root.name} into memory", "img", enabled=progress)
    cut = crop.crop() if crop else None
    for path, label in folder.samples:
        bar.update()
        try:
            img = load_image(path, draft_size=size if cut is None else None)
            arrays.append(fit(img, size) if cut is None else np.asarray(cut(img), dtype=np.uint8).transpose(2, 0, 1))
        except BadImageError as e:
            bad.append((str(path), e.reason))
            continue
        labels.append(label)
    bar.close()
    if not arrays:
        raise ValueError(f"{folder.root}: none of the {len(folder.samples)} images could be decoded")
    sizes = torch.tensor([a.shape[1:] for a in arrays], dtype=torch.long)
    images = torch.zeros((len(arrays), 3, *sizes.max(0).values.tolist()), dtype=torch.uint8)
    for i, a in enumerate(arrays):  # edge-replicated beyond the photo: crops at its border never blend in black
        h, w = a.shape[1:]
        images[i, :, :h, :w] = torch.from_numpy(a.copy())
        images[i, :, :h, w:] = images[i, :, :h, w - 1 : w]
        images[i, :, h:, :] = images[i, :, h - 1 : h, :]
    ds = MemoryDataset(images, torch.tensor(labels, dtype=torch.long), folder.classes, bad, cache_file, True, sizes)
    meta = {"fingerprint": fp, "classes": json.dumps(folder.classes), "bad": json.dumps(bad), "size": str(size)}
    tensors = {"images": ds.images, "labels": ds.labels, "sizes": sizes}
    atomic_write_bytes(cache_file, st_save(tensors, metadata=meta))
    return ds
