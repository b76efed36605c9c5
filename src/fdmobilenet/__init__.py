"""FD-MobileNet (Fast-Downsampling MobileNet, arXiv 1802.03750) and its baselines, as usable software."""

import sys

from .complexity import Profile, profile, solve_width
from .models import create_model, list_models
from .weights import build_from_weights, convert, load_weights, save_weights

__version__ = "0.1.0"

if "timm" in sys.modules:  # register with timm only if the user already uses it (timm is slow to import)
    from . import timm_support  # noqa: F401

__all__ = [
    "Profile",
    "build_from_weights",
    "convert",
    "create_model",
    "list_models",
    "load_weights",
    "profile",
    "save_weights",
    "solve_width",
]
