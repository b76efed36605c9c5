"""INT8 with PyTorch's PT2E quantization and the XNNPACK quantizer: calibration, and quantization-aware
fine-tuning by distillation from the fp32 model on unlabeled photos.

Why PT2E: one quantized graph gives both an ExecuTorch ``.pte`` (XNNPACK INT8 kernels, what phones
run) and a QDQ ONNX file (``torch.onnx`` writes QuantizeLinear/DequantizeLinear pairs that ONNX
Runtime and OpenVINO fuse into int8 kernels), with the same scales in both. The scheme is XNNPACK's:
int8 weights, symmetric, per output channel; int8 activations, per tensor.

BatchNorm is folded first, so the graph quantized is exactly the fp32 network that deploys and
fine-tuning moves the folded weights the INT8 kernels will use. Distillation needs no labels: the
student matches the fp32 teacher's softmax (KL divergence), so in-domain photos of any classes do
(Imagenette's ten classes for the 1000-class ImageNet weights).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ParameterError
from .._utils import require
from .executorch import EXECUTORCH_HINT
from .fold import fold_batchnorm


@dataclass
class QatConfig:
    """Quantization-aware fine-tuning: a short, low-lr distillation run (defaults measured in benchmarks/int8)."""

    epochs: float = 1.0
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    freeze_observers_at: float = 0.5  # fraction of the run after which activation ranges stop moving
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse values no run can use (NaN, negative epochs, lr <= 0) here, where CLI and API both pass."""
        checks = {
            "epochs (>= 0)": math.isfinite(self.epochs) and self.epochs >= 0,
            "lr (> 0)": math.isfinite(self.lr) and self.lr > 0,
            "batch_size (>= 1)": self.batch_size >= 1,
            "weight_decay (>= 0)": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "freeze_observers_at (0 to 1)": 0 <= self.freeze_observers_at <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            listed = ", ".join(f"`{b.split()[0]}` {b.split(maxsplit=1)[1]}" for b in bad)
            raise ParameterError(bad[0].split()[0], f"quantization settings out of range: {listed}; got {self}")


def _quantizer(qat: bool):
    require("executorch", "INT8 quantization with the XNNPACK quantizer", EXECUTORCH_HINT)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def capture(model: nn.Module, resolution: int) -> torch.fx.GraphModule:
    """The BatchNorm-folded model as an exported graph with a dynamic batch axis (what PT2E rewrites)."""
    folded = fold_batchnorm(model).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = (torch.randn(2, 3, resolution, resolution),)
    return torch.export.export(folded, example, dynamic_shapes={"x": {0: batch}}).module()


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], resolution: int) -> torch.fx.GraphModule:
    """Post-training INT8: observe activation ranges on ``batches`` of preprocessed photos, then convert."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    prepared = prepare_pt2e(capture(model, resolution), _quantizer(qat=False))
    n = 0
    with torch.no_grad():
        for x in batches:
            prepared(x)
            n += len(x)
    if n == 0:
        raise ValueError("no calibration photos could be read")
    return convert(prepared)


def _set_observers(gm: torch.fx.GraphModule, enabled: bool) -> None:
    for m in gm.modules():
        if hasattr(m, "enable_observer") and hasattr(m, "disable_observer"):
            (m.enable_observer if enabled else m.disable_observer)()


def distill_step(student: nn.Module, teacher: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer) -> float:
    """One step of matching the teacher's class distribution (KL divergence); returns the loss."""
    with torch.no_grad():
        target = F.softmax(teacher(x), dim=1)
    loss = F.kl_div(F.log_softmax(student(x), dim=1), target, reduction="batchmean")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def qat_distill(
    model: nn.Module,
    batches: Callable[[int], Iterator[torch.Tensor]],
    steps_per_epoch: int,
    resolution: int,
    cfg: QatConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> torch.fx.GraphModule:
    """Quantization-aware fine-tuning of the folded model against itself in fp32; returns the trained
    fake-quantized graph (``convert`` turns it into INT8, ``tuned_float`` takes its float weights out).

    ``batches(epoch)`` yields augmented, preprocessed photo batches for one epoch. The learning rate
    follows a cosine to zero; activation observers freeze after ``freeze_observers_at`` of the steps
    so the last steps adapt the weights to fixed ranges, the ones the INT8 file will use.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    cfg = cfg or QatConfig()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    torch.manual_seed(cfg.seed)
    teacher = fold_batchnorm(model).eval()
    student = prepare_qat_pt2e(capture(model, resolution), _quantizer(qat=True))
    # The graph stays in eval semantics (no dropout; BatchNorm is folded): the fake quantizers observe
    # whenever their observers are enabled, train mode or not, and the student must match the teacher.
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
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
            losses.append(distill_step(student, teacher, x, opt))
            step += 1
            if step % 25 == 0 or step == total or step <= 3:
                log(f"qat step {step}/{total}: distillation loss {sum(losses[-25:]) / len(losses[-25:]):.4f} "
                    f"({time.monotonic() - t0:.0f} s)")  # fmt: skip
    _set_observers(student, False)
    return student


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The INT8 graph (quantize/dequantize around int8 weights) of a calibrated or fine-tuned graph."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(prepared)


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
