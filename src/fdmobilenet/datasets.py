"""Training data: image folders (with a seeded validation split when there is no ``val/``), the
built-in digits, per-sample seeded augmentation, a resumable epoch order, and the bad-image pre-scan.

Augmentation randomness is a function of (seed, epoch, sample index) and the epoch order a function
of (seed, epoch), so a resumed run, a run with more data-loader workers and a run split across
processes all see exactly the same augmented batches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .data import IMAGE_EXTENSIONS, BadImageError, Folder, is_image_file, load_image, scan_folder
from .packed import PackedFolder, is_packed

LAYOUT_HELP = (
    "expected DIR/train/<class>/<images> and DIR/val/<class>/<images> (the ImageNet layout), "
    "or DIR/<class>/<images> (a seeded validation split is then made with --val-split); "
    "DIR, DIR/train or DIR/val may also be the output of `fdmobilenet prepare`"
)
DIGITS_CLASSES = [str(i) for i in range(10)]
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # the built-in split is fixed, whatever --seed says, so results are comparable


def _mix(*xs: int) -> int:
    """A 63-bit seed from several integers (order matters), stable across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


# --- splits -----------------------------------------------------------------------------------


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): each class gives round(fraction * n) samples (at least one when it has two or more)."""
    if not 0 < fraction < 1:
        raise ValueError(f"--val-split must be between 0 and 1 (exclusive), got {fraction}")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train, val = [], []
    for y in sorted(by_class):
        idx = by_class[y]
        order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(_mix(seed, y))).tolist()
        n_val = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        val += [idx[j] for j in order[:n_val]]
        train += [idx[j] for j in order[n_val:]]
    return sorted(train), sorted(val)


@dataclass
class FolderSplit:
    train: Folder | PackedFolder
    val: Folder | PackedFolder
    description: str
    record: dict | None  # the generated split (written to split.json), None for a train/val layout


def _open(path: Path, classes: Sequence[str] | None = None) -> Folder | PackedFolder:
    """An image folder, or shards written by ``fdmobilenet prepare`` (recognised by their meta.json)."""
    if not is_packed(path):
        return scan_folder(path, classes)
    packed = PackedFolder.open(path)
    if classes is not None and packed.classes != list(classes):
        raise ValueError(
            f"{path} was prepared with classes {packed.classes[:5]}... but the training data has {list(classes)[:5]}..."
            "; prepare train/ and val/ from folders with the same class sub-folders"
        )
    return packed


def load_folders(data: str | Path, val_split: float, seed: int, recorded: dict | None = None) -> FolderSplit:
    """The train and val image lists of ``data``; a folder of classes is split (stratified, seeded).

    Any of ``data``, ``data/train`` and ``data/val`` may be a prepared (``fdmobilenet prepare``) folder.
    ``recorded`` is a previous ``split.json`` (on resume): its validation files are used as they are.
    """
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} does not exist; {LAYOUT_HELP}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = _open(root / "train")
        try:
            val = _open(root / "val", train.classes)
        except ValueError as e:
            raise ValueError(f"{root}/val does not match {root}/train: {e}") from None
        return FolderSplit(train, val, f"{root}/train and {root}/val", None)
    base = root / "train" if (root / "train").is_dir() else root
    try:
        folder = _open(base)
    except ValueError as e:
        raise ValueError(f"{e}; {LAYOUT_HELP}") from None
    if isinstance(folder, PackedFolder):  # prepared data never changes: its row numbers name its images
        rel, labels = [f"#{i}" for i in range(len(folder))], folder.labels.tolist()
    else:
        rel, labels = [str(p.relative_to(base)) for p, _ in folder.samples], [y for _, y in folder.samples]
    if recorded is not None:
        val_set = set(recorded["val"])
        missing = val_set - set(rel)
        if missing:
            raise ValueError(
                f"split.json lists {len(missing)} validation files no longer in {base}, e.g. {min(missing)}; "
                "restore them or start a new run in another --out"
            )
        val_idx = [i for i, r in enumerate(rel) if r in val_set]
        train_idx = [i for i, r in enumerate(rel) if r not in val_set]
        val_split, seed = recorded["val_split"], recorded["seed"]
    else:
        train_idx, val_idx = stratified_split(labels, val_split, seed)
    if not val_idx:
        raise ValueError(f"{base} has too few images for a validation split; add images or a {root}/val folder")
    record = {"root": str(base), "val_split": val_split, "seed": seed, "val": [rel[i] for i in val_idx]}

    def pick(idx: list[int]) -> Folder | PackedFolder:
        if isinstance(folder, PackedFolder):
            return folder.subset(idx)
        return Folder([folder.samples[i] for i in idx], folder.classes, base)

    desc = f"{base} with a seeded stratified {val_split:.0%} validation split ({len(val_idx)} images)"
    return FolderSplit(pick(train_idx), pick(val_idx), desc, record)


def read_split(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# --- the built-in dataset ---------------------------------------------------------------------


def load_digits(resolution: int) -> tuple[list[Image.Image], list[int], list[Image.Image], list[int]]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans) as RGB images of ``resolution``.

    The 0-16 grey levels are upsampled bilinearly and quantised to 8-bit RGB in memory, so the
    exported validation PNGs are exactly what the network was validated on. Fixed stratified 80/20 split.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ValueError(
            "the built-in digits dataset needs scikit-learn: pip install 'fdmobilenet[train]' (or pass --data DIR)"
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


class MemoryImageDataset(Dataset):
    """In-memory PIL images with ``ImageDataset``'s item format ``(tensor, label, index, None)``."""

    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int], transform: Callable):
        self.images, self.labels, self.transform = list(images), list(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i], i, None


# --- seeded augmentation and a resumable, shardable order ---------------------------------------


class SeededView(Dataset):
    """``view[(index, epoch)]`` is ``base[index]`` with the global torch RNG seeded from (seed, epoch, index)
    while the transform runs, so augmentation does not depend on workers, processes or where a run resumed."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, epoch, i))
            return self.base[i]


class EpochOrder(Sampler):
    """The indices this process reads in one epoch, from global step ``start_step`` on.

    The epoch is a permutation seeded by (seed, epoch) cut into global batches (the last partial
    one dropped); each global batch is split into ``world`` equal contiguous shards, one per rank.
    This is ``DistributedSampler`` plus the ability to skip the batches a resumed run already did.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, epoch: int, start_step: int = 0):
        if global_batch % world:
            raise ValueError(f"--batch-size {global_batch} must be divisible by the {world} processes")
        self.n, self.batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.epoch, self.start_step = seed, epoch, start_step

    @property
    def steps(self) -> int:
        return self.n // self.batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * (self.batch // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch))).tolist()
        per = self.batch // self.world
        for s in range(self.start_step, self.steps):
            lo = s * self.batch + self.rank * per
            for i in perm[lo : lo + per]:
                yield i, self.epoch


# --- bad data ---------------------------------------------------------------------------------


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
        files = (f for f in sorted(d.rglob("*")) if f.is_file() and not f.name.startswith("."))
        out += [str(f) for f in files if not is_image_file(f)]
    return out


def empty_classes(folder: Folder) -> list[str]:
    """Class folders of ``folder.root`` with no image files."""
    have = {y for _, y in folder.samples}
    return [str(folder.root / c) for i, c in enumerate(folder.classes) if i not in have and (folder.root / c).is_dir()]


__all__ = [
    "IMAGE_EXTENSIONS",
    "EpochOrder",
    "FolderSplit",
    "MemoryImageDataset",
    "SeededView",
    "empty_classes",
    "export_images",
    "find_bad_images",
    "load_digits",
    "load_folders",
    "non_image_files",
    "stratified_split",
]
