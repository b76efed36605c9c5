"""Model registry: ``create_model(name)`` and ``list_models()``, as in timm.

Every registered name is a thin builder over one of two classes; the FD-MobileNet and
MobileNet V1 builders differ only in the table they pass.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .mobilenet import FD_MOBILENET_TABLE, MOBILENET_V1_TABLE, DepthwiseSeparableNet, DSConfig
from .shufflenet import SHUFFLENET_STAGE_CHANNELS, ShuffleConfig, ShuffleNetV1

__all__ = [
    "DepthwiseSeparableNet",
    "ShuffleNetV1",
    "create_model",
    "list_models",
    "model_family",
    "default_cfg",
    "FAMILIES",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FAMILIES = ("fd_mobilenet", "mobilenet_v1", "shufflenet_v1")
_WIDTHS = {"025": 0.25, "050": 0.5, "075": 0.75, "100": 1.0, "150": 1.5, "200": 2.0}


def default_cfg(resolution: int = 224) -> dict[str, Any]:
    """The preprocessing a model expects (timm's ``pretrained_cfg`` keys)."""
    return {
        "input_size": (3, resolution, resolution),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_pct": 0.875,
        "interpolation": "bilinear",
    }


def _fd_mobilenet(width: float = 1.0, **kw: Any) -> DepthwiseSeparableNet:
    return _ds(FD_MOBILENET_TABLE, width, **kw)


def _mobilenet_v1(width: float = 1.0, **kw: Any) -> DepthwiseSeparableNet:
    return _ds(MOBILENET_V1_TABLE, width, **kw)


def _ds(table, width, num_classes=1000, dropout=0.0, features_only=False, out_indices=(0, 1, 2, 3)):
    cfg = DSConfig(table=table, width=float(width), num_classes=num_classes, dropout=dropout)
    return DepthwiseSeparableNet(cfg, features_only=features_only, out_indices=tuple(out_indices))


def _shufflenet_v1(
    width: float = 1.0, groups: int = 3, num_classes=1000, dropout=0.0, features_only=False, out_indices=(0, 1, 2, 3)
) -> ShuffleNetV1:
    cfg = ShuffleConfig(groups=int(groups), width=float(width), num_classes=num_classes, dropout=dropout)
    return ShuffleNetV1(cfg, features_only=features_only, out_indices=tuple(out_indices))


# name -> (builder, fixed keyword arguments). Bare family names take ``width=`` (and ``groups=``).
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "fd_mobilenet": (_fd_mobilenet, {}),
    "mobilenet_v1": (_mobilenet_v1, {}),
    "shufflenet_v1": (_shufflenet_v1, {}),
}
for _tag in ("025", "050", "075", "100"):
    _REGISTRY[f"fd_mobilenet_{_tag}"] = (_fd_mobilenet, {"width": _WIDTHS[_tag]})
    _REGISTRY[f"mobilenet_v1_{_tag}"] = (_mobilenet_v1, {"width": _WIDTHS[_tag]})
for _g in SHUFFLENET_STAGE_CHANNELS:
    for _tag in ("025", "050", "100", "150", "200"):
        _REGISTRY[f"shufflenet_v1_g{_g}_{_tag}"] = (_shufflenet_v1, {"groups": _g, "width": _WIDTHS[_tag]})


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, fixed-width variants before bare families."""
    import fnmatch

    names = [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=lambda n: (n in FAMILIES, n))


def model_family(name: str) -> str:
    """``fd_mobilenet``, ``mobilenet_v1`` or ``shufflenet_v1`` for any registered name."""
    _lookup(name)
    return next(f for f in FAMILIES if name.startswith(f))


def _lookup(name: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    if name not in _REGISTRY:
        # names that extend what was typed ('fd_mobilenet_05' -> 'fd_mobilenet_050') first, then look-alikes
        prefixed = [n for n in _REGISTRY if n.startswith(name) and n not in FAMILIES]
        close = list(dict.fromkeys(prefixed + difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)))[:3]
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} `fdmobilenet models` lists all {len(_REGISTRY)} names.")
    return _REGISTRY[name]


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: bool | str | os.PathLike = False,
    resolution: int = 224,
    mflops: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``pretrained`` is a path to a converted ``.safetensors`` file, or True to look for
    ``$FDM_WEIGHTS/<name>.safetensors`` (nothing is ever downloaded). ``mflops`` picks, for a bare
    family name, the width whose multiply-adds at ``resolution`` come closest to the budget.
    Other keyword arguments (``width``, ``groups``, ``dropout``, ``features_only``,
    ``out_indices``) go to the builder.
    """
    builder, fixed = _lookup(name)
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"{name!r} fixes {', '.join(sorted(clash))}; use the bare family name to choose it")
    if not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"resolution must be an integer >= 32 (these networks downsample 32x), got {resolution!r}")
    if mflops is not None:
        if fixed:
            raise ValueError(f"mflops= needs a bare family name ({', '.join(FAMILIES)}), not {name!r}")
        from ..complexity import solve_width

        kwargs["width"] = solve_width(name, mflops, resolution=resolution, groups=kwargs.get("groups", 3))
    model = builder(num_classes=num_classes, **fixed, **kwargs)
    model.pretrained_cfg = {**default_cfg(resolution), "architecture": name, "num_classes": num_classes}
    model.default_cfg = model.pretrained_cfg  # older timm name
    if pretrained:
        from ..weights import load_weights

        path = Path(pretrained) if not isinstance(pretrained, bool) else _weights_dir() / f"{name}.safetensors"
        meta = load_weights(model, path)
        model.pretrained_cfg.update({k: v for k, v in meta.items() if k in ("mean", "std", "crop_pct", "class_names")})
    return model


def _weights_dir() -> Path:
    d = os.environ.get("FDM_WEIGHTS")
    if not d:
        raise ValueError(
            "pretrained=True looks for $FDM_WEIGHTS/<name>.safetensors, but FDM_WEIGHTS is not set. "
            "Convert the authors' weights with `fdmobilenet convert SRC DST` and pass pretrained=DST."
        )
    return Path(d)
