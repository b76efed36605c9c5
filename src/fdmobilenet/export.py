"""Deployment formats: ONNX (fp32, or INT8 QDQ via ONNX Runtime's quantizer), TorchScript and torch.export.

Every exporter folds BatchNorm into the convolutions first, so the deployed graph is conv/ReLU
only, and every exported file is checked against the PyTorch model it came from before the
command reports success: a deployment format that silently changes the predictions is worse
than none.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .weights import atomic_write_bytes

DEPLOY_HINT = 'pip install "fdmobilenet[deploy]"'
OPENVINO_HINT = 'pip install "fdmobilenet[openvino]"'
DEFAULT_OPSET = 18  # what torch.onnx's dynamo exporter (torch 2.14) emits
MIN_OPSET = 18  # onnx's version converter turns the 18->17 ReduceMean into an invalid node, so no down-conversion
INPUT_NAME, OUTPUT_NAME = "input", "logits"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Keys of the ONNX metadata whose values are JSON (the rest are plain strings).
_JSON_KEYS = {"num_classes", "class_names", "mean", "std", "crop_pct", "input_size", "resolution", "macs"}
_JSON_KEYS |= {"calibration", "opset"}


class MissingDependencyError(ImportError, ValueError):
    """An optional package is missing; the message names the extra that provides it."""


def require(module: str, purpose: str, hint: str = DEPLOY_HINT):
    """Import an optional dependency or raise a MissingDependencyError saying which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed ({e}). "
            f"Install it with: {hint}"
        ) from e


# --- BatchNorm folding --------------------------------------------------------------------------


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm2d folded into the conv before it.

    In every network here a BatchNorm is registered right after the conv whose output it
    normalises (``ConvBNReLU``, the ShuffleNet unit's compress/bn1, depthwise/bn2, expand/bn3), so
    pairs are found by registration order; a BatchNorm left over means a model this rule does not
    fit, which is an error rather than a silently unfolded graph. The exporters compare the folded
    model's outputs with the original's, so a wrong pairing cannot go unnoticed either.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm layers {left[:4]}: each must directly follow its Conv2d")
    return model


# --- metadata -------------------------------------------------------------------------------------


def export_metadata(meta: dict[str, Any], resolution: int, model: nn.Module) -> dict[str, Any]:
    """What a runtime needs to preprocess and label images without the PyTorch package: stored in the file."""
    from . import __version__
    from .complexity import profile
    from .data import imagenet_classes

    num_classes = int(meta.get("num_classes") or model.classifier.out_features)
    names = meta.get("class_names")
    if names is None and num_classes == 1000:
        names = imagenet_classes()[1]
    prof = profile(model, resolution)
    return {
        "model": str(meta["model"]),
        "num_classes": num_classes,
        "class_names": list(names) if names is not None else [str(i) for i in range(num_classes)],
        "mean": [float(v) for v in meta.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(v) for v in meta.get("std", (0.229, 0.224, 0.225))],
        "crop_pct": float(meta.get("crop_pct", 0.875)),
        "interpolation": str(meta.get("interpolation", "bilinear")),
        "resolution": int(resolution),
        "input_size": [3, int(resolution), int(resolution)],
        "macs": prof.macs,
        "precision": "fp32",
        "producer": f"fdmobilenet {__version__}",
    }


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if k in _JSON_KEYS else str(v) for k, v in meta.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of ``encode_metadata``; unknown keys stay strings."""
    out: dict[str, Any] = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v) if k in _JSON_KEYS else v
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The fdmobilenet metadata stored in an ONNX file (empty for a foreign file)."""
    onnx = require("onnx", "reading ONNX metadata")
    m = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in m.metadata_props})


def _set_metadata(model_proto, meta: dict[str, Any]) -> None:
    del model_proto.metadata_props[:]
    for k, v in encode_metadata(meta).items():
        p = model_proto.metadata_props.add()
        p.key, p.value = k, v
    model_proto.doc_string = f"{meta.get('model')} ({meta.get('precision')}), exported by {meta.get('producer')}"


# --- ONNX fp32 ------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    meta: dict[str, Any],
    resolution: int = 224,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write ``model`` (BatchNorm folded) as ONNX with a dynamic batch axis; returns the metadata stored.

    Uses torch.onnx's dynamo exporter (``torch.export`` + onnxscript); its log goes to stderr.
    """
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch.onnx's exporter)")
    if opset < MIN_OPSET:
        raise ValueError(
            f"--opset {opset}: this exporter writes opset {MIN_OPSET} or newer (onnx's converter cannot take "
            f"this graph down to {opset} correctly)"
        )
    folded = fold_batchnorm(model)
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = torch.randn(2, 3, resolution, resolution)
    log = io.StringIO()  # the exporter's progress log; shown only if it fails
    try:
        with contextlib.redirect_stdout(log):
            prog = torch.onnx.export(
                folded,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes={"x": {0: batch}},
                external_data=False,
                optimize=True,
            )
    except Exception:
        sys.stderr.write(log.getvalue())
        raise
    proto = prog.model_proto
    if opset != _opset_of(proto):
        from onnx import version_converter

        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as e:  # the converter raises bare RuntimeErrors
            raise ValueError(f"cannot convert the exported graph to opset {opset} ({e}); use --opset 18") from e
    full_meta = export_metadata(meta, resolution, model)
    full_meta["opset"] = _opset_of(proto)
    _set_metadata(proto, full_meta)
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return full_meta


def _opset_of(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


# --- verification ---------------------------------------------------------------------------------


@dataclass
class Agreement:
    """How closely a deployed model reproduces the PyTorch logits."""

    max_abs_diff_random: float
    max_abs_diff_real: float | None = None
    top1_agreement_real: float | None = None  # percent of real images with the same top-1 class
    n_real: int = 0
    logit_scale: float = 0.0  # largest |logit| seen, to judge the differences against

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    def __str__(self) -> str:
        s = f"max |logit diff| {self.max_abs_diff_random:.2e} on random input"
        if self.n_real:
            s += (
                f", {self.max_abs_diff_real:.2e} on {self.n_real} real images "
                f"(top-1 agreement {self.top1_agreement_real:.1f}%)"
            )
        else:
            s += "; no real images checked (pass --verify-data DIR)"
        return s + f"; logits up to {self.logit_scale:.1f}"


def float_tolerance(logit_scale: float) -> float:
    """Largest logit difference an fp32 export may show: reordered float sums plus folded BatchNorm."""
    return 1e-4 + 2e-5 * logit_scale


def image_paths(root: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files anywhere under ``root`` (sorted, then a seeded sample of ``limit`` if there are more)."""
    from .data import is_image_file

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(
        Path(d) / f
        for d, _, names in os.walk(root, followlinks=True)  # class folders may be symlinks (split datasets)
        for f in names
        if is_image_file(Path(d) / f)
    )
    if not files:
        raise ValueError(f"{root} holds no image files (.jpg, .jpeg, .png, ...)")
    if limit is not None and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def load_batch(paths: Sequence[Path], meta: dict[str, Any]) -> torch.Tensor:
    """Preprocess images with the eval/predict transform (unreadable ones skipped); an (N, 3, R, R) tensor.

    Unlike ``eval``, JPEGs much larger than the input are decoded in draft mode: this batch only feeds
    the PyTorch-vs-ONNX check and calibration, which see the same tensors either way.
    """
    from .data import BadImageError, eval_transform, load_image

    tf = eval_transform(meta["resolution"], meta["crop_pct"], meta["mean"], meta["std"])
    out = []
    for p in paths:
        with contextlib.suppress(BadImageError):
            out.append(tf(load_image(p, meta["resolution"])))
    if not out:
        raise ValueError(f"none of the {len(paths)} images could be read")
    return torch.stack(out)


@torch.no_grad()
def compare(
    reference: nn.Module, deployed: Any, real: torch.Tensor | None, seed: int = 0, resolution: int = 224
) -> Agreement:
    """Logits of ``deployed`` (any callable on an NCHW float tensor) against ``reference``."""
    reference = reference.eval()
    g = torch.Generator().manual_seed(seed)
    rnd = torch.randn(3, 3, resolution, resolution, generator=g)  # batch 3: the exports were traced at 2
    ref, out = reference(rnd), torch.as_tensor(np.asarray(deployed(rnd)))
    res = Agreement(float((ref - out).abs().max()), logit_scale=float(ref.abs().max()))
    if real is not None and len(real):
        ref, out = reference(real), torch.as_tensor(np.asarray(deployed(real)))
        res.max_abs_diff_real = float((ref - out).abs().max())
        res.top1_agreement_real = 100.0 * float((ref.argmax(1) == out.argmax(1)).float().mean())
        res.n_real = len(real)
        res.logit_scale = max(res.logit_scale, float(ref.abs().max()))
    return res


def check_float_agreement(a: Agreement, what: str) -> None:
    """Raise if an fp32 export's logits differ from PyTorch's beyond float rounding."""
    tol = float_tolerance(a.logit_scale)
    worst = max(a.max_abs_diff_random, a.max_abs_diff_real or 0.0)
    if not np.isfinite(worst) or worst > tol:
        raise ValueError(
            f"{what} disagrees with the PyTorch model: max |logit diff| {worst:.3g} > tolerance {tol:.3g}. "
            "The file was written but should not be used; please report this with the model name and versions."
        )


# --- INT8 (ONNX Runtime static quantization) -------------------------------------------------------


class ImageCalibrationReader:
    """Feeds preprocessed calibration images to ONNX Runtime's calibrator, a few at a time."""

    def __init__(self, paths: Sequence[Path], meta: dict[str, Any], batch: int = 1):
        self.paths, self.meta, self.batch, self._i = list(paths), meta, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self._i < len(self.paths):
            chunk = self.paths[self._i : self._i + self.batch]
            self._i += self.batch
            try:
                return {INPUT_NAME: load_batch(chunk, self.meta).numpy()}
            except ValueError:  # a chunk of unreadable files: try the next one
                continue
        return None

    def rewind(self) -> None:
        self._i = 0


def check_keep_float(keep_float: Sequence[str]) -> None:
    unknown = set(keep_float) - {"stem", "classifier"}
    if unknown:
        raise ValueError(f"--keep-float accepts stem, classifier or none, not {', '.join(sorted(unknown))}")


def float_node_names(proto, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes to leave in float: 'stem' (the first conv) and/or 'classifier' (the final Gemm/MatMul)."""
    check_keep_float(keep_float)
    names = []
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if "stem" in keep_float and convs:
        names.append(convs[0].name)
    if "classifier" in keep_float:
        names += [n.name for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")][-1:]
    return names


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
        raise ValueError(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if calibration_size < 1:
        raise ValueError(f"--calibration-size must be >= 1, got {calibration_size}")
    meta = read_onnx_metadata(fp32_path)
    if not meta.get("resolution"):
        raise ValueError(f"{fp32_path} has no fdmobilenet metadata; quantize a file written by `fdmobilenet export`")
    if meta.get("precision") == "int8":
        raise ValueError(f"{fp32_path} is already INT8; quantize the fp32 export")
    if isinstance(calibration, np.ndarray):
        arrays = [calibration[i : i + 1].astype(np.float32) for i in range(len(calibration))]
        reader: Any = _ArrayReader(arrays)
        source, n = "preprocessed array", len(calibration)
    else:
        paths = (
            image_paths(calibration, calibration_size, seed)
            if isinstance(calibration, (str, os.PathLike))
            else list(calibration)[:calibration_size]
        )
        reader = ImageCalibrationReader(paths, meta)
        source, n = (str(calibration) if isinstance(calibration, (str, os.PathLike)) else "image list"), len(paths)
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
    _set_metadata(proto, meta)
    atomic_write_bytes(out_path, proto.SerializeToString())
    return meta


class _ArrayReader:
    def __init__(self, arrays: list[np.ndarray]):
        self.arrays, self._i = arrays, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.arrays):
            return None
        self._i += 1
        return {INPUT_NAME: self.arrays[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


# --- TorchScript and torch.export ------------------------------------------------------------------


def export_torchscript(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224) -> dict:
    """A traced TorchScript module (BatchNorm folded) with the metadata as the extra file ``fdmobilenet.json``."""
    folded = fold_batchnorm(model)
    full_meta = export_metadata(meta, resolution, model)
    with torch.no_grad():
        traced = torch.jit.trace(folded, torch.randn(2, 3, resolution, resolution))
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={"fdmobilenet.json": json.dumps(full_meta)})
    atomic_write_bytes(path, buf.getvalue())
    return full_meta


def export_pt2(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224) -> dict:
    """A ``torch.export`` program (BatchNorm folded, dynamic batch) saved with ``torch.export.save``."""
    folded = fold_batchnorm(model)
    full_meta = export_metadata(meta, resolution, model)
    batch = torch.export.Dim("batch", min=1, max=65536)
    ep = torch.export.export(folded, (torch.randn(2, 3, resolution, resolution),), dynamic_shapes={"x": {0: batch}})
    buf = io.BytesIO()
    torch.export.save(ep, buf, extra_files={"fdmobilenet.json": json.dumps(full_meta)})
    atomic_write_bytes(path, buf.getvalue())
    return full_meta


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    extra = {"fdmobilenet.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    return module, json.loads(extra["fdmobilenet.json"] or "{}")


def load_pt2(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    extra = {"fdmobilenet.json": ""}
    ep = torch.export.load(str(path), extra_files=extra)
    return ep.module(), json.loads(extra["fdmobilenet.json"] or "{}")


# --- the command ------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    path: str
    format: str
    meta: dict[str, Any]
    agreement: Agreement
    extra: dict[str, Any] = field(default_factory=dict)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a .safetensors file from `convert` or `train`")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument("-o", "--output", required=True, help="output file (.onnx, .pt for torchscript, .pt2)")
    p.add_argument("--format", choices=("onnx", "torchscript", "pt2"), default="onnx")
    p.add_argument("--resolution", type=int, help="input size (default: the weights')")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    p.add_argument("--int8", action="store_true", help="also quantize: static INT8, QDQ, per-channel weights")
    p.add_argument("--calibration", help="folder of representative photos for --int8 (not the evaluation photos)")
    p.add_argument("--calibration-size", type=int, default=200, help="images sampled from --calibration")
    p.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default="percentile",
        help="activation ranges: percentile (default; clips rare outliers), minmax, entropy",
    )
    p.add_argument("--calibration-percentile", type=float, default=99.99, help="for --calibration-method percentile")
    p.add_argument(
        "--keep-float",
        default="classifier",
        help="layers left in float by --int8: classifier (default), stem,classifier, or none. A float stem "
        "made OpenVINO INT8 1.36x slower on FD-MobileNet 0.5x; better on ONNX Runtime (docs/deployment.md)",
    )
    p.add_argument("--verify-data", help="photos to compare outputs on (default: --calibration)")
    p.add_argument("--verify-size", type=int, default=32, help="how many --verify-data photos to compare on")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(a: argparse.Namespace) -> int:
    from .weights import build_from_weights

    if a.int8 and a.format != "onnx":
        raise ValueError("--int8 applies to --format onnx only")
    if a.int8 and not a.calibration:
        raise ValueError("--int8 needs --calibration DIR: a folder of photos like the ones the model will see")
    if not a.int8 and a.calibration:
        raise ValueError("--calibration is only used with --int8")
    if a.calibration and not Path(a.calibration).is_dir():
        raise FileNotFoundError(f"--calibration folder {a.calibration} does not exist")
    if a.int8:  # fail on a missing extra before the slow export
        require("onnxruntime.quantization", "--int8")
    if a.format == "onnx":
        require("onnxruntime", "checking the exported ONNX file")
    keep_float = [] if a.keep_float.strip().lower() == "none" else [s.strip() for s in a.keep_float.split(",") if s]
    check_keep_float(keep_float)

    model, meta = build_from_weights(a.weights, a.model, a.resolution)
    res = a.resolution or meta.get("resolution", 224)
    meta = {**meta, "source_weights": Path(a.weights).name}
    out = Path(a.output)
    verify_dir = a.verify_data or a.calibration
    vmeta = export_metadata(meta, res, model)
    real = load_batch(image_paths(verify_dir, a.verify_size, seed=1), vmeta) if verify_dir else None

    if a.format == "onnx":
        from .runtime import OnnxClassifier

        fp32_path = out.with_name(out.stem + ".fp32.onnx") if a.int8 else out
        written = export_onnx(model, fp32_path, meta, res, a.opset)
        agreement = compare(model, OnnxClassifier(fp32_path), real, resolution=res)
        check_float_agreement(agreement, str(fp32_path))
        reports = [ExportReport(str(fp32_path), "onnx-fp32", written, agreement)]
        if a.int8:
            written = quantize_onnx(
                fp32_path,
                out,
                a.calibration,
                a.calibration_size,
                a.calibration_method,
                keep_float,
                percentile=a.calibration_percentile,
            )
            agreement = compare(model, OnnxClassifier(out), real, resolution=res)
            if not np.isfinite(agreement.max_abs_diff_random):
                raise ValueError(f"{out}: the INT8 model produces non-finite logits; recalibrate with other photos")
            reports.append(ExportReport(str(out), "onnx-int8", written, agreement))
    else:
        exporter, loader = (
            (export_torchscript, load_torchscript) if a.format == "torchscript" else (export_pt2, load_pt2)
        )
        written = exporter(model, out, meta, res)
        loaded, _ = loader(out)
        agreement = compare(model, loaded, real, resolution=res)
        check_float_agreement(agreement, str(out))
        reports = [ExportReport(str(out), a.format, written, agreement)]

    if a.json:
        rows = [
            {
                "path": r.path,
                "format": r.format,
                "model": r.meta["model"],
                "resolution": r.meta["resolution"],
                **({"opset": r.meta["opset"]} if "opset" in r.meta else {}),
                **({"calibration": r.meta["calibration"]} if "calibration" in r.meta else {}),
                **r.agreement.as_dict(),
            }
            for r in reports
        ]
        print(json.dumps(rows, indent=1))
    else:
        for r in reports:
            print(f"wrote {r.path} ({r.format}, {r.meta['model']} at {r.meta['resolution']} px): {r.agreement}")
    return 0
