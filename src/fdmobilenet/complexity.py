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


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


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

    A model with a ``profile_forward(x, keep)`` method (a detector) is run through it instead of
    ``forward``: the network part only (no resizing, box decoding or NMS), calling ``keep(t)`` for each
    tensor that stays alive until the end (a feature-pyramid level the head reads), which then counts
    towards every later layer's activation memory.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    layers: list[LayerStats] = []
    held: list[torch.Tensor] = []  # shortcut inputs of residual units being run
    kept: list[torch.Tensor] = []  # outputs kept alive to the end (a detector's pyramid levels)
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
            peak = max(peak, nbytes_unique([*held, *kept, inp[0], out]))
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
    param = next(model.parameters())
    # On the meta device only shapes matter, and BatchNorm (shape-preserving) runs there through a slow
    # Python decomposition: most of the time of a meta profile. Skip it; its hooks still fire.
    skipped = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] if param.is_meta else []
    for m in skipped:
        m.forward = _identity
    try:
        x = torch.zeros(1, 3, resolution, resolution, dtype=param.dtype, device=param.device)
        if hasattr(model, "profile_forward"):
            model.profile_forward(x, kept.append)
        else:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m in skipped:
            del m.forward
        model.train(was_training)
    macs = sum(layer.macs for layer in layers)
    params = sum(p.numel() for p in model.parameters())
    label = name or getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    return Profile(label, resolution, macs, params, peak, layers)
