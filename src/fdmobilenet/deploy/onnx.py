"""ONNX: fp32 export with torch.onnx's dynamo exporter, and INT8 QDQ via ONNX Runtime's static quantizer.

The graph is exported with BatchNorm folded and a dynamic batch axis, and carries the metadata
(``metadata.py``) that lets ``OnnxClassifier`` run it with no PyTorch model code.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import ParameterError
from .._utils import atomic_write_bytes, require
from ..preprocess import Preprocess
from .fold import fold_batchnorm
from .metadata import INTEGER_PRECISIONS, export_metadata, read_onnx_metadata, set_onnx_metadata
from .samples import image_paths, load_batch

DEFAULT_OPSET = 18  # what torch.onnx's dynamo exporter (torch 2.14) emits
INT16_QDQ_OPSET = 21  # the first where QuantizeLinear/DequantizeLinear take int16
MIN_OPSET = 13  # older TensorRT / RKNN / Hailo / onnx2tf read 13-17; ReduceMean is rewritten for them
INPUT_NAME, OUTPUT_NAME = "input", "logits"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
KEEP_FLOAT_CHOICES = ("stem", "classifier")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    meta: dict[str, Any],
    resolution: int = 224,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write ``model`` (BatchNorm folded) as ONNX with a dynamic batch axis; returns the metadata stored.

    Uses torch.onnx's dynamo exporter (``torch.export`` + onnxscript); its log goes to stderr only if it fails.
    """
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch.onnx's exporter)")
    check_opset(opset)
    proto = _to_onnx(fold_batchnorm(model), resolution, opset)
    full_meta = export_metadata(meta, resolution, model)
    full_meta["opset"] = _opset_of(proto)
    set_onnx_metadata(proto, full_meta)
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return full_meta


def _to_onnx(module: nn.Module, resolution: int, opset: int) -> Any:
    """torch.onnx's dynamo export of ``module`` with a dynamic batch axis, at ``opset``: a ModelProto."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = torch.randn(2, 3, resolution, resolution)
    log = io.StringIO()  # the exporter's progress log; shown only if it fails
    try:
        with contextlib.redirect_stdout(log):
            prog = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=max(opset, DEFAULT_OPSET),
                dynamic_shapes={"x": {0: batch}},
                external_data=False,
                optimize=True,
            )
    except Exception:
        sys.stderr.write(log.getvalue())
        raise
    return lower_opset(prog.model_proto, opset)


def export_quantized_onnx(
    quantized: nn.Module,
    path: str | os.PathLike,
    meta: dict[str, Any],
    opset: int = DEFAULT_OPSET,
    activations: str = "int8",
) -> dict[str, Any]:
    """Write a PT2E INT8 graph (``deploy.quantize``) as QDQ ONNX; ``meta`` is the fp32 export's metadata.
    ``activations`` ``int16`` (an A16W8 graph): written at opset 21, the first whose QDQ pairs take int16."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch.onnx's exporter)")
    opset = qdq_opset(opset, activations)
    with warnings.catch_warnings():  # a PT2E graph reports training mode; it has no dropout or BatchNorm left
        warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
        proto = _to_onnx(quantized, int(meta["resolution"]), opset)
    precision = "a16w8" if activations == "int16" else "int8"
    meta = {**meta, "opset": _opset_of(proto), "precision": precision}
    set_onnx_metadata(proto, meta)
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return meta


def qdq_opset(opset: int, activations: str = "int8") -> int:
    """The opset a QDQ file is written at: ``opset``, or 21 for int16 activations, the first whose
    QuantizeLinear takes int16 (another ``opset`` asked for is refused)."""
    check_opset(opset)
    if activations != "int16":
        return opset
    if opset != DEFAULT_OPSET:
        raise ParameterError("opset", f"`opset` {opset}: int16 activations need opset {INT16_QDQ_OPSET} "
                             "(int16 QuantizeLinear); leave `opset` at its default")  # fmt: skip
    return INT16_QDQ_OPSET


def check_opset(opset: int) -> None:
    """Opsets 13 (what older TensorRT, RKNN, Hailo and onnx2tf toolchains read) to the exporter's own."""
    if not MIN_OPSET <= opset <= DEFAULT_OPSET:
        raise ParameterError(
            "opset",
            f"`opset` {opset}: choose {MIN_OPSET} to {DEFAULT_OPSET} (13 is QuantizeLinear's per-channel "
            f"minimum; {DEFAULT_OPSET} is what this torch exports)",
        )


def _constants(proto: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name (the shape/axes inputs the rewrites read)."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return consts


def _drop_allowzero(proto: Any, opset: int) -> None:
    """Reshape-14's allowzero only matters for a 0 in the target shape: drop it where the shape has none."""
    consts = _constants(proto)
    for n in proto.graph.node:
        keep = [a for a in n.attribute if not (a.name == "allowzero" and a.i)]
        if n.op_type != "Reshape" or len(keep) == len(n.attribute):
            continue
        if n.input[1] not in consts or (consts[n.input[1]] == 0).any():
            raise ParameterError(
                "opset", f"`opset` {opset}: a Reshape needs allowzero (opset 14+); use `opset` {DEFAULT_OPSET}"
            )
        del n.attribute[:]
        n.attribute.extend(keep)


def _global_pool_nodes(proto: Any) -> None:
    """ReduceMean over H and W (keepdims) -> GlobalAveragePool, which is the same in every opset.

    Opset 18 moved ReduceMean's axes from an attribute to an input, and onnx's version converter
    writes an invalid node going back; the classifiers here only average over the full feature map.
    """
    from onnx import helper

    consts = _constants(proto)
    for i, n in enumerate(proto.graph.node):
        if n.op_type != "ReduceMean" or len(n.input) != 2 or n.input[1] not in consts:
            continue
        axes = sorted(int(a) % 4 for a in consts[n.input[1]].ravel())
        keep = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
        if axes != [2, 3] or not keep:
            raise ValueError(f"cannot lower ReduceMean over axes {axes} (keepdims={keep}) below opset 18")
        proto.graph.node[i].CopyFrom(helper.make_node("GlobalAveragePool", [n.input[0]], list(n.output), n.name))
    used = {i for n in proto.graph.node for i in n.input}
    unused = [t for t in proto.graph.initializer if t.name not in used]
    for t in unused:
        proto.graph.initializer.remove(t)


# Ops whose definition is the same in opsets 13-18 for the graphs exported here (later versions only
# widened type lists, e.g. bfloat16; Reshape-14's allowzero defaults to the opset-13 behaviour).
_STABLE_13_TO_18 = {
    "Add", "AveragePool", "Concat", "Constant", "Conv", "DequantizeLinear", "Flatten", "Gemm",
    "GlobalAveragePool", "MatMul", "MaxPool", "Mul", "QuantizeLinear", "Relu", "Reshape", "Transpose",
}  # fmt: skip


def lower_opset(proto: Any, opset: int) -> Any:
    """The graph at ``opset`` (13-17 for older toolchains), or unchanged at the exporter's own.

    onnx's version converter has no downgrade adapters for most ops (Relu 14 -> 13 fails), so the
    graph is relabelled instead, after checking that every op it uses means the same at ``opset``.
    """
    if opset >= _opset_of(proto):
        return proto
    _global_pool_nodes(proto)
    ops = {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")}
    if unknown := ops - _STABLE_13_TO_18:
        raise ParameterError("opset", f"`opset` {opset}: the graph uses {', '.join(sorted(unknown))}, which "
                             f"changed after opset {opset}; use `opset` {DEFAULT_OPSET}")  # fmt: skip
    _drop_allowzero(proto, opset)
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    return proto


def _opset_of(proto: Any) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


# --- INT8 (ONNX Runtime static quantization) -------------------------------------------------------


class ImageCalibrationReader:
    """Feeds preprocessed calibration images to ONNX Runtime's calibrator, a few at a time."""

    def __init__(self, paths: Sequence[Path], meta: dict[str, Any], batch: int = 1):
        self.paths, self.batch, self._i = list(paths), batch, 0
        self.preprocess = Preprocess.from_meta(meta)  # once, not per chunk

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self._i < len(self.paths):
            chunk = self.paths[self._i : self._i + self.batch]
            self._i += self.batch
            try:
                return {INPUT_NAME: load_batch(chunk, self.preprocess).numpy()}
            except ValueError:  # a chunk of unreadable files: try the next one
                continue
        return None

    def rewind(self) -> None:
        self._i = 0


class ArrayCalibrationReader:
    """Feeds already preprocessed (1, 3, R, R) arrays to the calibrator (benchmarks, tests)."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays, self._i = arrays, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.arrays):
            return None
        self._i += 1
        return {INPUT_NAME: self.arrays[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


def check_keep_float(keep_float: Sequence[str]) -> None:
    """Reject ``keep_float`` names other than 'stem' and 'classifier' before any slow work."""
    unknown = set(keep_float) - set(KEEP_FLOAT_CHOICES)
    if unknown:
        raise ParameterError(
            "keep_float", f"`keep_float` accepts stem, classifier or none, not {', '.join(sorted(unknown))}"
        )


def float_node_names(proto: Any, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes to leave in float: 'stem' (the first conv) and/or 'classifier' (the final Gemm/MatMul)."""
    check_keep_float(keep_float)
    names = []
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if "stem" in keep_float and convs:
        names.append(convs[0].name)
    if "classifier" in keep_float:
        names += [n.name for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")][-1:]
    return names


def _calibration_reader(
    calibration: str | os.PathLike | Sequence[Path] | np.ndarray, size: int, meta: dict[str, Any], seed: int
) -> tuple[Any, str, int]:
    """The calibrator's data reader, a description of the source and how many images it holds."""
    if isinstance(calibration, np.ndarray):
        arrays = [calibration[i : i + 1].astype(np.float32) for i in range(len(calibration))]
        return ArrayCalibrationReader(arrays), "preprocessed array", len(calibration)
    if isinstance(calibration, (str, os.PathLike)):
        paths = image_paths(calibration, size, seed)
        return ImageCalibrationReader(paths, meta), str(calibration), len(paths)
    paths = list(calibration)[:size]
    return ImageCalibrationReader(paths, meta), "image list", len(paths)


def quantize_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: str | os.PathLike | Sequence[Path] | np.ndarray,
    calibration_size: int = 200,
    method: str = "percentile",
    keep_float: Sequence[str] = ("classifier",),
    percentile: float = 99.99,
    seed: int = 0,
) -> dict[str, Any]:
    """Static post-training INT8 quantization (QDQ, per-channel int8 weights, uint8 activations).

    Defaults come from ``benchmarks/calibration.py``: percentile (99.99) ranges kept top-1 closest
    to fp32, MinMax and Entropy (identical ranges in ONNX Runtime 1.32) lost the most. The classifier
    stays float (1% of the MACs); the stem is quantized: a float stem made OpenVINO's INT8
    FD-MobileNet 0.5x 1.36x slower, and keeping it float changed top-1 agreement by ~1-3 points only.

    ``calibration`` is a folder of representative photos (``calibration_size`` are sampled), a list
    of image paths, or an (N, 3, R, R) array of already preprocessed inputs (benchmarks, tests). The
    QDQ file runs on ONNX Runtime and OpenVINO alike; it keeps the fp32 file's metadata plus how it
    was calibrated.
    """
    onnx = require("onnx", "INT8 quantization")
    oq = require("onnxruntime.quantization", "INT8 quantization")
    if method not in CALIBRATION_METHODS:
        raise ParameterError(
            "calibration_method",
            f"`calibration_method` must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}",
        )
    if calibration_size < 1:
        raise ParameterError("calibration_size", f"`calibration_size` must be >= 1, got {calibration_size}")
    meta = read_onnx_metadata(fp32_path)
    if not meta.get("resolution"):
        raise ValueError(f"{fp32_path} has no fdmobilenet metadata; quantize a file written by `fdmobilenet export`")
    if meta.get("precision") in INTEGER_PRECISIONS:
        raise ValueError(f"{fp32_path} is already quantized; quantize the fp32 export")
    reader, source, n = _calibration_reader(calibration, calibration_size, meta, seed)
    calib_method = {
        "minmax": oq.CalibrationMethod.MinMax,
        "percentile": oq.CalibrationMethod.Percentile,
        "entropy": oq.CalibrationMethod.Entropy,
    }[method]
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="fdm-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        qout = Path(tmp) / "int8.onnx"
        # Shape inference + graph cleanup first, as ONNX Runtime's quantization guide asks.
        oq.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        exclude = float_node_names(onnx.load(str(pre)), keep_float)
        with contextlib.redirect_stdout(io.StringIO()):  # the quantizer prints its progress
            oq.quantize_static(
                str(pre),
                str(qout),
                reader,
                quant_format=oq.QuantFormat.QDQ,
                per_channel=True,
                activation_type=oq.QuantType.QUInt8,
                weight_type=oq.QuantType.QInt8,
                calibrate_method=calib_method,
                nodes_to_exclude=exclude,
                extra_options=extra,
            )
        proto = onnx.load(str(qout))
    meta.update(
        precision="int8",
        calibration={
            "method": method,
            "images": n,
            "source": source,
            "keep_float": list(keep_float),
            **({"percentile": percentile} if method == "percentile" else {}),
        },
    )
    set_onnx_metadata(proto, meta)
    atomic_write_bytes(out_path, proto.SerializeToString())
    return meta
