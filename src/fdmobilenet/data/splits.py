"""Train/val splits of ``--data``: DIR/train + DIR/val, or DIR/<class>/<images> split here with a
seeded stratified split (recorded in split.json so a resumed run keeps it), or the output of
``fdmobilenet prepare``; every layout ends in one ``FolderSplit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import _schema
from .._errors import ParameterError, ParameterPathError
from .._utils import mix
from ..preprocess import imagenet_classes, imagenet_label_names
from .folders import Folder, scan_folder
from .images import is_image_file
from .packed import PackedFolder, is_packed

LAYOUT_HELP = (
    "expected DIR/train/<class>/<images> and DIR/val/<class>/<images> (the ImageNet layout), "
    "or DIR/<class>/<images> (a seeded validation split is then made with `val_split`); "
    "DIR, DIR/train or DIR/val may also be the output of `fdmobilenet prepare`"
)


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): each class gives round(fraction * n) samples (at least one when it has two or more)."""
    if not 0 < fraction < 1:
        raise ParameterError("val_split", f"`val_split` must be between 0 and 1 (exclusive), got {fraction}")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train, val = [], []
    for y in sorted(by_class):
        idx = by_class[y]
        order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(mix(seed, y))).tolist()
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


def check_layout(base: Path) -> None:
    """Refuse a training folder whose layout is wrong, before a run trains on it: images at its top
    level (they would be ignored), or a single class folder (a 1-class classifier scores 100 % and
    learns nothing) -- usually ``data`` pointing one level above the class folders."""
    if is_packed(base):
        return
    top = sorted(p.name for p in base.iterdir() if p.is_file() and is_image_file(p))
    dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if top:
        raise ParameterError(
            "data",
            f"{base} has {len(top)} image(s) at its top level (e.g. {top[0]}), which training ignores; "
            f"put them in one sub-folder per class, {base}/<class>/<images>",
        )
    if len(dirs) == 1:
        inner = dirs[0]
        nested = any(p.is_dir() and not p.name.startswith(".") for p in inner.iterdir())
        hint = f"point `data` at {inner} (its sub-folders look like the classes)" if nested else "add class folders"
        raise ParameterError(
            "data", f"{base} has a single class folder ({inner.name}); a classifier needs two or more: {hint}"
        )


def load_folders(data: str | Path, val_split: float, seed: int, recorded: dict | None = None) -> FolderSplit:
    """The train and val image lists of ``data``; a folder of classes is split (stratified, seeded).

    Any of ``data``, ``data/train`` and ``data/val`` may be a prepared (``fdmobilenet prepare``) folder.
    ``recorded`` is a previous ``split.json`` (on resume): its validation files are used as they are.
    """
    root = Path(data)
    if not root.is_dir():
        raise ParameterPathError("data", f"`data` {root} does not exist; {LAYOUT_HELP}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = _open(root / "train")
        try:
            val = _open(root / "val", train.classes)
        except ValueError as e:
            raise ValueError(f"{root}/val does not match {root}/train: {e}") from None
        check_layout(root / "train")
        train, val = dataset_classes(train, val)
        return FolderSplit(train, val, f"{root}/train and {root}/val", None)
    base = root / "train" if (root / "train").is_dir() else root
    try:
        folder = _open(base)
    except ValueError as e:
        raise ValueError(f"{e}; {LAYOUT_HELP}") from None
    check_layout(base)
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
                "restore them or start a new run in another `out`"
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
    return FolderSplit(*dataset_classes(pick(train_idx), pick(val_idx)), desc, record)


Part = Folder | PackedFolder


def dataset_classes(train: Part, val: Part) -> tuple[Part, Part]:
    """Synset folders are read in the 1000-class ImageNet order; a run trains on the classes its data has.

    Imagenette's 10 synset folders would otherwise give a 1000-way classifier whose 990 unused rows
    hold two thirds of a 0.25x model's parameters. The kept classes stay in ImageNet order, named
    by ``imagenet_label_names`` (so ``preprocess.imagenet_rows`` finds their rows again for fine-tuning).
    """
    if list(train.classes) != imagenet_classes()[1]:
        return train, val
    present = sorted({*_labels(train), *_labels(val)})
    if len(present) == len(train.classes):
        return train, val
    names = [imagenet_label_names()[i] for i in present]
    remap = np.full(len(train.classes), -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    return relabelled(train, names, remap), relabelled(val, names, remap)


def _labels(part: Part) -> list[int]:
    return part.labels.tolist() if isinstance(part, PackedFolder) else [y for _, y in part.samples]


def relabelled(part: Part, names: list[str], remap: np.ndarray) -> Part:
    """``part`` with label ``y`` replaced by ``remap[y]`` and the classes by ``names``."""
    if isinstance(part, PackedFolder):
        rows = part.rows.copy()
        rows[:, 3] = remap[rows[:, 3]]
        return PackedFolder(part.root, names, rows, part._maps)
    return Folder([(p, int(remap[y])) for p, y in part.samples], names, part.root)


def read_split(path: Path) -> dict | None:
    """A run's recorded split, or None; a damaged file is an error naming it (it decides the validation set)."""
    if not path.is_file():
        return None
    try:
        return _schema.split_record(_schema.read_json(path, what="split.json"), path)
    except _schema.FileError as e:
        raise ParameterError("out", f"{e}; restore it, or train into another `out`") from None
