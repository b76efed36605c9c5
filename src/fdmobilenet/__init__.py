"""FD-MobileNet (Fast-Downsampling MobileNet, arXiv 1802.03750) and its baselines, as usable software.

The public names are imported on first use (PEP 562), so ``fdmobilenet --help`` and other
light uses of the package do not pay for importing torch.
"""

from __future__ import annotations

import sys

from ._utils import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if "timm" in sys.modules:  # register with timm only if the user already uses it (timm is slow to import)
    from . import timm_support  # noqa: F401
