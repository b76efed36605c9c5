"""Exact complexity: multiply-accumulates, parameters and peak activation memory.

MACs count conv and linear layers only (BatchNorm, ReLU, pooling and the shuffle are free), the
convention of the MobileNet, ShuffleNet and FD-MobileNet papers, whose "MFLOPs" are these MACs.
Counting runs one real forward pass with hooks, so any architecture and resolution is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class LayerStats:
    name: str
    kind: str
    out_shape: tuple[int, ...]
    macs: int
    params: int


@dataclass
class Profile:
    """Complexity of one model at one input resolution (batch 1, float32 activations)."""

    model: str
    resolution: int
    macs: int
    params: int
    peak_activation_bytes: int
    layers: list[LayerStats] = field(default_factory=list)

    def as_dict(self, layers: bool = False) -> dict:
        d = asdict(self)
        d["mmacs"] = round(self.macs / 1e6, 2)
        if not layers:
            d.pop("layers")
        return d


# Folded into the preceding conv (BN) or fused/in-place (activations) by inference engines.
_ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Dropout)


def _layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return out.numel() * (m.in_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


@torch.no_grad()
def profile(model: nn.Module, resolution: int = 224, name: str | None = None) -> Profile:
    """MACs, parameters and peak activation memory of ``model`` on one ``resolution``² image.

    A model built on the ``meta`` device is profiled without computing anything (shapes only).

    Peak activation memory is the largest set of tensors that must be alive at once when the
    layers run one after another: a layer's input and output, plus any shortcut input held by
    an enclosing residual unit. BatchNorm and ReLU count as folded/fused into the conv before
    them, as every inference engine runs them. It is the lower bound an in-order inference engine needs, the
    figure that decides whether a model fits a microcontroller's RAM.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    layers: list[LayerStats] = []
    held: list[torch.Tensor] = []  # shortcut inputs of residual units being run
    peak = 0
    hooks = []

    def nbytes_unique(tensors):
        seen, total = set(), 0
        for t in tensors:
            ptr = t.untyped_storage()._cdata  # storage identity: in-place ops and views count once
            if ptr not in seen:
                seen.add(ptr)
                total += t.numel() * 4
        return total

    def leaf_hook(mod, inp, out, name):
        nonlocal peak
        if not isinstance(mod, _ELEMENTWISE):
            peak = max(peak, nbytes_unique([*held, inp[0], out]))
        macs = _layer_macs(mod, out)
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        layers.append(LayerStats(name, type(mod).__name__, tuple(out.shape), macs, params))

    def enter(mod, inp):
        held.append(inp[0])

    def leave(mod, inp, out):
        held.pop()

    for mname, m in model.named_modules():
        if len(list(m.children())) == 0:
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=mname: leaf_hook(mod, i, o, n)))
        elif hasattr(m, "shortcut"):  # residual unit: its input lives until the sum/concat
            hooks.append(m.register_forward_pre_hook(enter))
            hooks.append(m.register_forward_hook(leave))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, 3, resolution, resolution, dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    macs = sum(layer.macs for layer in layers)
    params = sum(p.numel() for p in model.parameters())
    label = name or getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    return Profile(label, resolution, macs, params, peak, layers)


def solve_width(family: str, mflops: float, resolution: int = 224, groups: int = 3) -> float:
    """The width multiplier whose MACs at ``resolution`` come closest to ``mflops`` million.

    MACs grow monotonically (roughly quadratically) with width, so bisection on the width finds
    the budget; channel rounding makes MACs a step function, so the nearest step is returned.
    """
    from .models import FAMILIES, create_model

    if family not in FAMILIES:
        raise ValueError(f"mflops= needs one of {', '.join(FAMILIES)}, got {family!r}")
    if mflops <= 0:
        raise ValueError(f"mflops must be > 0, got {mflops}")
    extra = {"groups": groups} if family == "shufflenet_v1" else {}

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
