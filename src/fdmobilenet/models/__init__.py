"""Models: the registry (``create_model``, ``list_models``), the two network classes and their
settings tables, and building from weights files. Re-exports only."""

from ._registry import (
    FAMILIES,
    PAPER_FAMILIES,
    RELEASED_WIDTHS,
    WIDTHS,
    create_model,
    default_cfg,
    family_kwargs,
    list_models,
    model_family,
    solve_width,
)
from .mobilenet import DepthwiseSeparableNet
from .pretrained import build_from_weights, convert, infer_model_name, read_pretrained
from .shufflenet import ShuffleNetV1

__all__ = [
    "FAMILIES",
    "PAPER_FAMILIES",
    "RELEASED_WIDTHS",
    "WIDTHS",
    "DepthwiseSeparableNet",
    "ShuffleNetV1",
    "build_from_weights",
    "convert",
    "create_model",
    "default_cfg",
    "family_kwargs",
    "infer_model_name",
    "list_models",
    "model_family",
    "read_pretrained",
    "solve_width",
]
