"""The ``export`` command as a library call: weights file in, checked deployment file(s) out.

Every file written is compared with the PyTorch model it came from before success is reported;
an fp32 file that disagrees beyond float rounding is an error, an INT8 file must at least give
finite logits (its agreement is reported, not enforced: quantization changes logits by design).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import require
from ..models import build_from_weights
from ..preprocess import Preprocess
from .executorch import PteClassifier, export_pte, export_quantized_pte
from .metadata import export_metadata
from .onnx import DEFAULT_OPSET, check_keep_float, check_opset, export_onnx, export_quantized_onnx, quantize_onnx
from .quantize import QatConfig
from .runtime import OnnxClassifier
from .samples import image_paths, load_batch
from .torch_formats import export_pt2, export_torchscript, load_pt2, load_torchscript
from .verify import Agreement, check_float_agreement, measure_agreement

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pt2": "pt2", ".pte": "executorch"}
FORMATS = tuple(SUFFIXES.values())


def format_of(output: str | os.PathLike, fmt: str | None = None) -> str:
    """The format an output name asks for; ``fmt`` must agree with the suffix (a mismatched name misleads)."""
    suffix = Path(output).suffix.lower()
    known = ", ".join(f"{k} ({v})" for k, v in SUFFIXES.items())
    if suffix not in SUFFIXES:
        raise ValueError(f"-o {output}: unknown suffix {suffix or '(none)'!r}; use one of {known}")
    if fmt and fmt != SUFFIXES[suffix]:
        raise ValueError(f"-o {output} names a {SUFFIXES[suffix]} file but --format is {fmt}; "
                         f"drop --format (the suffix decides) or rename the output")  # fmt: skip
    return SUFFIXES[suffix]


def open_exported(path: str | os.PathLike, backend: str = "ort", threads: int | None = None):
    """An exported file as a classifier (``model(batch) -> logits``): ONNX on ``backend``, or a ``.pte``."""
    if Path(path).suffix.lower() == ".pte":
        return PteClassifier(path, threads)
    return OnnxClassifier(path, backend, threads)


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
    if int8 and fmt not in ("onnx", "executorch"):
        raise ValueError(f"--int8 writes .onnx (QDQ) or .pte (XNNPACK) files, not {fmt}")
    if int8 and not calibration:
        raise ValueError("--int8 needs --calibration DIR: a folder of photos like the ones the model will see")
    if not int8 and calibration:
        raise ValueError("--calibration is only used with --int8")
    if calibration and not Path(calibration).is_dir():
        raise FileNotFoundError(f"--calibration folder {calibration} does not exist")
    if int8 and fmt == "onnx":
        require("onnxruntime.quantization", "--int8")
    if fmt == "onnx":
        require("onnxruntime", "checking the exported ONNX file")
    check_keep_float(keep_float)


def export_weights(
    weights: str | os.PathLike,
    output: str | os.PathLike,
    model_name: str | None = None,
    fmt: str | None = None,
    resolution: int | None = None,
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    keep_fp32: bool = False,
    calibration: str | os.PathLike | None = None,
    calibration_size: int = 200,
    calibration_method: str = "percentile",
    calibration_percentile: float = 99.99,
    keep_float: Sequence[str] = ("classifier",),
    verify_data: str | os.PathLike | None = None,
    verify_size: int = 32,
) -> list[ExportReport]:
    """Export a weights file to ``fmt`` and check every file written against the PyTorch model.

    The format follows the suffix of ``output`` (``fmt``, if given, must agree). With ``int8``,
    ``output`` is the INT8 file calibrated on ``calibration``: ONNX Runtime's static quantizer for
    ``.onnx``, the XNNPACK quantizer for ``.pte``; ``keep_fp32`` also keeps the fp32 ONNX it started
    from as ``NAME.fp32.onnx``. Real photos for the check come from ``verify_data`` (default: the
    calibration folder); without any, only random inputs are compared.
    """
    fmt = format_of(output, fmt)
    check_opset(opset)
    _check_request(fmt, int8, calibration, keep_float)
    if keep_fp32 and not (int8 and fmt == "onnx"):
        raise ValueError("--keep-fp32 keeps the fp32 file an --int8 .onnx export starts from; drop it here")
    model, meta = build_from_weights(weights, model_name, resolution)
    res = resolution or meta.get("resolution", 224)
    meta = {**meta, "source_weights": Path(weights).name}
    out = Path(output)
    verify_dir = verify_data or calibration
    vmeta = export_metadata(meta, res, model)
    real = load_batch(image_paths(verify_dir, verify_size, seed=1), vmeta) if verify_dir else None

    if fmt == "executorch":
        return [_export_pte(model, out, vmeta, res, int8, calibration, calibration_size, real)]
    if fmt != "onnx":
        exporter, loader = (export_torchscript, load_torchscript) if fmt == "torchscript" else (export_pt2, load_pt2)
        written = exporter(model, out, meta, res)
        loaded, _ = loader(out)
        agreement = measure_agreement(model, loaded, real, resolution=res)
        check_float_agreement(agreement, str(out))
        return [ExportReport(str(out), fmt, written, agreement)]

    with tempfile.TemporaryDirectory(prefix="fdm-export-") as tmp:
        fp32_path = out.with_name(out.stem + ".fp32.onnx") if keep_fp32 else Path(tmp) / "fp32.onnx"
        written = export_onnx(model, fp32_path if int8 else out, meta, res, opset)
        check = fp32_path if int8 else out
        agreement = measure_agreement(model, OnnxClassifier(check), real, resolution=res)
        check_float_agreement(agreement, str(check))
        reports = [ExportReport(str(check), "onnx-fp32", written, agreement)] if keep_fp32 or not int8 else []
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
            reports.append(_int8_report(model, out, "onnx-int8", written, real, res))
    return reports


def _int8_report(model, path: Path, fmt: str, meta: dict, real, res: int) -> ExportReport:
    """An INT8 file must give finite logits; its agreement with fp32 is reported, not enforced."""
    agreement = measure_agreement(model, open_exported(path), real, resolution=res)
    if not np.isfinite(agreement.max_abs_diff_random):
        raise ValueError(f"{path}: the INT8 model produces non-finite logits; recalibrate with other photos")
    return ExportReport(str(path), fmt, meta, agreement)


def _export_pte(model, out: Path, full: dict, res: int, int8: bool, calibration, size: int, real) -> ExportReport:
    """fp32 or INT8 (XNNPACK quantizer, calibrated on ``size`` photos) ExecuTorch file, checked like the rest;
    ``full`` is the export metadata."""
    if not int8:
        export_pte(model, out, full, res)
        agreement = measure_agreement(model, PteClassifier(out), real, resolution=res)
        check_float_agreement(agreement, str(out))
        return ExportReport(str(out), "executorch-fp32", full, agreement)
    from .quantize import calibrate

    photos = load_batch(image_paths(calibration, size, seed=0), full)
    quantized = calibrate(model, photos.split(16), res)
    full = {**full, "precision": "int8", "calibration": {"method": "minmax", "images": len(photos)}}
    export_quantized_pte(quantized, out, full, res)
    return _int8_report(model, out, "executorch-int8", full, real, res)


def _photo_batches(paths: list[Path], meta: dict, batch_size: int, workers: int, seed: int):
    """``batches(epoch)``: augmented (random crop, flip) unlabeled photo batches, a seeded order per epoch."""
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from ..data.images import ImageDataset, collate_skip_bad

    pre = Preprocess.from_meta(meta)
    tf = T.Compose([T.RandomResizedCrop(pre.resolution, scale=(0.35, 1.0)), T.RandomHorizontalFlip(),
                    T.ToTensor(), T.Normalize(pre.mean, pre.std)])  # fmt: skip
    dataset = ImageDataset([(p, 0) for p in paths], tf, draft_size=pre.resolution)

    def batches(epoch: int):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        loader = DataLoader(dataset, batch_size, shuffle=True, generator=g, num_workers=workers,
                            collate_fn=collate_skip_bad, drop_last=True)  # fmt: skip
        for x, *_ in loader:
            yield x

    return batches, len(paths) // batch_size


def quantize_weights(
    weights: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike,
    model_name: str | None = None,
    cfg: QatConfig | None = None,
    photos: int | None = None,
    calibration_size: int = 400,
    verify_data: str | os.PathLike | None = None,
    verify_size: int = 200,
    opset: int = DEFAULT_OPSET,
    workers: int = 0,
) -> list[ExportReport]:
    """INT8 that keeps the fp32 accuracy: quantization-aware distillation on unlabeled photos under ``data``.

    The fp32 model is the teacher, so the photos need no labels and may be of other classes than the
    model's, as long as they look like what it will see. ``cfg.epochs == 0`` only calibrates (post-training
    INT8 with the XNNPACK quantizer). ``output`` is a QDQ ``.onnx`` or an XNNPACK ``.pte``; give
    ``verify_data`` photos that were not tuned on to get an honest agreement figure.
    """
    from .quantize import calibrate, convert, qat_distill

    fmt = format_of(output)
    if fmt not in ("onnx", "executorch"):
        raise ValueError(f"-o {output}: quantize writes .onnx (QDQ) or .pte (XNNPACK) files")
    check_opset(opset)
    cfg = cfg or QatConfig()  # QatConfig checks its own ranges
    paths = image_paths(data, photos, cfg.seed)
    model, meta = build_from_weights(weights, model_name)
    res = int(meta.get("resolution", 224))
    full = export_metadata({**meta, "source_weights": Path(weights).name}, res, model)
    # The check photos are read before the (long) fine-tuning, so a bad --verify-data fails at once.
    real = load_batch(image_paths(verify_data, verify_size, seed=1), full) if verify_data else None
    if cfg.epochs > 0:
        if len(paths) < cfg.batch_size:
            raise ValueError(f"--data {data}: {len(paths)} photos, fewer than one batch of {cfg.batch_size}")
        batches, steps = _photo_batches(paths, full, cfg.batch_size, workers, cfg.seed)
        quantized = convert(qat_distill(model, batches, steps, res, cfg))
        how = {"method": "qat-distillation", "epochs": cfg.epochs, "lr": cfg.lr, "photos": len(paths)}
    else:
        calib = load_batch(paths[:calibration_size], full)
        quantized = calibrate(model, calib.split(16), res)
        how = {"method": "ptq-minmax", "images": len(calib)}
    full = {**full, "precision": "int8", "quantization": {**how, "source": str(data)}}
    if fmt == "onnx":
        export_quantized_onnx(quantized, output, full, opset)
    else:
        export_quantized_pte(quantized, output, full, res)
    return [_int8_report(model, Path(output), f"{fmt}-int8", full, real, res)]
