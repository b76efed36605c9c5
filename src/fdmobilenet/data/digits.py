"""The built-in dataset: scikit-learn's 1,797 real handwritten digits, as RGB images.

It ships with scikit-learn, so ``make demo`` trains on real data with no download.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from .splits import stratified_split

DIGITS_CLASSES = [str(i) for i in range(10)]


DIGITS_VAL_FRACTION = 0.2


DIGITS_SPLIT_SEED = 0  # the built-in split is fixed, whatever `seed` says, so results are comparable


def load_digits(resolution: int) -> tuple[list[Image.Image], list[int], list[Image.Image], list[int]]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans) as RGB images of ``resolution``.

    The 0-16 grey levels are upsampled bilinearly and quantised to 8-bit RGB in memory, so the
    exported validation PNGs are exactly what the network was validated on. Fixed stratified 80/20 split.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ValueError(
            "the built-in digits dataset needs scikit-learn: pip install 'fdmobilenet[train]' (or pass `data` DIR)"
        ) from None
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous()
    images = [Image.fromarray(a.numpy()) for a in x]
    labels = [int(t) for t in d.target]
    tr, va = stratified_split(labels, DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED)
    return [images[i] for i in tr], [labels[i] for i in tr], [images[i] for i in va], [labels[i] for i in va]


def export_images(images: Sequence[Image.Image], labels: Sequence[int], classes: Sequence[str], root: Path) -> None:
    """Write ``root/<class>/<i>.png`` so ``fdmobilenet eval`` and ``predict`` can read the in-memory set."""
    for i, (im, y) in enumerate(zip(images, labels)):
        d = root / classes[y]
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{i:05d}.png")


class ImageListDataset(Dataset):
    """In-memory PIL images with ``ImageDataset``'s item format ``(tensor, label, index, None)``."""

    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int], transform: Callable):
        self.images, self.labels, self.transform = list(images), list(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i], i, None
