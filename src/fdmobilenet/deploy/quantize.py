"""INT8 with PyTorch's PT2E quantization and the XNNPACK quantizer: calibration (with range equalization
and bias correction), and quantization-aware fine-tuning by distillation from the fp32 model.

Why PT2E: one quantized graph gives both an ExecuTorch ``.pte`` (XNNPACK INT8 kernels, what phones
run) and a QDQ ONNX file (``torch.onnx`` writes QuantizeLinear/DequantizeLinear pairs that ONNX
Runtime and OpenVINO fuse into int8 kernels), with the same scales in both. The scheme is XNNPACK's:
int8 weights, symmetric, per output channel; int8 activations, per tensor.

BatchNorm is folded first, so the graph quantized is exactly the fp32 network that deploys. Post-training
(``calibrate`` with a ``PtqConfig``, ``quantize``'s default): channels are rescaled across layers so each
per-tensor activation range is shared evenly (``equalize``), activation ranges are observed, then, layer
after layer, each layer's INT8 weights are re-rounded to reproduce its fp32 output (AdaRound) and its mean
shift is taken out of its bias (``correct_layers``; these corrections are in ``refine``). Only rounding
directions and biases are fitted, each layer to its own fp32 output, so nothing can learn the calibration
photos' classes: calibrated on photos of 10 classes, this held best on photos of other classes
(benchmarks/int8/fidelity.md). Fine-tuning (``qat_distill``) needs no labels either: the student matches
the fp32 teacher's softmax or logits on photos of any classes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ParameterError
from .._utils import LITERT_HINT, require
from .executorch import EXECUTORCH_HINT
from .fold import fold_batchnorm
from .refine import correct_layers, equalize, relu_chain, round_weights  # noqa: F401 (the last two re-exported)


@dataclass
class QatConfig:
    """Quantization-aware fine-tuning: a short, low-lr distillation run (defaults measured in benchmarks/int8)."""

    epochs: float = 1.0
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    freeze_observers_at: float = 0.5  # fraction of the run after which activation ranges stop moving
    seed: int = 0
    loss: str = "kl"  # "logits": match all logits (mean squared difference), not just the softmax
    train_classifier: bool = True  # False: the classifier keeps its fp32 weights (only rounded to INT8)

    def __post_init__(self) -> None:
        """Refuse values no run can use (NaN, negative epochs, lr <= 0) here, where CLI and API both pass."""
        checks = {
            "epochs (>= 0)": math.isfinite(self.epochs) and self.epochs >= 0,
            "lr (> 0)": math.isfinite(self.lr) and self.lr > 0,
            "batch_size (>= 1)": self.batch_size >= 1,
            "weight_decay (>= 0)": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "freeze_observers_at (0 to 1)": 0 <= self.freeze_observers_at <= 1,
            f"loss ({' or '.join(LOSSES)})": self.loss in LOSSES,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            listed = ", ".join(f"`{b.split()[0]}` {b.split(maxsplit=1)[1]}" for b in bad)
            raise ParameterError(bad[0].split()[0], f"quantization settings out of range: {listed}; got {self}")


OBSERVERS = ("histogram", "minmax")
ACTIVATIONS = ("int8", "int16")  # int16: A16W8, for runtimes with 16-bit activation kernels


def check_activations(activations: str) -> str:
    """``activations`` if it is one of ``ACTIVATIONS``; a ``ParameterError`` naming it otherwise."""
    if activations not in ACTIVATIONS:
        choices = ", ".join(ACTIVATIONS)
        raise ParameterError("activations", f"`activations` must be one of {choices}, got {activations!r}")
    return activations


@dataclass(frozen=True)
class PtqConfig:
    """Post-training INT8 (``calibrate``); the defaults are ``quantize``'s, measured in
    benchmarks/int8/fidelity.md: range equalization, re-rounded weights and bias correction, every layer INT8.

    ``activations`` ``int16`` keeps the weights INT8 but gives activations 16 bits (A16W8): on photos of
    classes the calibration never saw, INT8 activations were most of what INT8 changes (fp32 weights with
    INT8 activations agreed with fp32 on 80-87 % of them, with int16 activations on 99.5 %). Only runtimes with
    16-bit activation kernels run it (QDQ ONNX at opset 21, e.g. Qualcomm's QNN; Arm Ethos-U; not XNNPACK).
    """

    observer: str = "histogram"  # activation ranges: "histogram" (XNNPACK's default) or "minmax"
    equalize: bool | None = None  # cross-layer range equalization (``equalize``); None: on for int8 activations
    # only (it evens out their per-tensor ranges; with 16-bit activations it only moves range into the weights)
    bias_correction: bool = True  # per-layer mean shift taken out after converting (``correct_layers``)
    rounding_steps: int = 500  # AdaRound steps per layer (``round_weights``); 0: round to nearest
    bias_correction_photos: int = 256  # photos (the first calibration ones) both corrections are fitted on
    float_layers: tuple[str, ...] = ()  # module names kept fp32, e.g. ("stem", "classifier")
    activations: str = "int8"  # or "int16" (A16W8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "float_layers", tuple(self.float_layers))
        check_activations(self.activations)
        if self.equalize is None:
            object.__setattr__(self, "equalize", self.activations == "int8")
        if self.observer not in OBSERVERS:
            raise ParameterError("observer", f"`observer` must be one of {', '.join(OBSERVERS)}, got {self.observer!r}")
        if self.bias_correction_photos < 1:
            raise ParameterError("bias_correction_photos", "`bias_correction_photos` must be >= 1")
        if not 0 <= self.rounding_steps <= 100_000:
            raise ParameterError("rounding_steps", f"`rounding_steps` must be 0 to 100000, got {self.rounding_steps}")


RUNTIMES = ("xnnpack", "litert")  # whose PT2E quantizer annotates the graph: the same INT8 scheme in both


def _quantizer(
    qat: bool,
    float_layers: Sequence[str] = (),
    observer: str = "histogram",
    runtime: str = "xnnpack",
    activations: str = "int8",
):
    """XNNPACK's scheme; ``float_layers`` (module names such as ``stem``, ``classifier``) stay fp32.

    ``observer`` sets how post-training calibration picks activation ranges: ``histogram`` (XNNPACK's
    default: the range that minimises the rounding + clipping error on the observed histogram) or
    ``minmax`` (the observed extremes). Quantization-aware training always uses moving-average min/max.
    ``runtime`` ``litert``: LiteRT's own PT2E quantizer (litert-torch), the same scheme (int8 weights
    symmetric per channel, int8 activations per tensor, histogram ranges), which its converter lowers to
    TFLite's int8 kernels. ``activations`` ``int16``: the same graph with 16-bit activations as Arm's a16w8
    scheme has them (symmetric; histogram ranges held better on photos of other classes than the observed
    extremes, 96.6 vs 94.6 % at 0.25x: clipping rare outliers still pays at 16 bits), INT8 weights as before.
    """
    if activations != "int8" and (qat or runtime != "xnnpack"):
        raise ParameterError("activations", f"`activations` {activations}: post-training, for QDQ ONNX only")
    if runtime == "litert":
        require("litert_torch", "INT8 .tflite files", LITERT_HINT)
        from litert_torch.quantize import pt2e_quantizer as lq

        config = lq.get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
        quantizer = lq.PT2EQuantizer().set_global(config)
        for name in float_layers:
            quantizer.set_module_name(name, None)
        if observer != "histogram":
            raise ParameterError("observer", f"`observer` {observer}: LiteRT's quantizer picks histogram ranges only")
        return quantizer
    require("executorch", "INT8 quantization with the XNNPACK quantizer", EXECUTORCH_HINT)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    if observer == "minmax" and not qat:
        act = config.input_activation
        act = replace(act, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = replace(config, input_activation=act, output_activation=act)
    if activations == "int16":  # Arm's a16w8 activations: symmetric int16, ranges from the histogram
        ranges = HistogramObserver.with_args(eps=2**-12) if observer == "histogram" else MinMaxObserver.with_args()
        act = replace(config.input_activation, dtype=torch.int16, quant_min=-32767, quant_max=32767,
                      qscheme=torch.per_tensor_symmetric, observer_or_fake_quant_ctr=ranges)  # fmt: skip
        config = replace(config, input_activation=act, output_activation=act)
    quantizer = XNNPACKQuantizer().set_global(config)
    if float_layers:
        skip = [get_module_name_filter(name) for name in float_layers]
        quantizer.set_filter_function(lambda n: not any(f(n) for f in skip))
    return quantizer


def capture(model: nn.Module, resolution: int, folded: nn.Module | None = None) -> torch.fx.GraphModule:
    """The BatchNorm-folded model (or ``folded``, already folded) as an exported graph with a dynamic
    batch axis (what PT2E rewrites)."""
    folded = (folded if folded is not None else fold_batchnorm(model)).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = (torch.randn(2, 3, resolution, resolution),)
    return torch.export.export(folded, example, dynamic_shapes={"x": {0: batch}}).module()


def calibrate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    resolution: int,
    cfg: PtqConfig | None = None,
    log: Callable[[str], None] | None = None,
    runtime: str = "xnnpack",
) -> torch.fx.GraphModule:
    """Post-training INT8: observe activation ranges on ``batches`` of preprocessed photos, then convert.

    Without ``cfg``, XNNPACK's plain calibration (what ``export --int8`` does for ``.pte``); ``PtqConfig()``
    adds range equalization before, and re-rounded weights and bias correction after (what ``quantize``
    does by default). ``log`` gets a line per re-rounded layer. ``runtime`` ``litert``: LiteRT's quantizer,
    and the weights left float in the graph (quantized by it), as LiteRT's converter wants them.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    cfg = cfg or PtqConfig(equalize=False, bias_correction=False, rounding_steps=0)
    batches = [x for x in batches if len(x)]
    if not batches:
        raise ValueError("no calibration photos could be read")
    names = dict(model.named_modules())
    unknown = [n for n in cfg.float_layers if n not in names or not n]
    if unknown:
        top = ", ".join(n for n, _ in model.named_children())
        raise ParameterError("float_layers", f"`float_layers`: no layer named {unknown[0]!r} (top-level: {top})")
    folded = fold_batchnorm(model).eval()
    if cfg.equalize:
        equalize(folded, batches)
    if runtime not in RUNTIMES:
        raise ParameterError("runtime", f"`runtime` must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    quantizer = _quantizer(False, cfg.float_layers, cfg.observer, runtime, cfg.activations)
    prepared = prepare_pt2e(capture(model, resolution, folded), quantizer)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    quantized = convert(prepared, fold=runtime != "litert")
    if cfg.bias_correction or cfg.rounding_steps:
        x = torch.cat(batches)[: cfg.bias_correction_photos]
        correct_layers(quantized, folded, x, cfg.rounding_steps, cfg.bias_correction, log)
    return quantized


def _set_observers(gm: torch.fx.GraphModule, enabled: bool) -> None:
    for m in gm.modules():
        if hasattr(m, "enable_observer") and hasattr(m, "disable_observer"):
            (m.enable_observer if enabled else m.disable_observer)()


LOSSES = ("kl", "logits")


def distill_step(
    student: nn.Module, teacher: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer, loss: str = "kl"
) -> float:
    """One step of matching the teacher; returns the loss. ``kl``: its class distribution (KL divergence),
    which on photos of a few classes only pins the logits of those; ``logits``: all of its logits (mean
    squared difference), so every class of the label space keeps its place."""
    with torch.no_grad():
        target = teacher(x)
    out = student(x)
    if loss == "logits":
        value = F.mse_loss(out, target)
    else:
        value = F.kl_div(F.log_softmax(out, dim=1), F.softmax(target, dim=1), reduction="batchmean")
    opt.zero_grad(set_to_none=True)
    value.backward()
    opt.step()
    return float(value.detach())


def qat_distill(
    model: nn.Module,
    batches: Callable[[int], Iterator[torch.Tensor]],
    steps_per_epoch: int,
    resolution: int,
    cfg: QatConfig | None = None,
    log: Callable[[str], None] | None = None,
    calibration: Sequence[torch.Tensor] | None = None,
) -> torch.fx.GraphModule:
    """Quantization-aware fine-tuning of the folded model against itself in fp32; returns the trained
    fake-quantized graph (``convert`` turns it into INT8, ``tuned_float`` takes its float weights out).

    ``batches(epoch)`` yields augmented, preprocessed photo batches for one epoch. The learning rate
    follows a cosine to zero; activation observers freeze after ``freeze_observers_at`` of the steps
    so the last steps adapt the weights to fixed ranges, the ones the INT8 file will use.
    ``calibration`` (plain photo batches) sets the activation observers before the first step.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    cfg = cfg or QatConfig()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    torch.manual_seed(cfg.seed)
    teacher = fold_batchnorm(model).eval()
    student = prepare_qat_pt2e(capture(model, resolution), _quantizer(qat=True))
    if calibration:
        with torch.no_grad():
            for x in calibration:
                student(x)
    # The graph stays in eval semantics (no dropout; BatchNorm is folded): the fake quantizers observe
    # whenever their observers are enabled, train mode or not, and the student must match the teacher.
    params = [p for n, p in student.named_parameters() if cfg.train_classifier or not n.startswith("classifier")]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    step, t0, losses = 0, time.monotonic(), []
    while step < total:
        for x in batches(step // steps_per_epoch):
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            if step == int(cfg.freeze_observers_at * total):
                _set_observers(student, False)
            losses.append(distill_step(student, teacher, x, opt, cfg.loss))
            step += 1
            if step % 25 == 0 or step == total or step <= 3:
                log(f"qat step {step}/{total}: distillation loss {sum(losses[-25:]) / len(losses[-25:]):.4f} "
                    f"({time.monotonic() - t0:.0f} s)")  # fmt: skip
    _set_observers(student, False)
    return student


def convert(prepared: torch.fx.GraphModule, fold: bool = True) -> torch.fx.GraphModule:
    """The INT8 graph (quantize/dequantize around int8 weights) of a calibrated or fine-tuned graph;
    ``fold`` False keeps the weights float, quantized inside the graph (what LiteRT's converter reads)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(prepared, fold_quantize=fold)


def tuned_float(student: torch.fx.GraphModule, model: nn.Module) -> nn.Module:
    """The folded fp32 model carrying the fine-tuned weights: for runtimes that quantize on their own."""
    folded = fold_batchnorm(model).eval()
    params = dict(student.named_parameters())
    missing = [k for k, _ in folded.named_parameters() if k not in params]
    if missing:
        raise ValueError(f"fine-tuned graph lacks parameters {missing[:3]}")
    with torch.no_grad():
        for k, p in folded.named_parameters():
            p.copy_(params[k])
    return folded
