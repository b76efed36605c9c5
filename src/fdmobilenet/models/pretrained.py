"""Weights that know their model: the authors' checkpoints converted, the released ones cached, and
models built from a weights file.

The file formats live in ``weights.py`` and downloads in ``hub.py``; this module adds what needs an
architecture (``_builder.py``): which model a state dict belongs to (derived from the settings tables),
each family's key map (its ``pretrained_filter_fn``) and the metadata written with converted weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..preprocess import Preprocess, imagenet_classes
from ..weights import check_state_dict, read_weights, save_weights
from ._builder import build_model, pretrained_filter_fn
from ._registry import WIDTHS, is_model
from ._releases import RELEASES
from .hub import converted_path, fetch_release
from .mobilenet import infer_table_and_width

_NAMED = {w: tag for tag, w in WIDTHS.items() if tag in ("025", "050", "075", "100")}


def infer_model_name(sd: dict[str, torch.Tensor]) -> str:
    """The registered FD-MobileNet/MobileNet V1 name of a state dict (ours or the authors')."""
    family, width = infer_table_and_width(sd, _NAMED)
    return f"{family}_{_NAMED[width]}"


def _filtered(sd: dict[str, torch.Tensor], name: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in our key names, model name): the name given, else inferred from the weights. An
    unregistered name keeps the keys as they are; building it fails later with the list of names."""
    name = name or infer_model_name(sd)
    return (pretrained_filter_fn(name)(sd) if is_model(name) else sd), name


def read_pretrained(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(state dict in our key names, metadata, model name) of a weights file of any supported kind."""
    sd, meta = read_weights(path)
    sd, name = _filtered(sd, meta.get("model"))
    return sd, meta, name


def convert_authors_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, model_name: str | None = None
) -> dict[str, Any]:
    """Convert an authors' ``.pth.tar`` checkpoint (or any state-dict file) to our safetensors with metadata;
    returns the metadata written.

    The model is built and loaded once before writing, so a file that would not load is never written.
    """
    if Path(dst).is_dir():
        raise ValueError(f"{dst} is a folder; give the output file, e.g. {Path(dst) / 'model.safetensors'}")
    sd, src_meta = read_weights(src)
    sd, name = _filtered(sd, model_name)
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 1000
    model = build_model(name, num_classes=num_classes)
    check_state_dict(model, sd, str(src))
    meta: dict[str, Any] = {
        "model": name,
        "num_classes": num_classes,
        **Preprocess(224).to_meta(),
        "source": src_meta.get("source_name", Path(src).name),
    }
    if num_classes == 1000:
        synsets, names = imagenet_classes()
        meta["class_names"] = names
        meta["synsets"] = synsets
    model.load_state_dict(sd, strict=False)
    save_weights(model.state_dict(), dst, meta)
    return meta


def released_weights(name: str, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The converted safetensors of ``name``'s released weights, fetched (``hub.py``) and converted on first use."""
    converted = converted_path(name, root)
    if not converted.is_file():
        convert_authors_checkpoint(fetch_release(name, root, progress), converted, name)
    return converted


def pretrained_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """What ``pretrained=True`` loads: ``$FDM_WEIGHTS/<name>.safetensors`` when set (offline use), else the
    released file via the cache."""
    d = os.environ.get("FDM_WEIGHTS")
    if d:
        return Path(d) / f"{name}.safetensors"
    if name not in RELEASES:
        raise ValueError(
            f"no released weights for {name!r} (the authors released {', '.join(RELEASES)}); "
            "pass pretrained=PATH to a weights file, or set $FDM_WEIGHTS to a folder of <name>.safetensors"
        )
    return released_weights(name, cache)


def build_from_weights(
    path: str | os.PathLike, model_name: str | None = None, resolution: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a weights file was made for (name and class count from its metadata) and load it."""
    sd, meta, inferred = read_pretrained(path)
    Preprocess.from_meta(meta, resolution, source=str(path))  # absurd metadata is refused before anything is built
    name = model_name or inferred
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else meta.get("num_classes", 1000)
    kwargs = meta.get("model_kwargs", {})  # e.g. width= of a bare family name picked by a budget
    model = build_model(name, num_classes=num_classes, resolution=resolution or meta.get("resolution", 224), **kwargs)
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=False)
    model.eval()
    meta.setdefault("model", name)
    return model, meta
