"""Arm Ethos-U NPUs through ExecuTorch's Arm backend and Arm's Vela compiler: the ``.pte`` to flash, and what
Vela plans for it (SRAM, flash, operators on the NPU vs the CPU, cycles and time at its clock).

The model is BatchNorm-folded, quantized with ExecuTorch's ``EthosUQuantizer`` (INT8 per-channel weights,
per-tensor activations, int32 biases; or A16W8, 16-bit activations), with ``quantize``'s post-training steps
when photos are given (range equalization for INT8, AdaRound re-rounding, bias correction), lowered to TOSA
and compiled by Vela. Without photos, random inputs calibrate: the memory and time Vela reports do not depend on the
values, only the accuracy does. Vela's numbers are its own performance model (no hardware, no FVP).

Needs ``ethos-u-vela`` (``pip install 'fdmobilenet[mcu]'``) and ``tosa-tools`` (TOSA serialization), which
pins numpy<2.2 on Python < 3.14: install it with ``pip install --no-deps tosa-tools`` (its serializer runs
on numpy 2.4; it also needs ``ml_dtypes`` and ``flatbuffers``, which ExecuTorch already brings).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._outputs import check_output
from .._utils import atomic_write_bytes, require
from .fold import fold_batchnorm
from .quantize import PtqConfig

ETHOSU_HINT = "pip install 'fdmobilenet[mcu]', then tosa-tools with pip's no-deps option (it pins numpy<2.2)"
ETHOSU_TARGET = re.compile(r"^ethos-u(55-(32|64|128|256)|65-(256|512)|85-(128|256|512|1024|2048))$")


def is_ethosu_target(target: str) -> bool:
    return bool(ETHOSU_TARGET.match(target.lower()))


@dataclass
class VelaReport:
    """What Vela planned for one model on one Ethos-U configuration."""

    target: str
    system_config: str
    memory_mode: str
    clock_hz: float
    sram_bytes: int  # all SRAM Vela uses: the feature-map arena plus weight buffers
    flash_bytes: int  # weights and command stream, Vela-encoded (off-chip flash, or DRAM on U65)
    npu_ops: int
    cpu_ops: int  # operators Vela leaves to the CPU
    outside_delegate: list[str]  # operators ExecuTorch did not hand to the NPU at all (run by its CPU kernels)
    cycles: int
    inference_ms: float
    macs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        ops = f"{self.npu_ops} on the NPU, {self.cpu_ops} on the CPU"
        if self.outside_delegate:
            ops += f", outside the delegate: {', '.join(self.outside_delegate)}"
        return (
            f"Vela ({self.target}, {self.system_config}, {self.memory_mode}, {self.clock_hz / 1e6:g} MHz): "
            f"SRAM {self.sram_bytes / 1024:.1f} KiB, flash {self.flash_bytes / 1024:.1f} KiB, "
            f"{self.inference_ms:.3f} ms ({self.cycles:,} cycles); operators: {ops}"
        )


def _check_target(target: str) -> str:
    if not is_ethosu_target(target):
        raise ValueError(f"unknown Ethos-U target {target!r}; e.g. ethos-u55-128, ethos-u55-256, ethos-u65-256")
    return target.lower()


def _read_summary(out_dir: Path, target: str, log: str) -> dict[str, Any]:
    found = sorted(out_dir.rglob("out_summary_*.csv"))
    if not found:
        raise RuntimeError(f"Vela wrote no summary under {out_dir}")
    with open(found[0]) as f:
        row = next(csv.DictReader(f))
    counts = {k: int(n) for k, n in re.findall(r"^(CPU|NPU) operators = (\d+)", log, re.MULTILINE)}
    return {
        "target": target,
        "system_config": row["system_config"],
        "memory_mode": row["memory_mode"],
        "clock_hz": float(row["core_clock"]),
        "sram_bytes": round(float(row["sram_memory_used"]) * 1024),
        "flash_bytes": round(
            1024
            * max(
                float(row["off_chip_flash_memory_used"]),
                float(row["on_chip_flash_memory_used"]),
                float(row["dram_memory_used"]),
            )
        ),
        "npu_ops": counts.get("NPU", 0),
        "cpu_ops": counts.get("CPU", 0),
        "cycles": round(float(row["cycles_total"])),
        "inference_ms": float(row["inference_time"]) * 1e3,
        "macs": int(float(row["nn_macs"])),
    }


_NOT_COMPUTE = ("quantize_per", "dequantize_per", "getitem", "executorch_call_delegate")


def quantize_ethosu(
    model: nn.Module,
    resolution: int,
    target: str = "ethos-u55-128",
    photos: Sequence[torch.Tensor] = (),
    ptq: PtqConfig | None = None,
) -> torch.fx.GraphModule:
    """The converted PT2E graph an Ethos-U ``.pte`` is lowered from (it runs in PyTorch too: what
    benchmarks/int8/fidelity.py measures). ``ptq`` as ``quantize``'s (``PtqConfig``: INT8, or A16W8 with
    ``activations="int16"``); with ``photos`` (preprocessed calibration batches) the same equalization,
    re-rounding and bias correction as ``quantize`` (an int32 bias here, in its own steps); without, 4 random
    inputs calibrate (enough for memory and time, not for accuracy) and nothing is corrected."""
    require("executorch", "Ethos-U lowering (ExecuTorch's Arm backend)", ETHOSU_HINT)
    require("tosa_serializer", "Arm's Ethos-U quantizer (TOSA serialization, the tosa-tools package)", ETHOSU_HINT)
    from executorch.backends.arm.ethosu import EthosUCompileSpec
    from executorch.backends.arm.quantizer import (
        EthosUQuantizer,
        get_symmetric_a16w8_quantization_config,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .quantize import correct_layers, equalize

    ptq = ptq or PtqConfig()
    folded = fold_batchnorm(model).eval()
    batches = [x for x in photos if len(x)]
    if batches and ptq.equalize:
        equalize(folded, batches)
    scheme = (
        get_symmetric_a16w8_quantization_config if ptq.activations == "int16" else get_symmetric_quantization_config
    )
    quantizer = EthosUQuantizer(EthosUCompileSpec(_check_target(target))).set_global(scheme(is_per_channel=True))
    # captured at batch 1 (Arm's annotation passes need static shapes); its ops (conv, ReLU, mean, linear) take
    # any batch once the input guard is off, so calibration and the corrections run on whole batches
    example = (torch.zeros(1, 3, resolution, resolution),)
    graph = torch.export.export(folded, example).module(check_guards=False)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in batches or [torch.randn(1, 3, resolution, resolution) for _ in range(4)]:
            prepared(x)
    converted = convert_pt2e(prepared)
    if batches and (ptq.bias_correction or ptq.rounding_steps):
        x = torch.cat(batches)[: ptq.bias_correction_photos]
        correct_layers(converted, folded, x, ptq.rounding_steps, ptq.bias_correction)
    return converted


def lower_ethosu(
    model: nn.Module,
    resolution: int,
    target: str = "ethos-u55-128",
    photos: Sequence[torch.Tensor] = (),
    equalize: bool | None = None,
    activations: str = "int8",
    ptq: PtqConfig | None = None,
) -> tuple[bytes, VelaReport]:
    """The ``.pte`` bytes for ``target`` (batch 1) and Vela's report, from ``quantize_ethosu``'s graph.
    ``activations`` ``int16``: A16W8 (Arm's 16-bit activation scheme, INT8 weights), which every Ethos-U
    runs; ``equalize`` None: range equalization for INT8 activations only (as ``PtqConfig``); ``ptq``, when
    given, overrides both."""
    target = _check_target(target)
    ptq = ptq or PtqConfig(equalize=equalize, activations=activations)
    require("ethosu.vela", "Ethos-U compilation (Arm's Vela compiler)", ETHOSU_HINT)
    from executorch.backends.arm.ethosu import EthosUCompileSpec, EthosUPartitioner
    from executorch.exir import to_edge_transform_and_lower

    converted = quantize_ethosu(model, resolution, target, photos, ptq)
    example = (torch.zeros(1, 3, resolution, resolution),)
    with tempfile.TemporaryDirectory(prefix="fdm-vela-") as tmp:
        spec = EthosUCompileSpec(target)
        spec.dump_intermediate_artifacts_to(tmp)
        program = torch.export.export(converted, example)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # Vela prints its summary; the CSV beside it has the numbers
            edge = to_edge_transform_and_lower(program, partitioner=[EthosUPartitioner(spec)])
        outside = sorted(
            {
                str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                for n in edge.exported_program().graph.nodes
                if n.op == "call_function" and not any(k in str(n.target) for k in _NOT_COMPUTE)
            }
        )
        report = VelaReport(**_read_summary(Path(tmp), target, log.getvalue()), outside_delegate=outside)
        return edge.to_executorch().buffer, report


def export_ethosu(
    model: nn.Module,
    path: str | os.PathLike,
    resolution: int,
    target: str = "ethos-u55-128",
    photos: Sequence[torch.Tensor] = (),
    activations: str = "int8",
    ptq: PtqConfig | None = None,
) -> VelaReport:
    """Write the Ethos-U ``.pte`` for ``target`` and return what Vela planned for it (``lower_ethosu``)."""
    buffer, report = lower_ethosu(model, resolution, target, photos, activations=activations, ptq=ptq)
    atomic_write_bytes(path, buffer)
    return report


def vela_available() -> bool:
    """Whether Vela and TOSA serialization import (the Ethos-U path's optional dependencies)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("ethosu", "tosa_serializer"))


def export_ethosu_weights(
    weights: str | os.PathLike,
    output: str | os.PathLike,
    target: str = "ethos-u55-128",
    calibration: str | os.PathLike | None = None,
    calibration_size: int = 200,
    resolution: int | None = None,
    model_name: str | None = None,
    activations: str = "int8",
    overwrite: bool = False,
) -> VelaReport:
    """``export -o m.pte --target ethos-u55-128``: a weights file as an Ethos-U ``.pte``, calibrated on
    ``calibration_size`` photos of ``calibration`` and corrected as ``quantize`` does (``quantize_ethosu``);
    ``activations`` ``int16``: A16W8, twice the activation SRAM, far closer to fp32. An existing ``output``
    is replaced only with ``overwrite`` or when fdmobilenet recognises it (an Ethos-U .pte carries no
    metadata, so replacing one needs ``overwrite``), checked before the model is built (``_outputs``)."""
    from ..models import build_from_weights
    from ..preprocess import Preprocess
    from .metadata import export_metadata
    from .samples import image_paths, load_batch

    if Path(output).suffix != ".pte":
        raise ValueError(f"an Ethos-U file is an ExecuTorch .pte; got -o {output}")
    check_output(output, "output", overwrite)
    model, meta = build_from_weights(weights, model_name, resolution)
    res = resolution or meta.get("resolution", 224)
    photos: list[torch.Tensor] = []
    if calibration:
        pre = Preprocess.from_meta(export_metadata(meta, res, model))
        photos = list(load_batch(image_paths(calibration, calibration_size, seed=0), pre).split(16))
    return export_ethosu(model, output, res, target, photos, activations)
