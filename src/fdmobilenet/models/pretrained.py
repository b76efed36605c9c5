"""Weights that know their model: conversion of the authors' files and building from a weights file.

The file formats live in ``weights.py``; this module adds what needs the registry: which model a
state dict belongs to (derived from the settings tables), and the metadata written with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..preprocess import Preprocess, imagenet_classes
from ..weights import check_state_dict, read_weights, save_weights
from ._registry import WIDTHS, create_model
from .mobilenet import checkpoint_filter_fn, infer_table_and_width

_NAMED = {w: tag for tag, w in WIDTHS.items() if tag in ("025", "050", "075", "100")}


def infer_model_name(sd: dict[str, torch.Tensor]) -> str:
    """The registered FD-MobileNet/MobileNet V1 name of a state dict (ours or the authors')."""
    family, width = infer_table_and_width(sd, _NAMED)
    return f"{family}_{_NAMED[width]}"


def read_pretrained(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(state dict in our key names, metadata, model name) of a weights file of any supported kind."""
    sd, meta = read_weights(path)
    sd = checkpoint_filter_fn(sd)
    return sd, meta, meta.get("model") or infer_model_name(sd)


def convert(src: str | os.PathLike, dst: str | os.PathLike, model_name: str | None = None) -> dict[str, Any]:
    """Convert an authors' checkpoint to safetensors with metadata; returns the metadata written.

    The model is built and loaded once before writing, so a file that would not load is never written.
    """
    if Path(dst).is_dir():
        raise ValueError(f"{dst} is a folder; give the output file, e.g. {Path(dst) / 'model.safetensors'}")
    sd, src_meta = read_weights(src)
    sd = checkpoint_filter_fn(sd)
    name = model_name or infer_model_name(sd)
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 1000
    model = create_model(name, num_classes=num_classes)
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


def build_from_weights(
    path: str | os.PathLike, model_name: str | None = None, resolution: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a weights file was made for (name and class count from its metadata) and load it."""
    sd, meta, inferred = read_pretrained(path)
    Preprocess.from_meta(meta, resolution, source=str(path))  # absurd metadata is refused before anything is built
    name = model_name or inferred
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else meta.get("num_classes", 1000)
    kwargs = meta.get("model_kwargs", {})  # e.g. width= of a bare family name picked by a budget
    model = create_model(name, num_classes=num_classes, resolution=resolution or meta.get("resolution", 224), **kwargs)
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=False)
    model.eval()
    meta.setdefault("model", name)
    return model, meta
