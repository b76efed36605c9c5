"""Register every fdmobilenet model with timm, so timm's tooling (train scripts, benchmarks,
``timm.create_model``) can use them. Importing this module registers; ``import fdmobilenet``
does it too when timm is already imported (timm is optional and slow to import).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .models import create_model, list_models

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "drop_rate", "drop_path_rate", "global_pool")


def _entrypoint(name: str) -> Callable[..., Any]:
    def fn(pretrained: bool | str = False, **kwargs: Any):
        if kwargs.get("drop_rate"):
            kwargs["dropout"] = kwargs["drop_rate"]
        for k in _TIMM_ONLY:
            kwargs.pop(k, None)
        if "in_chans" in kwargs and kwargs.pop("in_chans") != 3:
            raise ValueError(f"{name} takes RGB input only (in_chans=3)")
        return create_model(name, pretrained=pretrained, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"fdmobilenet's {name} (see fdmobilenet.create_model)."
    return fn


def register() -> list[str]:
    """Register all names with timm; returns them. Safe to call more than once."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints

    names = []
    for name in list_models():
        if name not in _model_entrypoints or _model_entrypoints[name].__module__ != __name__:
            fn = _entrypoint(name)
            setattr(sys.modules[__name__], name, fn)
            register_model(fn)
        names.append(name)
    return names


register()
