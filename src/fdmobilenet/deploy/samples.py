"""Representative photos as preprocessed tensors: what export verification and INT8 calibration feed the models."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.images import BadImageError, is_image_file, load_image
from ..preprocess import Preprocess


def image_paths(root: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files anywhere under ``root`` (sorted, then a seeded sample of ``limit`` if there are more)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(Path(d) / f for d, names in _walk(root) for f in names if is_image_file(Path(d) / f))
    if not files:
        raise ValueError(f"{root} holds no image files (.jpg, .jpeg, .png, ...)")
    if limit is not None and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def _walk(root: Path) -> Iterator[tuple[str, list[str]]]:
    """(folder, file names) under ``root``, following symlinked folders (split datasets use them) but
    entering each real folder once: a link to a parent would otherwise loop without end."""
    seen: set[str] = set()
    for d, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        yield d, names


def load_batch(paths: Sequence[Path], preprocess: Preprocess | Mapping[str, Any]) -> torch.Tensor:
    """Preprocess images with the eval/predict transform (unreadable ones skipped); an (N, 3, R, R) tensor.

    ``preprocess`` is a ``Preprocess`` (callers that load several batches build it once) or the metadata
    dict it is read from. Unlike ``eval``, JPEGs much larger than the input are decoded in draft mode:
    this batch only feeds the PyTorch-vs-ONNX check and calibration, which see the same tensors either way.
    """
    if not isinstance(preprocess, Preprocess):
        preprocess = Preprocess.from_meta(preprocess)
    tf = preprocess.transform()
    out = []
    for p in paths:
        with contextlib.suppress(BadImageError):
            out.append(tf(load_image(p, preprocess.resolution)))
    if not out:
        raise ValueError(f"none of the {len(paths)} images could be read")
    return torch.stack(out)
