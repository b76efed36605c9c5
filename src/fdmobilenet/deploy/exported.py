"""An exported file from the outside: which format its name asks for (``format_of``), opening it as a
classifier or detector (``open_exported``), and the report of writing and checking it (``ExportReport``),
shared by the ``export`` command (``pipeline``) and the ``quantize`` command (``quantize_pipeline``), which
both write files and neither of which should hold the other's code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import ParameterError
from ..models.pretrained import is_detector_meta
from .executorch import PteClassifier, export_pte, export_quantized_pte
from .fidelity import fidelity_table
from .metadata import INTEGER_PRECISIONS
from .runtime import OnnxClassifier
from .verify import Agreement, measure_agreement

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pt2": "pt2", ".pte": "executorch", ".tflite": "tflite"}
FORMATS = tuple(SUFFIXES.values())


def format_of(output: str | os.PathLike, fmt: str | None = None) -> str:
    """The format an output name asks for; ``fmt`` must agree with the suffix (a mismatched name misleads)."""
    suffix = Path(output).suffix.lower()
    known = ", ".join(f"{k} ({v})" for k, v in SUFFIXES.items())
    if suffix not in SUFFIXES:
        raise ParameterError("output", f"`output` {output}: unknown suffix {suffix or '(none)'!r}; use one of {known}")
    if fmt and fmt != SUFFIXES[suffix]:
        raise ParameterError("fmt", f"`output` {output} names a {SUFFIXES[suffix]} file but `fmt` is {fmt}; "
                                    f"drop `fmt` (the suffix decides) or rename the output")  # fmt: skip
    return SUFFIXES[suffix]


def open_exported(path: str | os.PathLike, backend: str = "ort", threads: int | None = None):
    """An exported file as a classifier (``model(batch) -> logits``): ONNX on ``backend``, or a ``.pte``; a
    detector's file (metadata ``task: detection``) as a detector with the PyTorch SSDLite's contract (a list
    of float CHW images in [0, 1] -> per-image ``{"boxes", "scores", "labels"}``, ``deploy.detector_runner``)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".pt", ".pt2"):  # torch formats are for loading in Python, not for these runtimes
        raise ParameterError(
            "exported",
            f"{path} is a {suffix} (torch.export / TorchScript) file: load it with torch.export.load or "
            "torch.jit.load; `exported` files are .onnx, .pte or .tflite (export with -o model.onnx, ...)",
        )
    if suffix == ".pte":
        clf: Any = PteClassifier(path, threads)
    elif suffix == ".tflite":
        from .litert import TfliteClassifier  # ai-edge-litert: its own extra

        return TfliteClassifier(path, threads)
    else:
        clf = OnnxClassifier(path, backend, threads)
    if not is_detector_meta(clf.meta):
        return clf
    from .detector_runner import OnnxDetector, PteDetector  # torchvision: only for detectors

    if isinstance(clf, PteClassifier):
        return PteDetector(path, threads, loaded=clf)
    return OnnxDetector(path, backend, threads, loaded=clf)


LOW_INT8_AGREEMENT = 90.0  # % top-1 agreement with fp32 below which an INT8 export gets a warning


@dataclass
class ExportReport:
    """One file written by ``export_weights``: where, in which format, its metadata and its agreement."""

    path: str
    format: str
    meta: dict[str, Any]
    agreement: Agreement
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON row of this file (what ``export`` prints as JSON)."""
        return {
            "path": self.path,
            "format": self.format,
            "model": self.meta["model"],
            "resolution": self.meta["resolution"],
            **({"task": "detection", "postprocess": self.meta["postprocess"]} if self._detector else {}),
            **({"opset": self.meta["opset"]} if "opset" in self.meta else {}),
            **({"calibration": self.meta["calibration"]} if "calibration" in self.meta else {}),
            **self.agreement.as_dict(),
            **({"fidelity": self.extra["fidelity"]} if "fidelity" in self.extra else {}),
        }

    @property
    def _detector(self) -> bool:
        return is_detector_meta(self.meta)

    def __str__(self) -> str:
        what = f"{self.format}, {self.meta['model']} at {self.meta['resolution']} px"
        if self._detector:
            where = "in the graph" if self.meta["postprocess"] == "graph" else "in Python (fdmobilenet's runner)"
            what += f", box decoding and NMS {where}"
        s = f"wrote {self.path} ({what}): {self.agreement}"
        agree = getattr(self.agreement, "top1_agreement_real", None)  # a detector's check has none
        if self.meta.get("precision") in INTEGER_PRECISIONS and agree is not None and agree < LOW_INT8_AGREEMENT:
            s += (
                f"\nwarning: the INT8 file names the same class as fp32 on only {agree:.1f}% of the real photos "
                f"checked (below {LOW_INT8_AGREEMENT:g}%): expect its accuracy to drop; `fdmobilenet quantize` "
                "(range equalization, re-rounded weights, bias correction) keeps closer to fp32, or calibrate on "
                "more varied photos"
            )
        if "fidelity" in self.extra:
            scheme = "A16W8" if self.meta.get("precision") == "a16w8" else "INT8"
            s += "\n" + fidelity_report(self.extra["fidelity"], scheme)
        return s


def fidelity_report(result: dict[str, Any], scheme: str = "INT8") -> str:
    """``quantize``'s short table: photos of other classes first, or a line saying none were given;
    ``scheme`` names the file's (INT8, A16W8)."""
    groups = result["groups"]
    other = {k: g for k, g in groups.items() if k.startswith("other:")}
    lines = []
    if other:
        n = sum(g["n"] for g in other.values())
        agree = sum(g["agreement"] * g["n"] for g in other.values()) / n
        kl = sum(g["kl"] * g["n"] for g in other.values()) / n
        lines.append(f"{scheme} vs fp32 on photos of other classes: agreement {agree:.1f} %, KL {kl:.4f} ({n} photos)")
    else:
        lines.append(
            f"{scheme} vs fp32 on photos of other classes: not measured (no `fidelity_data` folder given); "
            "below: photos like the calibration's, and altered copies of them (a hint, not the same figure)"
        )
    lines += fidelity_table(result, "  all measured photos").splitlines()[1:]
    return "\n".join(lines)


def int8_report(
    model: nn.Module, path: Path, fmt: str, meta: dict, real: torch.Tensor | None, res: int
) -> ExportReport:
    """An INT8 file must give finite logits; its agreement with fp32 is reported, not enforced."""
    agreement = measure_agreement(model, open_exported(path), real, resolution=res)
    if not np.isfinite(agreement.max_abs_diff_random):
        raise ValueError(f"{path}: the INT8 model produces non-finite logits; recalibrate with other photos")
    return ExportReport(str(path), fmt, meta, agreement)


def runtime_file(fmt: str) -> tuple[Any, Any, Any, str]:
    """(runner, fp32 writer, INT8 writer, PT2E quantizer runtime) of a ``.pte`` (``executorch``) or ``.tflite``."""
    if fmt == "tflite":
        from .litert import TfliteClassifier, export_quantized_tflite, export_tflite  # ai-edge-litert: own extra

        return TfliteClassifier, export_tflite, export_quantized_tflite, "litert"
    return PteClassifier, export_pte, export_quantized_pte, "xnnpack"
