"""Model names, the bottom layer: which names exist, their family and the keyword arguments each fixes.

Classifier families (``FAMILIES``) and detector families (``DETECTOR_FAMILIES``: SSDLite on any classifier
backbone, ``ssdlite_<classifier name>``) share one table; ``model_task`` tells them apart and
``list_models`` lists classifiers unless asked for detectors, since every classifier tool iterates it.

Pure data (no torch, no file I/O), so ``fdmobilenet models`` and name checks stay instant. What a
family is built from lives a layer up, in ``_builder.py``; the shape is timm's ``_registry``.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any

PAPER_FAMILIES = ("fd_mobilenet", "mobilenet_v1", "shufflenet_v1")  # the paper's comparison: the defaults
TORCHVISION_FAMILIES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "shufflenet_v2")
FAMILIES = (*PAPER_FAMILIES, *TORCHVISION_FAMILIES)  # classifier families
DETECTOR_FAMILIES = ("ssdlite",)  # detectors: a classifier backbone (fixed kwarg ``backbone``) plus a detection head
TASKS = ("classification", "detection")
WIDTHS = {"025": 0.25, "050": 0.5, "075": 0.75, "100": 1.0, "150": 1.5, "200": 2.0}
SHUFFLENET_GROUPS = (1, 2, 3, 4, 8)  # the paper's Table 1 (shufflenet.SHUFFLENET_STAGE_CHANNELS has one row each)

# name -> (family, fixed keyword arguments). Bare family names fix nothing: they take ``width=`` (and ``groups=``).
_MODELS: dict[str, tuple[str, dict[str, Any]]] = {}


def register_model(name: str, family: str, **fixed: Any) -> str:
    """Add ``name`` as ``family`` with ``fixed`` keyword arguments; a name is registered once only."""
    if family not in FAMILIES and family not in DETECTOR_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join((*FAMILIES, *DETECTOR_FAMILIES))}")
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = (family, fixed)
    return name


for _fam in FAMILIES:
    register_model(_fam, _fam)
for _tag in ("025", "050", "075", "100"):
    register_model(f"fd_mobilenet_{_tag}", "fd_mobilenet", width=WIDTHS[_tag])
    register_model(f"mobilenet_v1_{_tag}", "mobilenet_v1", width=WIDTHS[_tag])
for _g in SHUFFLENET_GROUPS:
    for _tag in ("025", "050", "100", "150", "200"):
        register_model(f"shufflenet_v1_g{_g}_{_tag}", "shufflenet_v1", groups=_g, width=WIDTHS[_tag])
# An SSDLite detector on every classifier name: ``ssdlite_fd_mobilenet_050`` (width fixed by its backbone),
# ``ssdlite_mobilenet_v2`` (a bare family: takes width=), and ``ssdlite`` itself (takes backbone= and width=).
register_model("ssdlite", "ssdlite")
for _name in [n for n, (f, _) in _MODELS.items() if f in FAMILIES]:
    register_model(f"ssdlite_{_name}", "ssdlite", backbone=_name)


def model_task(name: str) -> str:
    """``"classification"`` or ``"detection"``: what a registered name's model returns."""
    return "detection" if lookup(name)[0] in DETECTOR_FAMILIES else "classification"


def is_bare(name: str) -> bool:
    """Whether a registered name leaves the width open (a family name, or a detector on one)."""
    family, fixed = lookup(name)
    if family in DETECTOR_FAMILIES:
        return "backbone" not in fixed or is_bare(fixed["backbone"])
    return not fixed


def list_models(pattern: str = "*", task: str | None = "classification") -> list[str]:
    """Registered names matching a shell-style pattern, fixed-width variants before bare families.

    ``task`` is ``"classification"`` (the default: what every classifier tool, timm and torch.hub
    iterate), ``"detection"`` (the ``ssdlite*`` names) or None for every name.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} or None, got {task!r}")
    names = [n for n in _MODELS if fnmatch.fnmatch(n, pattern) and (task is None or model_task(n) == task)]
    return sorted(names, key=lambda n: (is_bare(n), n))


def is_model(name: str) -> bool:
    """Whether ``name`` is registered (timm's ``is_model``)."""
    return name in _MODELS


def lookup(name: str) -> tuple[str, dict[str, Any]]:
    """(family, fixed keyword arguments) of a registered name; an unknown name fails with suggestions."""
    if name not in _MODELS:
        # names that extend what was typed ('fd_mobilenet_05' -> 'fd_mobilenet_050') first, then look-alikes
        prefixed = [n for n in _MODELS if n.startswith(name) and not is_bare(n)]
        close = list(dict.fromkeys(prefixed + difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)))[:3]
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} `fdmobilenet models` lists all {len(_MODELS)} names.")
    family, fixed = _MODELS[name]
    return family, dict(fixed)


def model_family(name: str) -> str:
    """``fd_mobilenet``, ``mobilenet_v1``, ``shufflenet_v1`` (or a torchvision family, or ``ssdlite`` for a
    detector) for any registered name."""
    return lookup(name)[0]


def family_kwargs(family: str, groups: int | None = None) -> dict[str, Any]:
    """What a bare family name takes besides ``width``: ShuffleNet's group count (default 3)."""
    return {"groups": 3 if groups is None else int(groups)} if family == "shufflenet_v1" else {}
