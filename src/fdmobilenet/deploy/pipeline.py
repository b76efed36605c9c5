"""The ``export`` command as a library call: weights file in, checked deployment file(s) out.

Every file written is compared with the PyTorch model it came from before success is reported;
an fp32 file that disagrees beyond float rounding is an error, an INT8 file must at least give
finite logits (its agreement is reported, not enforced: quantization changes logits by design).
A detector's file (fp32 .onnx or .pte, ``deploy.detector``) must find every PyTorch detection.

What an exported file is from the outside (its format, opening it, the report) is in ``exported``, the
``quantize`` command in ``quantize_pipeline``; both are re-exported here, where they were imported from.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._errors import ParameterError, ParameterPathError
from .._outputs import check_output
from .._utils import remove_orphan_temps, require
from ..models import build_from_weights
from ..models.pretrained import is_detector_meta
from ..preprocess import Preprocess
from .exported import (
    FORMATS,
    LOW_INT8_AGREEMENT,
    SUFFIXES,
    ExportReport,
    fidelity_report,
    format_of,
    int8_report,
    open_exported,
    runtime_file,
)
from .metadata import export_metadata
from .onnx import CALIBRATION_METHODS, DEFAULT_OPSET, check_keep_float, check_opset, export_onnx, quantize_onnx
from .quantize_pipeline import quantize_weights
from .runtime import OnnxClassifier
from .samples import image_paths, load_batch
from .torch_formats import export_pt2, export_torchscript, load_pt2, load_torchscript
from .verify import check_float_agreement, measure_agreement

# the export command's own, and what was defined here before exported and quantize_pipeline split off
__all__ = [
    "FORMATS",
    "LOW_INT8_AGREEMENT",
    "SUFFIXES",
    "ExportConfig",
    "ExportReport",
    "export_weights",
    "fidelity_report",
    "format_of",
    "open_exported",
    "quantize_weights",
]


@dataclass(frozen=True)
class ExportConfig:
    """How ``export_weights`` writes and checks a file (``QatConfig``'s sibling for ``quantize_weights``).

    Settings that contradict each other, or a missing calibration folder, are refused here, where the
    command line and Python callers both pass, before the slow model build; the errors name the fields.
    ``fmt``, if given, must agree with the output's suffix; ``int8`` needs ``calibration`` (a folder of
    photos like the ones the model will see); ``keep_fp32`` also keeps the fp32 ONNX an INT8 ``.onnx``
    starts from as ``NAME.fp32.onnx``; real photos for the check come from ``verify_data`` (default: the
    calibration folder), without any only random inputs are compared.

    ``postprocess`` is for detectors: ``graph`` (the default for .onnx) puts box decoding and NMS in the
    ONNX graph, ``none`` leaves them to fdmobilenet's runner (the graph returns the raw outputs and the
    anchors); a .pte is always ``none`` (ExecuTorch has no NMS kernel). Detectors export to fp32 .onnx/.pte.
    """

    fmt: str | None = None
    resolution: int | None = None
    opset: int = DEFAULT_OPSET
    int8: bool = False
    keep_fp32: bool = False
    calibration: str | os.PathLike | None = None
    calibration_size: int = 200
    calibration_method: str = "percentile"
    calibration_percentile: float = 99.99
    keep_float: tuple[str, ...] = ("classifier",)
    verify_data: str | os.PathLike | None = None
    verify_size: int = 32
    postprocess: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if self.postprocess is not None and self.postprocess not in ("graph", "none"):
            raise ParameterError("postprocess", f"`postprocess` must be graph or none, got {self.postprocess!r}")
        if self.fmt is not None and self.fmt not in FORMATS:
            raise ParameterError("fmt", f"`fmt` must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        check_opset(self.opset)
        if self.int8 and not self.calibration:
            raise ParameterError(
                "calibration", "`int8` needs `calibration` DIR: a folder of photos like the ones the model will see"
            )
        if not self.int8 and self.calibration:
            raise ParameterError("calibration", "`calibration` is only used with `int8`")
        if self.calibration and not Path(self.calibration).is_dir():
            raise ParameterPathError("calibration", f"`calibration` folder {self.calibration} does not exist")
        if self.keep_fp32 and not self.int8:
            raise ParameterError(
                "keep_fp32", "`keep_fp32` keeps the fp32 file an `int8` .onnx export starts from; drop it here"
            )
        for name in ("calibration_size", "verify_size"):
            if getattr(self, name) < 1:
                raise ParameterError(name, f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ParameterError(
                "calibration_method",
                f"`calibration_method` must be one of {', '.join(CALIBRATION_METHODS)}, "
                f"got {self.calibration_method!r}",
            )
        if not 0 < self.calibration_percentile <= 100:
            raise ParameterError(
                "calibration_percentile",
                f"`calibration_percentile` must be in (0, 100], got {self.calibration_percentile}",
            )
        check_keep_float(self.keep_float)

    def check_format(self, fmt: str) -> None:
        """Refuse settings the output's format cannot honour, and missing extras, before the slow work."""
        if self.int8 and fmt not in ("onnx", "executorch", "tflite"):
            raise ParameterError("int8", f"`int8` writes .onnx (QDQ), .pte (XNNPACK) or .tflite files, not {fmt}")
        if self.keep_fp32 and fmt != "onnx":
            raise ParameterError(
                "keep_fp32", "`keep_fp32` keeps the fp32 file an `int8` .onnx export starts from; drop it here"
            )
        if self.int8 and fmt == "onnx":
            require("onnxruntime.quantization", "`int8`")
        if fmt == "onnx":
            require("onnxruntime", "checking the exported ONNX file")


def export_weights(
    weights: str | os.PathLike,
    output: str | os.PathLike,
    config: ExportConfig | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
) -> list[ExportReport]:
    """Export a weights file to the format of ``output``'s suffix and check every file written against the
    PyTorch model.

    With ``config.int8``, ``output`` is the INT8 file calibrated on ``config.calibration``: ONNX Runtime's
    static quantizer for ``.onnx``, the XNNPACK quantizer for ``.pte``. ``model_name`` overrides the model
    stored with the weights. An existing ``output`` (and ``keep_fp32``'s ``NAME.fp32.onnx``) is replaced only
    when fdmobilenet wrote it, or with ``overwrite``; a link, folder or device never (``_outputs``): checked
    before the model is built.
    """
    c = config or ExportConfig()
    fmt = format_of(output, c.fmt)
    c.check_format(fmt)
    check_output(output, "output", overwrite)
    if c.keep_fp32:
        check_output(_fp32_path(Path(output)), "keep_fp32", overwrite)
    model, meta = build_from_weights(weights, model_name, c.resolution)
    res = c.resolution or meta.get("resolution", 224)
    meta = {**meta, "source_weights": Path(weights).name}
    out = Path(output)
    remove_orphan_temps(out.parent, out.name)  # of a killed export to the same file (ours only: .fdm-tmp.*)
    if is_detector_meta(meta) or hasattr(model, "forward_network"):
        from .detector import export_detector  # torchvision: only for detectors

        return [ExportReport(*export_detector(model, meta, out, fmt, res, c))]
    if c.postprocess is not None:
        raise ParameterError("postprocess", f"`postprocess` is for detectors; {meta['model']} is a classifier")
    verify_dir = c.verify_data or c.calibration
    vmeta = export_metadata(meta, res, model)
    pre = Preprocess.from_meta(vmeta)
    real = load_batch(image_paths(verify_dir, c.verify_size, seed=1), pre) if verify_dir else None

    if fmt in ("executorch", "tflite"):
        return [_export_runtime_file(model, out, fmt, vmeta, pre, c, real)]
    if fmt != "onnx":
        exporter, loader = (export_torchscript, load_torchscript) if fmt == "torchscript" else (export_pt2, load_pt2)
        written = exporter(model, out, meta, res)
        loaded, _ = loader(out)
        agreement = measure_agreement(model, loaded, real, resolution=res)
        check_float_agreement(agreement, str(out))
        return [ExportReport(str(out), fmt, written, agreement)]

    with tempfile.TemporaryDirectory(prefix="fdm-export-") as tmp:
        fp32_path = _fp32_path(out) if c.keep_fp32 else Path(tmp) / "fp32.onnx"
        written = export_onnx(model, fp32_path if c.int8 else out, meta, res, c.opset)
        check = fp32_path if c.int8 else out
        agreement = measure_agreement(model, OnnxClassifier(check), real, resolution=res)
        check_float_agreement(agreement, str(check))
        reports = [ExportReport(str(check), "onnx-fp32", written, agreement)] if c.keep_fp32 or not c.int8 else []
        if c.int8:
            written = quantize_onnx(
                fp32_path,
                out,
                c.calibration,
                c.calibration_size,
                c.calibration_method,
                c.keep_float,
                percentile=c.calibration_percentile,
            )
            reports.append(int8_report(model, out, "onnx-int8", written, real, res))
    return reports


def _fp32_path(out: Path) -> Path:
    """Where ``keep_fp32`` keeps the fp32 file an INT8 ``.onnx`` starts from: ``NAME.fp32.onnx`` beside it."""
    return out.with_name(out.stem + ".fp32.onnx")


def _export_runtime_file(
    model: nn.Module, out: Path, fmt: str, full: dict, pre: Preprocess, c: ExportConfig, real: torch.Tensor | None
) -> ExportReport:
    """fp32 or INT8 ExecuTorch (.pte, XNNPACK) or LiteRT (.tflite, full-integer) file, checked like the rest. INT8:
    PT2E calibration on ``c.calibration_size`` photos with the runtime's own quantizer (the same scheme: histogram
    activation ranges, per-channel weights); ``full`` is the export metadata, ``pre`` its preprocessing."""
    runner, write, write_int8, runtime = runtime_file(fmt)
    res = pre.resolution
    if not c.int8:
        write(model, out, full, res)
        agreement = measure_agreement(model, runner(out), real, resolution=res)
        check_float_agreement(agreement, str(out))
        return ExportReport(str(out), f"{fmt}-fp32", full, agreement)
    from .quantize import calibrate

    photos = load_batch(image_paths(c.calibration, c.calibration_size, seed=0), pre)
    quantized = calibrate(model, photos.split(16), res, runtime=runtime)
    full = {**full, "precision": "int8", "calibration": {"method": "histogram", "images": len(photos)}}
    write_int8(quantized, out, full, res)
    return int8_report(model, out, f"{fmt}-int8", full, real, res)
