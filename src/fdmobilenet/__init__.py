"""FD-MobileNet (Fast-Downsampling MobileNet, arXiv 1802.03750) and its baselines, as usable software.

The public names are imported on first use (PEP 562), so ``fdmobilenet --help`` and other
light uses of the package do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Preprocess": "preprocess",
    "Profile": "complexity",
    "profile": "complexity",
    "build_from_weights": "models",
    "convert_authors_checkpoint": "models",
    "create_model": "models",
    "list_models": "models",
    "solve_width": "models",
    "load_weights": "weights",
    "save_weights": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if "timm" in sys.modules:  # register with timm only if the user already uses it (timm is slow to import)
    from . import timm_support  # noqa: F401
