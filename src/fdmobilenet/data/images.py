"""Images in, tensors out: safe decoding, and the dataset/collate pair that skips bad files.

Decoding is defensive because real folders hold truncated JPEGs, CMYK scans, 16-bit PNGs and
stray text files: every readable image becomes RGB, every unreadable one is reported by path
(``BadImageError``) instead of killing a run.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused as possible decompression bombs
MAX_DECODED_BYTES = 3 * MAX_IMAGE_PIXELS  # an 8-bit RGB image at the pixel limit: what decoding may hold
# bytes a pixel takes once decoded, by PIL mode; modes not listed count 4 (RGBA, CMYK, I, F, ...)
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
               "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "BGR;24": 3}  # fmt: skip


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """What decoding an image of ``mode`` takes: a float TIFF (4 bytes a pixel) under the pixel limit can
    still take four times an 8-bit grey image's memory, and its conversion to RGB more."""
    return _MODE_BYTES.get(mode, 4) * width * height


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
                if decoded_bytes(im.mode, im.width, im.height) > MAX_DECODED_BYTES:
                    raise BadImageError(
                        path,
                        f"{im.width}x{im.height} {im.mode} image decodes to "
                        f"{decoded_bytes(im.mode, im.width, im.height) / 1e6:,.0f} MB, over the "
                        f"{MAX_DECODED_BYTES / 1e6:,.0f} MB limit (resize it or save it as 8-bit RGB)",
                    )
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
    # 16/32-bit grey and float: to 8 bits in one float32 array, in place (memory: one copy of the image)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # scale, don't clip
        a = np.array(im, dtype=np.float32)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a *= 255.0 / hi
        a += 0.5
        im = Image.fromarray(np.clip(a, 0, 255, out=a).astype(np.uint8))
    elif im.mode == "F":
        a = np.array(im, dtype=np.float32)
        if a.max() <= 1:
            a *= 255.0
        im = Image.fromarray(np.clip(a, 0, 255, out=a).astype(np.uint8))
    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparency over white
        im = Image.alpha_composite(bg, rgba)
    return im.convert("RGB")


def is_image_file(path: Path) -> bool:
    """An image extension (any case) on a visible file name: ``._x.jpg`` macOS resource forks are not images."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def walk_files(root: str | Path) -> Iterator[Path]:
    """Every visible file under ``root``, in no particular order: the one folder walk behind training
    folders, ``predict DIR`` and calibration/verification photos, so all three see the same files.

    Names starting with "." (files and folders: ``.git``, ``.thumbnails``, ``._x.jpg``) are left out.
    Symlinks are followed, files and folders alike, because datasets are split by linking class folders
    or photos (as ``scan_folder`` has always read linked class folders); each real folder is entered only
    once, so a link back to a parent neither loops nor counts a photo twice. Dangling links, sockets and
    other non-regular files are skipped; unreadable folders are skipped as ``os.walk`` does.
    """
    seen: set[str] = set()
    for d, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(n for n in dirs if not n.startswith("."))  # sorted: which of two links wins is fixed
        for n in names:
            if not n.startswith(".") and os.path.isfile(os.path.join(d, n)):  # False, not an error, on EACCES
                yield Path(d, n)


def find_images(root: str | Path) -> list[Path]:
    """Every image file under ``root``, sorted (the rules are ``walk_files``'s and ``is_image_file``'s)."""
    return sorted(f for f in walk_files(root) if is_image_file(f))


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
