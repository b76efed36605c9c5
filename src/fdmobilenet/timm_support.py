"""Register every fdmobilenet model with timm, so timm's tooling (train scripts, benchmarks,
``timm.create_model``) can use them. Importing this module registers; ``import fdmobilenet``
does it too when timm is already imported (timm is optional and slow to import).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .models import create_model, list_models

# timm's generic keyword arguments these networks cannot honour: accepted values and why.
_REFUSED = {
    "drop_path_rate": ((None, 0, 0.0), "these networks have no residual branches to drop"),
    "global_pool": ((None, "avg"), "the head is global average pooling"),
    "in_chans": ((None, 3), "the networks take RGB input"),
}


def _entrypoint(name: str) -> Callable[..., Any]:
    def fn(pretrained: bool | str = False, **kwargs: Any):
        overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
        model = create_model(name, pretrained=pretrained, **_from_timm(name, kwargs))
        model.pretrained_cfg.update(overlay)
        return model

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"fdmobilenet's {name} (see fdmobilenet.create_model)."
    return fn


def _from_timm(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm's keyword arguments in ours; what cannot be honoured is refused, never silently dropped."""
    kw = dict(kwargs)
    kw.pop("pretrained_cfg", None)  # timm's resolved default; the model sets its own
    if kw.get("cache_dir") is None:
        kw.pop("cache_dir", None)
    drop = kw.pop("drop_rate", None)
    if drop:
        kw["dropout"] = drop
    for key, (ok, why) in _REFUSED.items():
        value = kw.pop(key, None)
        if value not in ok:
            raise ValueError(f"{name} does not support {key}={value!r}: {why} (accepted: {ok[-1]!r})")
    return kw


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
