"""``create_model``, the top of the models stack: an architecture (``_builder.py``), weights on request
(``pretrained.py``), and a width solved from a multiply-add budget (``solve_width``).

``python -m fdmobilenet.models._factory`` regenerates ``_complexity_table.py``, the MACs and parameters
``fdmobilenet models`` prints without building anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..complexity import profile
from ..weights import load_weights, read_weights
from ._builder import build_model, check_model_kwargs, check_resolution
from ._registry import FAMILIES, family_kwargs, list_models, lookup, model_task
from .pretrained import (
    ANCHOR_SCALES,
    POSTPROCESS_KEYS,
    detector_num_classes,
    is_detector_meta,
    load_backbone_weights,
    load_detector_weights,
    pretrained_path,
)


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: bool | str | os.PathLike = False,
    resolution: int | None = None,
    mflops: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model: a classifier, or an ``ssdlite*`` detector (``models/detection.py``).

    ``pretrained`` is a weights file (converted ``.safetensors``, ours or the authors' ``.pth.tar``), or
    True: ``$FDM_WEIGHTS/<name>.safetensors`` when that variable is set, else the authors' released
    file, downloaded once (checksum-checked) and converted into torch.hub's cache (``models/hub.py``).
    With another ``num_classes`` than the weights', the classifier is re-initialised (timm's
    convention); ``num_classes=0`` gives pooled features. ``mflops`` picks, for a bare family name,
    the width whose multiply-adds at ``resolution`` come closest to the budget. Other keyword
    arguments (``width``, ``groups``, ``dropout``, ``features_only``, ``out_indices``) go to the
    builder; anything else is refused. Defaults: 1000 classes at 224 px for a classifier; for a
    detector 20 object classes (PASCAL VOC, background not counted) at 320 px, or those of the
    detector weights it loads.

    For a detector ``pretrained`` is a classification weights file of its backbone (loaded into the
    backbone, classifier dropped), a detector weights file (loaded whole; with another ``num_classes``
    the class head is re-initialised), or True (the backbone's released weights). Detectors take
    ``backbone``, ``width``, ``groups`` and the post-processing settings instead of ``mflops``.
    """
    if model_task(name) == "detection":
        return _create_detector(name, num_classes, pretrained, resolution, mflops, kwargs)
    num_classes = 1000 if num_classes is None else num_classes
    resolution = 224 if resolution is None else resolution
    fixed = check_model_kwargs(name, kwargs, also=frozenset({"cache_dir"}))
    cache = kwargs.pop("cache_dir", None)
    check_resolution(resolution)
    if mflops is not None:
        if fixed:
            raise ValueError(f"mflops= needs a bare family name ({', '.join(FAMILIES)}), not {name!r}")
        kwargs["width"] = solve_width(name, mflops, resolution=resolution, groups=kwargs.get("groups", 3))
    model = build_model(name, num_classes=num_classes, resolution=resolution, **kwargs)
    if pretrained:
        path = pretrained_path(name, cache) if isinstance(pretrained, bool) else Path(pretrained)
        head = getattr(model, "classifier", None)
        fresh = head.weight.detach().clone() if isinstance(head, nn.Linear) else None
        meta = load_weights(model, path, strict_classifier=False)
        if fresh is not None and torch.equal(fresh, model.classifier.weight):  # the file had no head of this size:
            model.reset_classifier(num_classes)  # a new head on trained features, as reset_classifier starts one
        keys = ("mean", "std", "crop_pct", "interpolation")
        if meta.get("num_classes", num_classes) == num_classes:
            keys += ("class_names",)
        model.pretrained_cfg.update({k: v for k, v in meta.items() if k in keys})
    return model


def _create_detector(
    name: str,
    num_classes: int | None,
    pretrained: bool | str | os.PathLike,
    resolution: int | None,
    mflops: float | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    """An SSDLite detector (``detection.build_detector``), with weights when ``pretrained`` is

    - a classification weights file of the backbone (ours, or the authors' ``.pth.tar``): loaded into the
      backbone, its classifier dropped; extras and head stay freshly initialised;
    - a detector weights file (metadata ``task: detection``): loaded whole; its class count, resolution and
      post-processing settings are the defaults; with another ``num_classes`` the class head is
      re-initialised (``pretrained_cfg["reinitialised"]``) and the rest loaded;
    - True: the backbone's released weights, exactly what ``create_model(backbone, pretrained=True)`` loads.
    """
    from .detection import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, build_detector, resolve_detector_kwargs

    if mflops is not None:
        raise ValueError(
            "mflops= picks a classifier's width; for a detector solve the backbone's: "
            "create_model('ssdlite', backbone=family, width=solve_width(family, mflops))"
        )
    cache = kwargs.pop("cache_dir", None)
    sd = meta = None
    source = ""
    if pretrained:
        if isinstance(pretrained, bool):
            backbone = resolve_detector_kwargs(name, kwargs)[0]
            try:
                path = pretrained_path(backbone, cache)
            except ValueError as e:
                raise ValueError(f"pretrained=True for {name!r} loads its backbone's weights: {e}") from None
        else:
            path = Path(pretrained)
        sd, meta = read_weights(path)
        source = str(path)
    whole = meta is not None and is_detector_meta(meta)
    if whole:
        num_classes = detector_num_classes(sd, meta) if num_classes is None else num_classes
        resolution = resolution or meta.get("resolution")
        kwargs = {**{k: meta[k] for k in (*POSTPROCESS_KEYS, *ANCHOR_SCALES) if k in meta}, **kwargs}
    model = build_detector(
        name,
        num_classes=DEFAULT_NUM_CLASSES if num_classes is None else num_classes,
        resolution=resolution or DEFAULT_RESOLUTION,
        **kwargs,
    )
    if whole:
        load_detector_weights(model, sd, meta, source)
    elif sd is not None:
        load_backbone_weights(model, sd, meta, source)
    return model


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
            model = build_model(family, width=w, resolution=resolution, **extra)
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


def complexity_at_224() -> dict[str, tuple[int, int]]:
    """(MACs, parameters) at 224 px of every fixed-width registered classifier, profiled on the meta device."""
    table = {}
    for name in list_models():
        if lookup(name)[1]:  # bare family names have no fixed width
            with torch.device("meta"):  # shapes only: no weights allocated, nothing run
                p = profile(build_model(name), 224)
            table[name] = (p.macs, p.params)
    return table


def write_complexity_table(path: str | os.PathLike = Path(__file__).with_name("_complexity_table.py")) -> None:
    """Regenerate ``_complexity_table.py`` from ``complexity_at_224()``."""
    rows = "".join(f'    "{n}": ({m}, {p}),\n' for n, (m, p) in complexity_at_224().items())
    Path(path).write_text(
        '"""(MACs, parameters) at 224 px of every fixed-width model, so ``fdmobilenet models`` builds nothing.\n\n'
        "Generated by ``python -m fdmobilenet.models._factory``; tests/test_models.py checks it against\n"
        '``profile()``."""\n\n'
        f"COMPLEXITY_AT_224: dict[str, tuple[int, int]] = {{\n{rows}}}\n"
    )


if __name__ == "__main__":
    write_complexity_table(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("_complexity_table.py"))
