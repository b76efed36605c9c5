"""The ``export`` command as a library call: weights file in, checked deployment file(s) out.

Every file written is compared with the PyTorch model it came from before success is reported;
an fp32 file that disagrees beyond float rounding is an error, an INT8 file must at least give
finite logits (its agreement is reported, not enforced: quantization changes logits by design).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import require
from ..models import build_from_weights
from .metadata import export_metadata
from .onnx import DEFAULT_OPSET, check_keep_float, export_onnx, quantize_onnx
from .runtime import OnnxClassifier
from .samples import image_paths, load_batch
from .torch_formats import export_pt2, export_torchscript, load_pt2, load_torchscript
from .verify import Agreement, check_float_agreement, measure_agreement

FORMATS = ("onnx", "torchscript", "pt2")


@dataclass
class ExportReport:
    """One file written by ``export_weights``: where, in which format, its metadata and its agreement."""

    path: str
    format: str
    meta: dict[str, Any]
    agreement: Agreement
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON row ``export --json`` prints."""
        return {
            "path": self.path,
            "format": self.format,
            "model": self.meta["model"],
            "resolution": self.meta["resolution"],
            **({"opset": self.meta["opset"]} if "opset" in self.meta else {}),
            **({"calibration": self.meta["calibration"]} if "calibration" in self.meta else {}),
            **self.agreement.as_dict(),
        }

    def __str__(self) -> str:
        return (
            f"wrote {self.path} ({self.format}, {self.meta['model']} at {self.meta['resolution']} px): {self.agreement}"
        )


def _check_request(fmt: str, int8: bool, calibration: str | os.PathLike | None, keep_float: Sequence[str]) -> None:
    """Refuse inconsistent options and missing extras before the slow model build and export."""
    if int8 and fmt != "onnx":
        raise ValueError("--int8 applies to --format onnx only")
    if int8 and not calibration:
        raise ValueError("--int8 needs --calibration DIR: a folder of photos like the ones the model will see")
    if not int8 and calibration:
        raise ValueError("--calibration is only used with --int8")
    if calibration and not Path(calibration).is_dir():
        raise FileNotFoundError(f"--calibration folder {calibration} does not exist")
    if int8:
        require("onnxruntime.quantization", "--int8")
    if fmt == "onnx":
        require("onnxruntime", "checking the exported ONNX file")
    check_keep_float(keep_float)


def export_weights(
    weights: str | os.PathLike,
    output: str | os.PathLike,
    model_name: str | None = None,
    fmt: str = "onnx",
    resolution: int | None = None,
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    calibration_size: int = 200,
    calibration_method: str = "percentile",
    calibration_percentile: float = 99.99,
    keep_float: Sequence[str] = ("classifier",),
    verify_data: str | os.PathLike | None = None,
    verify_size: int = 32,
) -> list[ExportReport]:
    """Export a weights file to ``fmt`` and check every file written against the PyTorch model.

    With ``int8`` (ONNX only) the fp32 file goes beside ``output`` as ``NAME.fp32.onnx`` and
    ``output`` is its quantized copy, calibrated on ``calibration``. Real photos for the check come
    from ``verify_data`` (default: the calibration folder); without any, only random inputs are compared.
    """
    _check_request(fmt, int8, calibration, keep_float)
    model, meta = build_from_weights(weights, model_name, resolution)
    res = resolution or meta.get("resolution", 224)
    meta = {**meta, "source_weights": Path(weights).name}
    out = Path(output)
    verify_dir = verify_data or calibration
    vmeta = export_metadata(meta, res, model)
    real = load_batch(image_paths(verify_dir, verify_size, seed=1), vmeta) if verify_dir else None

    if fmt != "onnx":
        exporter, loader = (export_torchscript, load_torchscript) if fmt == "torchscript" else (export_pt2, load_pt2)
        written = exporter(model, out, meta, res)
        loaded, _ = loader(out)
        agreement = measure_agreement(model, loaded, real, resolution=res)
        check_float_agreement(agreement, str(out))
        return [ExportReport(str(out), fmt, written, agreement)]

    fp32_path = out.with_name(out.stem + ".fp32.onnx") if int8 else out
    written = export_onnx(model, fp32_path, meta, res, opset)
    agreement = measure_agreement(model, OnnxClassifier(fp32_path), real, resolution=res)
    check_float_agreement(agreement, str(fp32_path))
    reports = [ExportReport(str(fp32_path), "onnx-fp32", written, agreement)]
    if int8:
        written = quantize_onnx(
            fp32_path,
            out,
            calibration,
            calibration_size,
            calibration_method,
            keep_float,
            percentile=calibration_percentile,
        )
        agreement = measure_agreement(model, OnnxClassifier(out), real, resolution=res)
        if not np.isfinite(agreement.max_abs_diff_random):
            raise ValueError(f"{out}: the INT8 model produces non-finite logits; recalibrate with other photos")
        reports.append(ExportReport(str(out), "onnx-int8", written, agreement))
    return reports
