"""Exact complexity: multiply-accumulates, parameters and peak activation memory, in fp32 and INT8.

MACs count conv and linear layers only (BatchNorm, ReLU, pooling and the shuffle are free), the
convention of the MobileNet, ShuffleNet and FD-MobileNet papers, whose "MFLOPs" are these MACs.
Counting runs one real forward pass with hooks, so any architecture and resolution is exact.

The INT8 figures are what a microcontroller needs: weights in flash (int8 weights, plus an int32 bias
and an fp32 per-channel scale for each output channel of every conv and linear layer, BatchNorm folded
into them) and activations in RAM (one byte per element: the same live set as the fp32 count, a quarter
of its bytes). They count tensors, not a runtime's bookkeeping: TFLite Micro adds its flatbuffer's
tables and int64 zero points, Vela packs bias, scale and shift into 10 bytes a channel and may tile
layers (cascading) to go below the peak counted here.

Arm's Ethos-U NPUs keep feature maps in the NHCWB16 "brick" layout: channels padded to a multiple of 16. A
narrow network pays for the padding (an 8-channel map takes the room of 16), so ``int8_peak_nhcwb16_bytes``
counts the same live set that way (the input image stays NHWC, as the CPU hands it over). It is what Vela
plans: within 1 % for FD-MobileNet, MobileNet V1 and ShuffleNet V1 at 12 and 40 MFLOPs
(benchmarks/mcu/results.md), where the unpadded count was 1-100 % short.
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
    activation_elements: int = 0  # elements alive while this layer runs (its input, output and held inputs)
    int8_weight_bytes: int = 0  # this layer's weights in an INT8 file (see the module docstring)


@dataclass
class Profile:
    """Complexity of one model at one input resolution (batch 1).

    ``peak_activation_bytes`` and ``weight_bytes`` are fp32 (BatchNorm folded into the conv before it);
    ``int8_peak_activation_bytes`` and ``int8_weight_bytes`` the same model quantized to INT8: the RAM an
    arena planner needs at the least (no tiling) and the flash the weights take.
    """

    model: str
    resolution: int
    macs: int
    params: int
    peak_activation_bytes: int
    layers: list[LayerStats] = field(default_factory=list)
    weight_bytes: int = 0
    int8_weight_bytes: int = 0
    int8_peak_activation_bytes: int = 0
    int8_peak_nhcwb16_bytes: int = 0  # the same, feature maps in Ethos-U's NHCWB16 layout (channels to 16)

    def as_dict(self, layers: bool = False) -> dict:
        d = asdict(self)
        d["mmacs"] = round(self.macs / 1e6, 2)
        if not layers:
            d.pop("layers")
        return d


# Folded into the preceding conv (BN) or fused/in-place (activations) by inference engines.
_ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _holds_input(m: nn.Module) -> bool:
    """Whether ``m`` keeps its input alive while its layers run (a residual sum, a concat, a gating multiply)."""
    if hasattr(m, "shortcut"):  # this package's ShuffleNet units
        return True
    if getattr(m, "use_res_connect", False):  # torchvision's MobileNetV2/V3 inverted residuals
        return True
    kind = type(m).__name__
    if kind == "SqueezeExcitation":  # torchvision: scale(input) * input
        return True
    # torchvision's ShuffleNetV2 stride-1 unit: one half of the input waits for the other's branch (the
    # whole input is counted: the half is a view of it)
    return kind == "InvertedResidual" and hasattr(m, "branch2") and getattr(m, "stride", 2) == 1


# INT8 bytes per output channel of a conv or linear layer besides its weights: int32 bias + fp32 scale.
INT8_CHANNEL_BYTES = 4 + 4


def _weight_bytes(m: nn.Module, folded: bool) -> tuple[int, int]:
    """(fp32, INT8) bytes of ``m``'s own parameters in a deployed file; ``folded``: a BatchNorm that the
    conv before it absorbs (nothing of its own is stored)."""
    if isinstance(m, nn.Conv2d | nn.Linear):
        out = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        w = m.weight.numel()
        return 4 * (w + out), w + INT8_CHANNEL_BYTES * out  # a bias either way: folding BatchNorm adds one
    if isinstance(m, nn.BatchNorm2d) and folded:
        return 0, 0
    n = sum(p.numel() for p in m.parameters(recurse=False))
    return 4 * n, 4 * n  # a standalone BatchNorm (scale + shift), a PReLU slope: kept as 32-bit values


def _layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return out.numel() * (m.in_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


class _Counter:
    """What ``profile``'s hooks count while the model runs once: each leaf layer's statistics, the peak of the
    live activations (as they are and padded to NHCWB16) and the deployed weight bytes."""

    def __init__(self) -> None:
        self.layers: list[LayerStats] = []
        self.held: list[torch.Tensor] = []  # shortcut inputs of residual units being run
        self.kept: list[torch.Tensor] = []  # outputs kept alive to the end (a detector's pyramid levels)
        self.peak = self.peak16 = 0  # elements: as they are, and with channels padded to 16 (NHCWB16)
        self.image: list[int] = []  # storage of the input image (NHWC on an NPU: never padded)
        self.fp32_weights = self.int8_weights = 0
        self.last: nn.Module | None = None  # the previous leaf layer run (a BatchNorm after a conv is folded into it)

    def numel_unique(self, tensors) -> tuple[int, int]:
        """Elements of the distinct tensors: as they are, and with channels padded to 16 (NHCWB16)."""
        seen, total, padded = set(), 0, 0
        for t in tensors:
            ptr = t.untyped_storage()._cdata  # storage identity: in-place ops and views count once
            if ptr not in seen:
                seen.add(ptr)
                total += t.numel()
                brick = t.ndim == 4 and ptr not in self.image  # the input image stays NHWC
                padded += t.numel() // t.shape[1] * (-(-t.shape[1] // 16) * 16) if brick else t.numel()
        return total, padded

    def leaf_hook(self, mod, inp, out, name) -> None:
        live = 0
        if not isinstance(mod, _ELEMENTWISE):
            live, live16 = self.numel_unique([*self.held, *self.kept, inp[0], out])
            self.peak, self.peak16 = max(self.peak, live), max(self.peak16, live16)
        folded = isinstance(mod, nn.BatchNorm2d) and isinstance(self.last, nn.Conv2d)
        w32, w8 = _weight_bytes(mod, folded)
        self.fp32_weights += w32
        self.int8_weights += w8
        self.last = mod
        macs = _layer_macs(mod, out)
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        self.layers.append(LayerStats(name, type(mod).__name__, tuple(out.shape), macs, params, live, w8))

    def enter(self, mod, inp) -> None:
        self.held.append(inp[0])

    def leave(self, mod, inp, out) -> None:
        self.held.pop()

    def attach(self, model: nn.Module) -> list:
        """The hooks on every leaf layer, and on every unit that holds its input (residual: until the sum/concat)."""
        hooks = []
        for mname, m in model.named_modules():
            if len(list(m.children())) == 0:
                hooks.append(m.register_forward_hook(lambda mod, i, o, n=mname: self.leaf_hook(mod, i, o, n)))
            elif _holds_input(m):  # residual unit: its input lives until the sum/concat
                hooks.append(m.register_forward_pre_hook(self.enter))
                hooks.append(m.register_forward_hook(self.leave))
        return hooks


@torch.no_grad()
def profile(model: nn.Module, resolution: int = 224, name: str | None = None) -> Profile:
    """MACs, parameters, peak activation memory and deployed weight bytes of ``model`` on one ``resolution``²
    image, in fp32 and INT8.

    A model built on the ``meta`` device is profiled without computing anything (shapes only).

    Peak activation memory is the largest set of tensors that must be alive at once when the
    layers run one after another: a layer's input and output, plus any shortcut input held by
    an enclosing residual unit. BatchNorm and ReLU count as folded/fused into the conv before
    them, as every inference engine runs them. It is the lower bound an in-order inference engine needs, the
    figure that decides whether a model fits a microcontroller's RAM. The INT8 peak is the same live set at
    one byte an element (input image included).

    A model with a ``profile_forward(x, keep)`` method (a detector) is run through it instead of
    ``forward``: the network part only (no resizing, box decoding or NMS), calling ``keep(t)`` for each
    tensor that stays alive until the end (a feature-pyramid level the head reads), which then counts
    towards every later layer's activation memory.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    c = _Counter()
    hooks = c.attach(model)
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
        c.image.append(x.untyped_storage()._cdata)
        if hasattr(model, "profile_forward"):
            model.profile_forward(x, c.kept.append)
        else:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m in skipped:
            del m.forward
        model.train(was_training)
    macs = sum(layer.macs for layer in c.layers)
    params = sum(p.numel() for p in model.parameters())
    label = name or getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    return Profile(
        label, resolution, macs, params, 4 * c.peak, c.layers, c.fp32_weights, c.int8_weights, c.peak, c.peak16
    )
