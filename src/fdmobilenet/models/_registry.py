"""The model registry: ``create_model(name)`` and ``list_models()``, as in timm.

Every registered name is a thin builder over one of two classes; the FD-MobileNet and
MobileNet V1 builders differ only in the table they pass.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..complexity import profile
from ..preprocess import Preprocess
from ..weights import load_weights
from .mobilenet import TABLES, DepthwiseSeparableNet, DSConfig
from .shufflenet import SHUFFLENET_STAGE_CHANNELS, ShuffleConfig, ShuffleNetV1
from .torchvision_nets import TORCHVISION_FAMILIES, build_torchvision

PAPER_FAMILIES = ("fd_mobilenet", "mobilenet_v1", "shufflenet_v1")  # the paper's comparison: the defaults
FAMILIES = (*PAPER_FAMILIES, *TORCHVISION_FAMILIES)
WIDTHS = {"025": 0.25, "050": 0.5, "075": 0.75, "100": 1.0, "150": 1.5, "200": 2.0}
# The authors released ImageNet weights for these two widths (github.com/clavichord93/FD-MobileNet).
RELEASED_WIDTHS = {"fd_mobilenet_025": 0.25, "fd_mobilenet_050": 0.5}


def default_cfg(resolution: int = 224) -> dict[str, Any]:
    """The preprocessing a model expects (timm's ``pretrained_cfg`` keys)."""
    return Preprocess(resolution).pretrained_cfg()


def family_kwargs(family: str, groups: int | None = None) -> dict[str, Any]:
    """What a bare family name takes besides ``width``: ShuffleNet's group count (default 3)."""
    return {"groups": 3 if groups is None else int(groups)} if family == "shufflenet_v1" else {}


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


# name -> (builder, fixed keyword arguments). Bare family names take ``width=`` (and ``groups=``).
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "fd_mobilenet": (_fd_mobilenet, {}),
    "mobilenet_v1": (_mobilenet_v1, {}),
    "shufflenet_v1": (_shufflenet_v1, {}),
    **{fam: (functools.partial(build_torchvision, fam), {}) for fam in TORCHVISION_FAMILIES},
}
for _tag in ("025", "050", "075", "100"):
    _REGISTRY[f"fd_mobilenet_{_tag}"] = (_fd_mobilenet, {"width": WIDTHS[_tag]})
    _REGISTRY[f"mobilenet_v1_{_tag}"] = (_mobilenet_v1, {"width": WIDTHS[_tag]})
for _g in SHUFFLENET_STAGE_CHANNELS:
    for _tag in ("025", "050", "100", "150", "200"):
        _REGISTRY[f"shufflenet_v1_g{_g}_{_tag}"] = (_shufflenet_v1, {"groups": _g, "width": WIDTHS[_tag]})


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, fixed-width variants before bare families."""
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

    ``pretrained`` is a weights file (converted ``.safetensors``, ours or the authors' ``.pth.tar``), or
    True: ``$FDM_WEIGHTS/<name>.safetensors`` when that variable is set, else the authors' released
    file, downloaded once (checksum-checked) and converted into torch.hub's cache (``models/hub.py``).
    With another ``num_classes`` than the weights', the classifier is re-initialised (timm's
    convention); ``num_classes=0`` gives pooled features. ``mflops`` picks, for a bare family name,
    the width whose multiply-adds at ``resolution`` come closest to the budget. Other keyword
    arguments (``width``, ``groups``, ``dropout``, ``features_only``, ``out_indices``) go to the
    builder; anything else is refused.
    """
    builder, fixed = _lookup(name)
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"{name!r} fixes {', '.join(sorted(clash))}; use the bare family name to choose it")
    unknown = set(kwargs) - _builder_args(builder) - {"cache_dir"}
    if unknown:
        raise ValueError(
            f"{name!r} does not take {', '.join(sorted(unknown))} "
            f"(it takes {', '.join(sorted(_builder_args(builder) - set(fixed) - {'num_classes'}))})"
        )
    cache = kwargs.pop("cache_dir", None)
    if not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"resolution must be an integer >= 32 (these networks downsample 32x), got {resolution!r}")
    if mflops is not None:
        if fixed:
            raise ValueError(f"mflops= needs a bare family name ({', '.join(FAMILIES)}), not {name!r}")
        kwargs["width"] = solve_width(name, mflops, resolution=resolution, groups=kwargs.get("groups", 3))
    model = builder(num_classes=num_classes, **fixed, **kwargs)
    model.pretrained_cfg = {**default_cfg(resolution), "architecture": name, "num_classes": num_classes}
    model.default_cfg = model.pretrained_cfg  # older timm name
    if pretrained:
        path = _pretrained_path(name, cache) if isinstance(pretrained, bool) else Path(pretrained)
        meta = load_weights(model, path, strict_classifier=False)
        keys = ("mean", "std", "crop_pct", "interpolation")
        if meta.get("num_classes", num_classes) == num_classes:
            keys += ("class_names",)
        model.pretrained_cfg.update({k: v for k, v in meta.items() if k in keys})
    return model


def _builder_args(builder: Callable[..., nn.Module]) -> set[str]:
    """The keyword arguments a builder takes (its ``**kw`` resolved to ``_ds``'s)."""
    params = inspect.signature(builder).parameters
    names = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names |= set(inspect.signature(_ds).parameters) - {"table"}
    return names


def _pretrained_path(name: str, cache: str | os.PathLike | None) -> Path:
    """``$FDM_WEIGHTS/<name>.safetensors`` when set (offline use), else the released file via the cache."""
    from .hub import RELEASES, released_weights

    d = os.environ.get("FDM_WEIGHTS")
    if d:
        return Path(d) / f"{name}.safetensors"
    if name not in RELEASES:
        raise ValueError(
            f"no released weights for {name!r} (the authors released {', '.join(RELEASES)}); "
            "pass pretrained=PATH to a weights file, or set $FDM_WEIGHTS to a folder of <name>.safetensors"
        )
    return released_weights(name, cache)


def solve_width(family: str, mflops: float, resolution: int = 224, groups: int = 3) -> float:
    """The width multiplier whose MACs at ``resolution`` come closest to ``mflops`` million.

    MACs grow monotonically (roughly quadratically) with width, so bisection on the width finds
    the budget; channel rounding makes MACs a step function, so the nearest step is returned.
    """
    if family not in FAMILIES:
        raise ValueError(f"mflops= needs one of {', '.join(FAMILIES)}, got {family!r}")
    if mflops <= 0:
        raise ValueError(f"mflops must be > 0, got {mflops}")
    extra = family_kwargs(family, groups)

    def macs(w: float) -> float:
        with torch.device("meta"):  # shapes only: a 600 MMAC model profiles in milliseconds
            model = create_model(family, width=w, resolution=resolution, **extra)
        return profile(model, resolution).macs / 1e6

    lo, hi = 0.02, 2.0
    while macs(hi) < mflops and hi < 64:
        lo, hi = hi, hi * 2
    if macs(hi) < mflops or macs(lo) > mflops:
        raise ValueError(
            f"{mflops} MFLOPs is outside what {family} reaches at {resolution} px "
            f"({macs(lo):.1f}-{macs(hi):.0f} M); change the resolution or the budget"
        )
    for _ in range(16):
        mid = (lo + hi) / 2
        m = macs(mid)
        if abs(m - mflops) < 0.002 * mflops:
            return round(mid, 4)
        lo, hi = (mid, hi) if m < mflops else (lo, mid)
    best = min((lo, hi), key=lambda w: abs(macs(w) - mflops))
    return round(best, 4)
