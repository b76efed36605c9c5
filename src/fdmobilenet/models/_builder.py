"""Architectures from names: each family's builder and checkpoint key map (timm's ``pretrained_filter_fn``).

``build_model`` makes an untrained classifier of a registered name and nothing else; weights are the
business of ``pretrained.py`` and ``create_model`` (``_factory.py``) above it. Detectors are built a
layer up, in ``detection.py``, from the backbones built here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..preprocess import Preprocess
from ._registry import DETECTOR_FAMILIES, TORCHVISION_FAMILIES, lookup
from .mobilenet import TABLES, DepthwiseSeparableNet, DSConfig, checkpoint_filter_fn
from .shufflenet import ShuffleConfig, ShuffleNetV1
from .torchvision_nets import build_torchvision

StateDict = dict[str, torch.Tensor]


def default_cfg(resolution: int = 224) -> dict[str, Any]:
    """The preprocessing a model expects (timm's ``pretrained_cfg`` keys)."""
    return Preprocess(resolution).pretrained_cfg()


def _fd_mobilenet(width: float = 1.0, **kw: Any) -> DepthwiseSeparableNet:
    return _ds(TABLES["fd_mobilenet"], width, **kw)


def _mobilenet_v1(width: float = 1.0, **kw: Any) -> DepthwiseSeparableNet:
    return _ds(TABLES["mobilenet_v1"], width, **kw)


def _ds(table, width, num_classes=1000, dropout=0.0, features_only=False, out_indices=(0, 1, 2, 3)):
    cfg = DSConfig(table=table, width=float(width), num_classes=num_classes, dropout=dropout)
    return DepthwiseSeparableNet(cfg, features_only=features_only, out_indices=tuple(out_indices))


def _shufflenet_v1(
    width: float = 1.0, groups: int = 3, num_classes=1000, dropout=0.0, features_only=False, out_indices=(0, 1, 2, 3)
) -> ShuffleNetV1:
    cfg = ShuffleConfig(groups=int(groups), width=float(width), num_classes=num_classes, dropout=dropout)
    return ShuffleNetV1(cfg, features_only=features_only, out_indices=tuple(out_indices))


def _unchanged(sd: StateDict) -> StateDict:
    return sd


# family -> (builder, pretrained_filter_fn: a checkpoint's keys in this family's names)
_FAMILY_BUILDERS: dict[str, tuple[Callable[..., nn.Module], Callable[[StateDict], StateDict]]] = {
    "fd_mobilenet": (_fd_mobilenet, checkpoint_filter_fn),
    "mobilenet_v1": (_mobilenet_v1, checkpoint_filter_fn),
    "shufflenet_v1": (_shufflenet_v1, _unchanged),
    **{fam: (functools.partial(build_torchvision, fam), _unchanged) for fam in TORCHVISION_FAMILIES},
}


def pretrained_filter_fn(name: str) -> Callable[[StateDict], StateDict]:
    """The key map that turns a checkpoint for ``name`` (the authors' or ours) into this package's names."""
    family = lookup(name)[0]
    return _unchanged if family in DETECTOR_FAMILIES else _FAMILY_BUILDERS[family][1]


def _classifier_family(name: str) -> str:
    family = lookup(name)[0]
    if family in DETECTOR_FAMILIES:
        raise ValueError(f"{name!r} is a detector; build it with create_model({name!r}, ...) (models/detection.py)")
    return family


def builder_args(name: str) -> set[str]:
    """The keyword arguments ``name``'s builder takes (a ``**kw`` resolved to ``_ds``'s)."""
    params = inspect.signature(_FAMILY_BUILDERS[_classifier_family(name)][0]).parameters
    names = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names |= set(inspect.signature(_ds).parameters) - {"table"}
    return names


def check_model_kwargs(name: str, kwargs: dict[str, Any], also: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Refuse keyword arguments ``name`` fixes or its builder does not take (``also`` are allowed on top);
    returns the arguments ``name`` fixes."""
    _, fixed = lookup(name)
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"{name!r} fixes {', '.join(sorted(clash))}; use the bare family name to choose it")
    takes = builder_args(name)
    unknown = set(kwargs) - takes - also
    if unknown:
        raise ValueError(
            f"{name!r} does not take {', '.join(sorted(unknown))} "
            f"(it takes {', '.join(sorted(takes - set(fixed) - {'num_classes'}))})"
        )
    return fixed


def check_resolution(resolution: Any) -> None:
    if not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"resolution must be an integer >= 32 (these networks downsample 32x), got {resolution!r}")


def build_model(name: str, num_classes: int = 1000, resolution: int = 224, **kwargs: Any) -> nn.Module:
    """An untrained ``name`` with its ``pretrained_cfg`` (preprocessing at ``resolution``); no weights loaded."""
    fixed = check_model_kwargs(name, kwargs)
    check_resolution(resolution)
    model = _FAMILY_BUILDERS[_classifier_family(name)][0](num_classes=num_classes, **fixed, **kwargs)
    model.pretrained_cfg = {**default_cfg(resolution), "architecture": name, "num_classes": num_classes}
    model.default_cfg = model.pretrained_cfg  # older timm name
    return model
