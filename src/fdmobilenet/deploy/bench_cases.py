"""What ``bench`` times: every (model, backend) as a ``Case`` whose zero-argument call is the bare runtime call
on pre-allocated input. Building the cases (a seeded model per spec, the fp32/INT8 ONNX and .pte files each
backend needs, a detector's calls with its post-processing) is apart from the timing, the summary and the
plot (``bench``), which only ever see the calls.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import MissingDependencyError
from ..complexity import profile
from ..models import create_model
from .fold import fold_batchnorm
from .onnx import export_onnx, quantize_onnx
from .runtime import OnnxClassifier


@dataclass
class Case:
    """One model at one resolution on one backend, with the zero-argument call that is timed."""

    model: str
    resolution: int
    backend: str
    macs: int
    params: int
    call: Callable[[], Any] | None = None
    note: str = ""
    postprocess: str = ""  # detectors: where the timed call decodes boxes and runs NMS


def spec_model(name: str, res: int) -> nn.Module:
    """The model a ``name`` of ``parse_model_spec`` means (``family:MFLOPS``: the width meeting the budget at
    ``res``), seeded random weights (latency depends on shapes), in eval mode."""
    torch.manual_seed(0)
    family, _, budget = name.partition(":")
    return create_model(family, resolution=res, mflops=float(budget) if budget else None).eval()


def export_files(workdir: Path, name: str, res: int) -> tuple[Path, Path, Path, Path]:
    """The fp32 and int8 ONNX and .pte files bench writes for one model (random weights: only shapes matter)."""
    stem = workdir / f"{name.replace(':', '-')}_{res}"
    return tuple(Path(f"{stem}{suffix}") for suffix in (".onnx", ".int8.onnx", ".pte", ".int8.pte"))


def build_cases(
    specs: list[tuple[str, int]],
    backends: list[str],
    threads: int,
    batch: int,
    workdir: Path,
    calibration: str | None = None,
) -> list[Case]:
    """Build each model once, export what the backends need, and make one timed call per (model, backend)."""
    cases = []
    for k, (name, res) in enumerate(specs, 1):
        print(
            f"bench: preparing {name}@{res} for {', '.join(backends)} ({k}/{len(specs)})", file=sys.stderr, flush=True
        )
        model = spec_model(name, res)
        prof = profile(model, res)
        tag = f"{name}@{res}"
        fp32, int8, pte, pte_int8 = export_files(workdir, name, res)
        if hasattr(model, "forward_network"):  # a detector: post-processing included in every call
            cases += _detector_cases(name, res, model, prof, backends, threads, batch, (fp32, pte))
            continue
        if any(b.startswith(("ort", "openvino")) for b in backends):
            export_onnx(model, fp32, {"model": name}, res)
        if any(b.startswith("executorch") for b in backends):
            _export_pte_pair(model, pte, pte_int8 if "executorch-int8" in backends else None, res, calibration)
        if any(b in ("ort-int8", "openvino-int8") for b in backends):
            # Latency does not depend on the weights' values, only on shapes; calibration sets the scales.
            calib = calibration or np.random.default_rng(0).standard_normal((16, 3, res, res), dtype=np.float32)
            quantize_onnx(fp32, int8, calib, calibration_size=64, method="minmax")
        for backend in backends:
            case = Case(name, res, backend, prof.macs, prof.params)
            try:
                case.call = _make_call(backend, model, (fp32, int8, pte, pte_int8), threads, batch, res)
            except MissingDependencyError:
                raise
            except Exception as e:  # one backend failing (e.g. no C++ compiler for torch.compile) is a row, not a crash
                case.note = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                print(f"bench: {tag} on {backend} unavailable: {case.note}", file=sys.stderr)
            cases.append(case)
    return cases


# Where each backend's timed detector call runs the decoding and NMS (bench_run prints it; rows carry it).
DETECTOR_POSTPROCESS = {
    "torch": "torchvision (the SSD's own)",
    "ort": "in the ONNX graph",
    "ort-raw": "in the ONNX graph",
    "executorch": "torchvision (fdmobilenet's runner)",
}


def _detector_cases(
    name: str, res: int, model: nn.Module, prof: Any, backends: list[str], threads: int, batch: int, files: tuple
) -> list[Case]:
    """A detector's cases: one call is normalise + network + box decoding + per-class NMS on ``batch`` images
    (what an app waits for); fp32 only, on PyTorch, ONNX Runtime (NMS in the graph) and ExecuTorch (the
    network on XNNPACK, NMS in Python). Other backends become rows that say why they did not run."""
    from .detector import export_detector_onnx, export_detector_pte
    from .detector_runner import OnnxDetector, PteDetector

    fp32, pte = files
    meta = {"model": name}
    if any(b in ("ort", "ort-raw") for b in backends):
        export_detector_onnx(model, fp32, meta, res, "graph")
    if "executorch" in backends:
        export_detector_pte(model, pte, meta, res)
    cases = []
    for backend in backends:
        case = Case(name, res, backend, prof.macs, prof.params, postprocess=DETECTOR_POSTPROCESS.get(backend, ""))
        if backend == "torch":
            net = fold_batchnorm(model)
            images = list(torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(0)))
            case.call = lambda net=net, images=images: net(images)
        elif backend in ("ort", "ort-raw"):
            det = OnnxDetector(fp32, threads=threads)
            if backend == "ort":
                case.call = det.runner(batch)
            else:
                feed = {det.input_name: np.random.default_rng(0).random((batch, 3, res, res), dtype=np.float32)}
                case.call = lambda run=det.session.run, feed=feed: run(None, feed)
        elif backend == "executorch":
            case.call = PteDetector(pte, threads).runner(batch)
        else:
            case.note = "detectors are timed in fp32 on torch, ort, ort-raw and executorch"
        cases.append(case)
    return cases


def _export_pte_pair(model: nn.Module, pte: Path, int8: Path | None, res: int, calibration: str | None) -> None:
    """The fp32 ``.pte`` and, if asked, the INT8 one (XNNPACK quantizer; random inputs set the scales
    unless ``calibration`` photos are given: latency depends on shapes, not on values)."""
    from .executorch import export_pte, export_quantized_pte
    from .quantize import calibrate
    from .samples import image_paths, load_batch

    meta = {"model": pte.stem, "resolution": res}
    export_pte(model, pte, meta, res)
    if int8:
        x = load_batch(image_paths(calibration, 16), meta) if calibration else torch.randn(16, 3, res, res)
        q = calibrate(model, x.split(4), res)
        export_quantized_pte(q, int8, meta, res)


def _make_call(
    backend: str, model: nn.Module, files: tuple[Path, ...], threads: int, batch: int, res: int
) -> Callable[[], Any]:
    fp32, int8, pte, pte_int8 = files
    if backend in ("torch", "torch-compile"):
        net = fold_batchnorm(model)  # the same graph the exports contain
        if backend == "torch-compile":
            net = torch.compile(net)
        x = torch.randn(batch, 3, res, res)
        with torch.inference_mode():
            net(x)  # torch.compile compiles here, not in the timed loop
        return lambda net=net, x=x: net(x)
    if backend.startswith("executorch"):
        from .executorch import PteClassifier

        return PteClassifier(pte_int8 if backend.endswith("int8") else pte, threads).runner(batch)
    path = int8 if backend.endswith("int8") else fp32
    runtime = "openvino" if backend.startswith("openvino") else "ort"
    clf = OnnxClassifier(path, runtime, threads)
    return clf.raw_ort_runner(batch) if backend == "ort-raw" else clf.runner(batch)
