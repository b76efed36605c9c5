"""Images in, tensors out: folder discovery, safe decoding, the authors' test transform.

Decoding is defensive because real folders hold truncated JPEGs, CMYK scans, 16-bit PNGs and
stray text files: every readable image becomes RGB, every unreadable one is reported by path
(``BadImageError``) instead of killing a run.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset
from torchvision import transforms as T

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused as possible decompression bombs
_SYNSET = re.compile(r"^n\d{8}$")

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


class BadImageError(ValueError):
    """An image file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def load_image(path: str | Path, draft_size: int | None = None, data: bytes | None = None) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB image or raise ``BadImageError``.

    ``draft_size`` lets JPEG decoding run at 1/2, 1/4 or 1/8 scale while the shorter side stays
    at least that large, which is several times cheaper when the target is small. ``data``: the
    file's bytes, already read (``path`` then only names it in errors), so callers holding them
    get the same checks without a second read.
    """
    path = Path(path)
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise BadImageError(path, f"{im.width}x{im.height} is over the {MAX_IMAGE_PIXELS:,}-pixel limit")
                if draft_size and im.format == "JPEG":
                    scale = min(im.width, im.height) / draft_size
                    if scale >= 2:
                        im.draft("RGB", (int(im.width / scale) + 1, int(im.height / scale) + 1))
                im.load()
                return _to_rgb(im)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(path, f"not a readable image ({type(e).__name__}: {e})") from e


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale, don't clip, to 8 bits
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(a * (255.0 if a.max() <= 1 else 1.0), 0, 255).astype(np.uint8))
    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparency over white
        im = Image.alpha_composite(bg, rgba)
    return im.convert("RGB")


@functools.cache
def imagenet_classes() -> tuple[list[str], list[str]]:
    """Synset ids and readable names of the 1000 ImageNet-1k classes, in the standard order."""
    text = resources.files("fdmobilenet").joinpath("imagenet_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    return [r[1] for r in rows], [r[2] for r in rows]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


@dataclass
class Folder:
    """An image-per-file dataset: (path, label) samples and the class names labels index."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    root: Path

    # the interface shared with packed.PackedFolder, which the batched loader reads through
    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        return str(self.samples[i][0])

    def label(self, i: int) -> int:
        return int(self.samples[i][1])

    def read_bytes(self, i: int) -> bytes:
        """The file's bytes; an unreadable file gives ``b""``, reported as bad when decoded."""
        try:
            return Path(self.samples[i][0]).read_bytes()
        except OSError:
            return b""


def scan_folder(root: str | Path, class_names: Sequence[str] | None = None) -> Folder:
    """Find ``root/<class>/<image>`` files.

    Sub-folders named by ImageNet synset ids are labelled in the standard 1000-class order.
    Otherwise, given ``class_names`` (stored with weights), each folder must be one of them;
    without, the sorted folder names are the classes (torchvision's ImageFolder order).
    Every file with an image extension is listed; whether it decodes is checked when it is read.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; expected {root}/<class name>/<image files> (one sub-folder per class)"
        )
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"{root} has no class sub-folders; expected {root}/<class name>/<image files>")
    names = [d.name for d in dirs]
    synsets, readable = imagenet_classes()
    if all(_SYNSET.match(n) for n in names) and set(names) <= set(synsets):
        classes, index = readable, {s: i for i, s in enumerate(synsets)}
    elif class_names is not None:
        classes, index = list(class_names), {c: i for i, c in enumerate(class_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(
                f"{root}: folders {unknown[:5]} are not among the {len(classes)} classes stored with the weights "
                f"({', '.join(classes[:5])}, ...); rename the folders or use weights trained on these classes"
            )
    else:
        classes, index = names, {c: i for i, c in enumerate(names)}
    samples = [(f, index[d.name]) for d in dirs for f in sorted(d.rglob("*")) if f.is_file() and is_image_file(f)]
    if not samples:
        raise ValueError(f"{root} holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) in its class folders")
    return Folder(samples, classes, root)


def eval_transform(
    resolution: int = 224,
    crop_pct: float = 0.875,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> Callable[[Image.Image], torch.Tensor]:
    """The authors' test transform: shorter side to resolution/crop_pct (256 for 224), bilinear, center crop."""
    return T.Compose(
        [
            T.Resize(int(resolution / crop_pct), interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(resolution),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class ImageDataset(Dataset):
    """(image tensor, label, index) per sample; an unreadable file yields ``None`` for the image.

    ``collate_skip_bad`` drops those and reports their paths, so one bad file never stops a run.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable, draft_size: int | None = None):
        self.samples, self.transform, self.draft_size = list(samples), transform, draft_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            img = load_image(path, self.draft_size)
        except BadImageError as e:
            return None, label, i, e.reason
        return self.transform(img), label, i, None


def collate_skip_bad(batch):
    """Stack the good samples; return (images, labels, indices, [(index, reason), ...] of bad ones)."""
    good = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    if not good:
        return None, None, None, bad
    imgs = torch.stack([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good], dtype=torch.long)
    idx = torch.tensor([b[2] for b in good], dtype=torch.long)
    return imgs, labels, idx, bad
