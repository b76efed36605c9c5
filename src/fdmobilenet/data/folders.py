"""Image folders: class discovery (``DIR/<class>/<images>``, synset folders in ImageNet order)
and the scans that find what a run would skip (unreadable files, empty classes, stray files).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from ..preprocess import imagenet_classes, imagenet_label_names
from .images import IMAGE_EXTENSIONS, BadImageError, find_images, is_image_file, load_image, walk_files

_SYNSET = re.compile(r"^n\d{8}$")


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

    Sub-folders named by ImageNet synset ids are labelled in the standard 1000-class order, or, given
    ``class_names`` of a model trained on fewer ImageNet classes, by their names among those.
    Otherwise, given ``class_names`` (stored with weights), each folder must be one of them;
    without, the sorted folder names are the classes (torchvision's ImageFolder order).
    Every file with an image extension is listed (``find_images``: the walk ``predict`` and ``quantize``
    share); whether it decodes is checked when it is read.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file; expected a folder {root}/<class name>/<image files>")
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; expected {root}/<class name>/<image files> (one sub-folder per class)"
        )
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"{root} has no class sub-folders; expected {root}/<class name>/<image files>")
    names = [d.name for d in dirs]
    synsets, readable = imagenet_classes()
    imagenet = all(_SYNSET.match(n) for n in names) and set(names) <= set(synsets)
    if imagenet and (class_names is None or len(class_names) == len(synsets)):
        classes, index = readable, {s: i for i, s in enumerate(synsets)}
    elif imagenet:  # a model of a few ImageNet classes (trained on synset folders) scoring synset folders
        named = dict(zip(synsets, imagenet_label_names()))
        classes, position = list(class_names), {c: i for i, c in enumerate(class_names)}
        unknown = [n for n in names if named[n] not in position]
        if unknown:
            raise ValueError(
                f"{root}: folders {unknown[:5]} are ImageNet classes the weights were not trained on "
                f"(they know {len(classes)}: {', '.join(classes[:5])}, ...); score them with weights that know them"
            )
        index = {n: position[named[n]] for n in names}
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
    samples = [(f, index[d.name]) for d in dirs for f in find_images(d)]
    if not samples:
        raise ValueError(f"{root} holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) in its class folders")
    return Folder(samples, classes, root)


class _Probe(Dataset):
    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str | None:
        try:
            load_image(self.paths[i])
        except BadImageError as e:
            return e.reason
        return None


def find_bad_images(paths: Sequence[Path], workers: int = 0) -> list[tuple[str, str]]:
    """(path, reason) of every file that does not decode to an RGB image, checked by fully decoding each."""
    loader = DataLoader(_Probe(paths), batch_size=64, num_workers=workers, collate_fn=list)
    reasons = [r for batch in loader for r in batch]
    return [(str(p), r) for p, r in zip(paths, reasons) if r is not None]


def non_image_files(root: Path) -> list[str]:
    """Files inside the class folders of ``root`` that have no image extension (they are never read)."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += [str(f) for f in sorted(walk_files(d)) if not is_image_file(f)]
    return out


def empty_classes(folder: Folder) -> list[str]:
    """Class folders of ``folder.root`` with no image files."""
    have = {y for _, y in folder.samples}
    return [str(folder.root / c) for i, c in enumerate(folder.classes) if i not in have and (folder.root / c).is_dir()]
