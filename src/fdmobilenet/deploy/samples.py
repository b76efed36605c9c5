"""Representative photos as preprocessed tensors: what export verification and INT8 calibration feed the models."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.images import BadImageError, find_images, load_image
from ..preprocess import Preprocess


def image_paths(root: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files anywhere under ``root`` (``find_images``: the files ``predict DIR`` sees), then a seeded
    sample of ``limit`` if there are more."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = find_images(root)
    if not files:
        raise ValueError(f"{root} holds no image files (.jpg, .jpeg, .png, ...)")
    if limit is not None and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


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
