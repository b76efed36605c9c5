"""Deployment: BatchNorm-folded exports (ONNX fp32 / INT8 QDQ, TorchScript, pt2, ExecuTorch) with their
metadata, the check of every export against PyTorch, INT8 by calibration or quantization-aware
distillation (``quantize``), and runners for ONNX (ONNX Runtime, OpenVINO) and ``.pte`` files.
``export_weights`` / ``quantize_weights`` are what the ``export`` / ``quantize`` commands run. Re-exports only.

Layers, lowest first: fold, metadata, samples, verify -> onnx, torch_formats, executorch, litert, runtime
-> refine (equalization, AdaRound, bias correction) -> quantize, ethosu, fidelity -> exported (an exported
file's format, opening, report) -> pipeline (export) and quantize_pipeline (quantize); ``bench`` with its cases
(``bench_cases``) sits beside them and imports the layers below. ``detector`` (SSDLite detectors as .onnx with
NMS in the graph or not, and .pte) and ``detector_runner`` (running those files) sit beside
onnx/executorch/runtime and are imported only for detectors: they load torchvision's detection code.
"""

from .fidelity import altered_photos, fidelity_table, int8_fidelity
from .fold import fold_batchnorm
from .metadata import complete_metadata, decode_metadata, encode_metadata, export_metadata, read_onnx_metadata
from .onnx import (
    CALIBRATION_METHODS,
    DEFAULT_OPSET,
    MIN_OPSET,
    ArrayCalibrationReader,
    ImageCalibrationReader,
    check_keep_float,
    export_onnx,
    float_node_names,
    quantize_onnx,
)
from .pipeline import (
    FORMATS,
    SUFFIXES,
    ExportConfig,
    ExportReport,
    export_weights,
    format_of,
    open_exported,
    quantize_weights,
)
from .quantize import PtqConfig, QatConfig
from .runtime import BACKENDS, OnnxClassifier
from .samples import image_paths, load_batch
from .torch_formats import export_pt2, export_torchscript, load_pt2, load_torchscript
from .verify import (
    Agreement,
    DetectionAgreement,
    check_detection_agreement,
    check_float_agreement,
    float_tolerance,
    measure_agreement,
    measure_detection_agreement,
)

__all__ = [
    "BACKENDS",
    "CALIBRATION_METHODS",
    "DEFAULT_OPSET",
    "FORMATS",
    "MIN_OPSET",
    "SUFFIXES",
    "Agreement",
    "DetectionAgreement",
    "ArrayCalibrationReader",
    "ExportConfig",
    "ExportReport",
    "ImageCalibrationReader",
    "OnnxClassifier",
    "PtqConfig",
    "QatConfig",
    "altered_photos",
    "check_detection_agreement",
    "check_float_agreement",
    "check_keep_float",
    "complete_metadata",
    "decode_metadata",
    "encode_metadata",
    "export_metadata",
    "export_onnx",
    "export_pt2",
    "export_torchscript",
    "export_weights",
    "float_node_names",
    "fidelity_table",
    "float_tolerance",
    "format_of",
    "open_exported",
    "quantize_weights",
    "fold_batchnorm",
    "image_paths",
    "int8_fidelity",
    "load_batch",
    "load_pt2",
    "load_torchscript",
    "measure_agreement",
    "measure_detection_agreement",
    "quantize_onnx",
    "read_onnx_metadata",
]
