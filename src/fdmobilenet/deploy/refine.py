"""What ``calibrate`` fits to the fp32 network around PT2E's calibration, kept apart from the quantizer
setup (``quantize``): plain tensor and FX-graph arithmetic that no quantizer library defines. Before the
graph is captured, cross-layer range equalization (``equalize``) evens out the per-tensor activation ranges
of a ReLU chain, exactly in fp32; after it is converted, ``correct_layers`` walks the INT8 graph layer after
layer, re-rounding each layer's INT8 weights (``round_weights``, AdaRound) and taking its mean shift out of
its bias. Each layer is fitted to its own fp32 output on unlabeled photos, so nothing learns their classes.
``ethosu`` uses the same corrections on Arm's graphs (int32 biases).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def relu_chain(folded: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The layers of a plain conv/ReLU chain in order, ``[(name, conv or linear), ...]``, ending with the
    classifier; None for networks that are not one (residuals, concatenations, channel shuffles).

    FD-MobileNet and MobileNet V1 are: stem conv, then depthwise and pointwise convs, each followed by a
    ReLU and nothing else, then average pooling and the linear classifier. Recognised by structure
    (``stem``, ``blocks`` of ``dw``/``pw``, ``classifier``), each ReLU checked to be a plain ``nn.ReLU``
    (positively homogeneous, so a channel can be scaled through it).
    """
    stem, blocks, head = (getattr(folded, k, None) for k in ("stem", "blocks", "classifier"))
    if getattr(folded, "features_only", False) or not isinstance(head, nn.Linear) or blocks is None:
        return None
    units = [("stem", stem)]
    units += [(f"blocks.{i}.{k}", getattr(b, k, None)) for i, b in enumerate(blocks) for k in ("dw", "pw")]
    chain = []
    for name, unit in units:
        conv, relu = getattr(unit, "conv", None), getattr(unit, "relu", None)
        if not isinstance(conv, nn.Conv2d) or type(relu) is not nn.ReLU or conv.bias is None:
            return None
        if list(unit.children())[-1] is not relu:
            return None
        chain.append((f"{name}.conv", conv))
    return [*chain, ("classifier", head)]


@torch.no_grad()
def _channel_ranges(folded: nn.Module, chain: list[tuple[str, nn.Module]], batches: Sequence[torch.Tensor]):
    """Per output channel of every chain layer but the last: the largest value after its ReLU."""
    convs = [m for _, m in chain[:-1]]
    ranges = [torch.zeros(m.out_channels) for m in convs]

    def hook(k: int):
        def fn(_m, _inputs, out):  # the conv's output: its maximum is the ReLU's where positive
            torch.maximum(ranges[k], out.amax((0, 2, 3)), out=ranges[k])

        return fn

    hooks = [m.register_forward_hook(hook(k)) for k, m in enumerate(convs)]
    try:
        for x in batches:
            folded(x)
    finally:
        for h in hooks:
            h.remove()
    return [r.clamp(min=0) for r in ranges]  # the ReLU follows: negative maxima mean a dead channel


@torch.no_grad()
def equalize(
    folded: nn.Module, batches: Sequence[torch.Tensor], max_scale: float = 100.0, dense_alpha: float = 0.5
) -> int:
    """Cross-layer range equalization, in place, exact in fp32; returns how many layer pairs it scaled.

    INT8 activations have one scale per tensor, so a channel whose values span 0.1 next to one spanning 20
    gets a handful of levels. A ReLU passes positive scaling, so output channel ``i`` of a layer can be
    multiplied by ``s_i`` (its weights and bias) and the next layer's input channel ``i`` divided by it
    without changing the network. Into a depthwise conv this is free (its weights are quantized per
    channel), so every channel is brought to the same range; into a pointwise conv or the classifier the
    division moves range into that layer's weight rows, so ``s_i = sqrt(w_i / a_i)`` balances the channel's
    activation range ``a_i`` against its weight column's ``w_i``. Ranges are the largest values seen on
    ``batches``. Networks that are not a plain ReLU chain (``relu_chain``) are left alone (returns 0).
    """
    chain = relu_chain(folded)
    if chain is None:
        return 0
    ranges = _channel_ranges(folded, chain, batches)
    pairs = 0
    for (_, a), (_, b), r in zip(chain, chain[1:], ranges):
        alive = r > 1e-8
        if not alive.any():
            continue
        if isinstance(b, nn.Conv2d) and b.groups == b.in_channels == b.out_channels:
            # depthwise: every channel to the geometric mean range; keep its kernel clear of the scale floor
            target = r[alive].log().mean().exp()
            s = torch.where(alive, target / r.clamp(min=1e-8), torch.ones_like(r))
            kmax = b.weight.abs().flatten(1).amax(1)
            s = torch.minimum(s, (kmax / 0.1).clamp(min=1.0))
        else:
            w = b.weight.abs().flatten(2).amax(2) if b.weight.ndim == 4 else b.weight.abs()
            col = w.amax(0)
            s = torch.where(alive & (col > 1e-8), (col / r.clamp(min=1e-8)) ** dense_alpha, torch.ones_like(r))
            s = s / s[alive].log().mean().exp()
        s = s.clamp(1 / max_scale, max_scale)
        a.weight.mul_(s.view(-1, *[1] * (a.weight.ndim - 1)))
        a.bias.mul_(s)
        if b.weight.ndim == 4 and b.groups == b.in_channels:
            b.weight.div_(s.view(-1, 1, 1, 1))
        else:
            b.weight.div_(s.view(1, -1, *[1] * (b.weight.ndim - 2)))
        pairs += 1
    return pairs


def _layer_of(node: torch.fx.Node) -> str | None:
    """The module path (``blocks.0.dw.conv``) a conv/linear node of an exported graph came from."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]).removeprefix("L['self'].") if stack else None


def round_weights(
    layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weight: torch.Tensor,
    scale: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor,
    steps: int,
    relu: bool,
    batch_size: int = 16,
    reg: float = 0.01,
    seed: int = 0,
) -> torch.Tensor:
    """AdaRound (Nagel et al. 2020): the INT8 values of ``weight`` (``weight / scale`` each rounded up or
    down) that best reproduce ``target``, the fp32 layer's output, from ``x``, the layer's input in the INT8
    network; returns them as a float tensor of integers in [-127, 127].

    Rounding to nearest minimises each weight's own error, not the layer's output error, and in these
    narrow networks the sum of those errors moves the logits: every weight gets a soft rounding variable,
    trained to match the output while a regulariser, annealed, pushes each to 0 or 1. ``layer(x, w)``
    computes the layer (its bias included); ``relu``: compare after the ReLU that follows the layer (a
    negative value a ReLU clips costs nothing). ``scale`` broadcasts against ``weight`` (per channel).
    """
    zeta, gamma = 1.1, -0.1  # the rectified sigmoid's stretch, from the paper
    ratio = weight / scale
    base = ratio.floor()
    frac = (ratio - base).clamp(1e-4, 1 - 1e-4)
    v = (-torch.log((zeta - gamma) / (frac - gamma) - 1)).requires_grad_(True)  # soft rounding = frac at start
    opt = torch.optim.Adam([v], lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    warm = int(0.2 * steps)
    for it in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
        soft = (torch.sigmoid(v) * (zeta - gamma) + gamma).clamp(0, 1)
        out, want = layer(x[idx], (base + soft).clamp(-127, 127) * scale), target[idx]
        if relu:
            out, want = F.relu(out), F.relu(want)
        loss = (out - want).pow(2).sum(1).mean()
        if it >= warm:  # then push every soft rounding to 0 or 1, ever harder (beta 20 -> 2)
            beta = 20 - 18 * (it - warm) / max(1, steps - warm)
            loss = loss + reg * (1 - (2 * soft - 1).abs().pow(beta)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    ints = (base + (v.detach() >= 0).float()).clamp(-127, 127)
    # a channel's largest weight defines its scale (max |w| / 127): keep it where it is, so re-quantizing the
    # re-rounded float weights (what LiteRT's converter does) finds the same scale and the same integers
    return torch.where(ratio.abs() > 126.5, ratio.round(), ints)


def _attr(gm: nn.Module, target: object) -> torch.Tensor:
    return functools.reduce(getattr, str(target).split("."), gm)


def _int32_bias(node: torch.fx.Node) -> bool:
    """Whether ``node`` dequantizes a stored int32 bias (Arm's Ethos-U scheme; XNNPACK keeps biases float)."""
    per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    src = node.args[0] if node.target == per_channel else None
    return isinstance(src, torch.fx.Node) and src.op == "get_attr" and node.args[-1] == torch.int32


def _mean(t: torch.Tensor) -> torch.Tensor:
    """Per channel: the mean over the batch (and the spatial axes of a conv's output)."""
    return t.mean((0, 2, 3)) if t.ndim == 4 else t.mean(0)


def _fp32_outputs(modules: dict[str, nn.Module], folded: nn.Module, x: torch.Tensor, whole: bool):
    """``{name: output}`` of each of ``modules`` (layers of ``folded``) on ``x``: the whole output (``whole``,
    what AdaRound fits to) or its mean per channel (enough for bias correction alone)."""
    refs: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_m, _inputs, out):  # a copy: an in-place ReLU follows
            refs[name] = out.clone() if whole else _mean(out)

        return fn

    hooks = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        folded.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return refs


class _Correcting(torch.fx.Interpreter):
    """Runs the INT8 graph on the photos, correcting every conv/linear node that has an fp32 output in ``refs``
    just before (its weights) and after (its bias) it runs, so the layers after it see the corrected outputs."""

    def __init__(
        self,
        quantized: torch.fx.GraphModule,
        fp32: dict[str, nn.Module],
        refs: dict[str, torch.Tensor],
        rounding_steps: int,
        bias: bool,
        log: Callable[[str], None] | None,
    ) -> None:
        super().__init__(quantized)
        self.fp32, self.refs, self.rounding_steps, self.fix_bias, self.log = fp32, refs, rounding_steps, bias, log
        self.targets = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
        self.per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
        self.relus = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
        self.changed, self.t0 = 0, time.monotonic()

    def run_node(self, n: torch.fx.Node):
        name = _layer_of(n) if n.op == "call_function" and n.target in self.targets else None
        if name not in self.refs:
            return super().run_node(n)
        deq = n.args[1]
        if self.rounding_steps and isinstance(deq, torch.fx.Node) and deq.target == self.per_channel:
            self._reround(n, name, deq)
        out = super().run_node(n)
        b = n.args[2] if len(n.args) > 2 else None
        if self.fix_bias and isinstance(b, torch.fx.Node) and (b.op == "get_attr" or _int32_bias(b)):
            out = self._correct_bias(name, b, out)
        self.changed += 1
        self.refs.pop(name)  # its fp32 outputs are no longer needed
        return out

    def _reround(self, n: torch.fx.Node, name: str, deq: torch.fx.Node) -> None:
        """AdaRound the INT8 weights of layer ``n`` (dequantized by ``deq``) against its fp32 output."""
        # the int8 weights are a constant (``convert(fold=True)``), or float weights quantized in the graph
        src = deq.args[0]
        stored = src if src.op == "get_attr" else src.args[0]
        weights, scale = _attr(self.module, stored.target), _attr(self.module, deq.args[1].target)
        scale = scale.float().view(-1, *[1] * (weights.ndim - 1))
        b = self.env[n.args[2]] if len(n.args) > 2 and n.args[2] is not None else None
        rest = tuple(n.args[3:])
        conv = n.target == torch.ops.aten.conv2d.default

        def layer(inp, w):
            return F.conv2d(inp, w, b, *rest) if conv else F.linear(inp, w, b)

        relu = len(n.users) == 1 and next(iter(n.users)).target in self.relus
        with torch.enable_grad():
            ints = round_weights(layer, self.fp32[name].weight.detach(), scale, self.env[n.args[0]],
                                 self.refs[name], self.rounding_steps, relu)  # fmt: skip
        weights.copy_(ints.to(weights.dtype) if weights.dtype == torch.int8 else ints * scale)
        self.env[deq] = ints * scale  # what the dequantize node now computes
        if self.log:
            self.log(f"rounded {name} ({time.monotonic() - self.t0:.0f} s)")

    def _correct_bias(self, name: str, b: torch.fx.Node, out: torch.Tensor) -> torch.Tensor:
        """Take the layer's mean shift from fp32 out of its bias ``b``; returns its output so corrected."""
        want = self.refs[name] if not self.rounding_steps else _mean(self.refs[name])
        shift = _mean(out) - want
        if b.op == "get_attr":
            _attr(self.module, b.target).sub_(shift)
        else:  # Arm's scheme: an int32 bias at the input scale x the weight scale; shift it in those steps
            ints, step = _attr(self.module, b.args[0].target), _attr(self.module, b.args[1].target).float()
            new = (ints.double() - (shift / step).double()).round().clamp(-(2**31) + 1, 2**31 - 1)
            shift = (ints.double() - new).float() * step
            ints.copy_(new.to(ints.dtype))
        return out - (shift.view(1, -1, 1, 1) if out.ndim == 4 else shift)


@torch.no_grad()
def correct_layers(
    quantized: torch.fx.GraphModule,
    folded: nn.Module,
    x: torch.Tensor,
    rounding_steps: int = 0,
    bias: bool = True,
    log: Callable[[str], None] | None = None,
) -> int:
    """Layer-wise correction of a converted INT8 graph towards the fp32 network, in place, one layer after
    the other; returns how many layers it changed.

    Every conv/linear output of the INT8 graph is compared with the fp32 network's (``folded``, the network
    the graph was captured from) on the photos ``x``, each layer on the already corrected outputs of those
    before it, so a layer also makes up for what the INT8 layers before it changed. With ``rounding_steps``,
    the layer's INT8 weights are re-rounded first (``round_weights``, AdaRound), within the scales the
    quantizer chose, so the file's format is unchanged. With ``bias``, the mean difference per channel -
    what weight rounding, activation rounding and clipping shift the layer by - is then taken out of its
    bias (empirical bias correction): a float one (XNNPACK), or an int32 one in its own steps (Arm).
    """
    targets = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
    wanted = {_layer_of(n) for n in quantized.graph.nodes if n.op == "call_function" and n.target in targets}
    modules = {n: m for n, m in folded.named_modules() if n in wanted}
    refs = _fp32_outputs(modules, folded, x, whole=bool(rounding_steps))
    correcting = _Correcting(quantized, modules, refs, rounding_steps, bias, log)
    correcting.run(x)
    return correcting.changed
