"""The ``quantize`` command as a library call: weights file and unlabeled photos in, one INT8 file out,
checked against fp32 on photos it was not made from (``quantize_weights``). Apart from ``pipeline`` (the
``export`` command, which re-exports this) because it is its own route: photos sampled and held out, then
calibration with corrections or quantization-aware distillation, then the fidelity check on other photos.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ParameterError, ParameterPathError
from .._outputs import check_output
from .._progress import Progress
from ..models import build_from_weights
from ..preprocess import Preprocess, train_transform
from .exported import ExportReport, format_of, int8_report, open_exported, runtime_file
from .fidelity import altered_photos, int8_fidelity
from .metadata import export_metadata
from .onnx import DEFAULT_OPSET, check_opset, export_quantized_onnx, qdq_opset
from .quantize import PtqConfig, QatConfig
from .samples import image_paths, load_batch


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
    ptq: PtqConfig | None = None,
    fidelity_data: Sequence[str | os.PathLike] = (),
    fidelity_size: int = 200,
    exclude: Collection[str | os.PathLike] = (),
    overwrite: bool = False,
) -> list[ExportReport]:
    """INT8 from unlabeled photos under ``data``, checked against fp32 on photos it was not made from.

    ``exclude``: photos under ``data`` never calibrated or tuned on (a training run's hold-out, kept to score
    the INT8 file on: calibrating on it would flatter the score); they join the fidelity check's held-out group.

    Default (``cfg`` None or ``cfg.epochs == 0``): post-training calibration on ``calibration_size`` of the
    photos with range equalization, re-rounded weights and bias correction (``ptq``, a ``PtqConfig``), the
    route that held best on photos of classes the calibration never saw (benchmarks/int8/fidelity.md).
    ``cfg.epochs > 0``: quantization-aware distillation from the fp32 model (the former default); the
    photos need no labels.
    ``output`` is a QDQ ``.onnx``, an XNNPACK ``.pte`` or a LiteRT ``.tflite``; with ``ptq.activations``
    ``int16`` (A16W8: 16-bit activations, INT8 weights), a QDQ ``.onnx`` at opset 21 only.

    The written file is compared with fp32 (``int8_fidelity``: top-1 agreement and KL) on photos of other
    classes from each ``fidelity_data`` folder, on ``verify_data``, on photos under ``data`` not used, and on
    altered copies of those (up to ``fidelity_size`` per group); the report's ``extra["fidelity"]``.

    An existing ``output`` is replaced only when fdmobilenet wrote it, or with ``overwrite``; a link, folder or
    device never (``_outputs``): checked before any photo is read.
    """
    cfg = cfg or QatConfig(epochs=0.0)  # QatConfig checks its own ranges
    ptq = ptq or PtqConfig()
    fmt = _checked_settings(output, opset, cfg, ptq, calibration_size, fidelity_size, fidelity_data)
    check_output(output, "output", overwrite)
    paths = _photo_paths(data, photos, cfg.seed, exclude)
    model, meta = build_from_weights(weights, model_name)
    res = int(meta.get("resolution", 224))
    full = export_metadata({**meta, "source_weights": Path(weights).name}, res, model)
    pre = Preprocess.from_meta(full)  # once: the check photos, the fine-tuning and the calibration share it
    # The check photos are read before the (long) fine-tuning, so a bad verify_data fails at once.
    real = load_batch(image_paths(verify_data, verify_size, seed=1), pre) if verify_data else None
    if cfg.epochs > 0 and fmt == "tflite":
        raise ParameterError("epochs", "`epochs` > 0 fine-tunes for .onnx/.pte files; a .tflite is calibrated: use 0")
    if cfg.epochs > 0:
        if len(paths) < cfg.batch_size:
            raise ParameterError(
                "data", f"`data` {data}: {len(paths)} photos, fewer than one batch of {cfg.batch_size}"
            )
        used = paths
    else:
        # a seeded sample, not the first files: those are one folder (one class) of a class-per-folder tree
        used = sorted(random.Random(cfg.seed).sample(paths, min(calibration_size, len(paths))))
    check = _fidelity_photos(data, used, pre, fidelity_size, cfg.seed, fidelity_data, real)
    if cfg.epochs > 0:
        quantized, how = _distilled(model, used, pre, res, cfg, workers)
    else:
        quantized, how = _calibrated(model, used, pre, res, ptq, fmt)
    precision = "a16w8" if ptq.activations == "int16" else "int8"
    full = {**full, "precision": precision, "quantization": {**how, "source": str(data)}}
    if fmt == "onnx":
        full = export_quantized_onnx(quantized, output, full, opset, ptq.activations)
    else:
        runtime_file(fmt)[2](quantized, output, full, res)
    report = int8_report(model, Path(output), f"{fmt}-{precision}", full, real, res)
    report.extra["fidelity"] = int8_fidelity(model, open_exported(output), check)
    return [report]


def _checked_settings(
    output: str | os.PathLike,
    opset: int,
    cfg: QatConfig,
    ptq: PtqConfig,
    calibration_size: int,
    fidelity_size: int,
    fidelity_data: Sequence[str | os.PathLike],
) -> str:
    """The output's format, once it and the settings are known to go together (before any photo is read)."""
    fmt = format_of(output)
    if fmt not in ("onnx", "executorch", "tflite"):
        raise ParameterError(
            "output", f"`output` {output}: quantize writes .onnx (QDQ), .pte (XNNPACK) or .tflite (LiteRT) files"
        )
    check_opset(opset)
    if ptq.activations != "int8" and (fmt != "onnx" or cfg.epochs > 0):
        why = "post-training only: use `epochs` 0" if fmt == "onnx" else "XNNPACK and LiteRT kernels are INT8 only"
        raise ParameterError("activations", f"`activations` {ptq.activations} writes a QDQ .onnx file; {why}")
    qdq_opset(opset, ptq.activations)  # refused before the calibration, not after it
    for name, value in (("calibration_size", calibration_size), ("fidelity_size", fidelity_size)):
        if value < 1:
            raise ParameterError(name, f"`{name}` must be >= 1, got {value}")
    for folder in fidelity_data:
        if not Path(folder).is_dir():
            raise ParameterPathError("fidelity_data", f"`fidelity_data` folder {folder} does not exist")
    return fmt


def _photo_paths(
    data: str | os.PathLike, photos: int | None, seed: int, exclude: Collection[str | os.PathLike]
) -> list[Path]:
    """The photos under ``data`` (a seeded sample of ``photos``), less the ``exclude``d ones."""
    paths = image_paths(data, photos, seed)
    if exclude:
        left_out = {Path(p).resolve() for p in exclude}
        paths = [p for p in paths if p.resolve() not in left_out]
        if not paths:
            raise ParameterError("exclude", f"`exclude` leaves no photos under `data` {data} to calibrate on")
    return paths


def _distilled(
    model: nn.Module, paths: list[Path], pre: Preprocess, res: int, cfg: QatConfig, workers: int
) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """Quantization-aware distillation on ``paths``: the INT8 graph and how it was made (for the metadata)."""
    from .quantize import convert, qat_distill

    batches, steps = _photo_batches(paths, pre, cfg.batch_size, workers, cfg.seed)
    quantized = convert(qat_distill(model, batches, steps, res, cfg))
    how = {"method": "qat-distillation", "epochs": cfg.epochs, "lr": cfg.lr, "loss": cfg.loss,
           "train_classifier": cfg.train_classifier, "photos": len(paths)}  # fmt: skip
    return quantized, how


def _calibrated(
    model: nn.Module, used: list[Path], pre: Preprocess, res: int, ptq: PtqConfig, fmt: str
) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """Post-training calibration on ``used`` with ``ptq``'s corrections: the INT8 graph and how it was made."""
    from .quantize import calibrate

    calib = load_batch(used, pre)
    bar = Progress(None, f"re-rounding weights ({ptq.rounding_steps} steps a layer)", unit="layer",
                   enabled=ptq.rounding_steps > 0)  # fmt: skip
    try:
        runtime = "xnnpack" if fmt == "onnx" else runtime_file(fmt)[3]  # QDQ ONNX: XNNPACK's scheme
        quantized = calibrate(model, calib.split(16), res, ptq, log=lambda _: bar.update(1), runtime=runtime)
    finally:
        bar.close()
    how = {"method": "ptq", "images": len(calib), "observer": ptq.observer, "equalize": ptq.equalize,
           "rounding_steps": ptq.rounding_steps, "bias_correction": ptq.bias_correction,
           "float_layers": list(ptq.float_layers), "activations": ptq.activations}  # fmt: skip
    return quantized, how


def _photo_batches(paths: list[Path], pre: Preprocess, batch_size: int, workers: int, seed: int):
    """``batches(epoch)``: augmented (random crop, flip) unlabeled photo batches, a seeded order per epoch."""
    from torch.utils.data import DataLoader

    from ..data.images import ImageDataset, collate_skip_bad

    # gentler crops than training from scratch: the fine-tuning distils, it does not learn new classes
    tf = train_transform(pre.resolution, pre.mean, pre.std, crop_scale=(0.35, 1.0))
    dataset = ImageDataset([(p, 0) for p in paths], tf, draft_size=pre.resolution)

    def batches(epoch: int):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        loader = DataLoader(dataset, batch_size, shuffle=True, generator=g, num_workers=workers,
                            collate_fn=collate_skip_bad, drop_last=True)  # fmt: skip
        for x, *_ in loader:
            yield x

    return batches, len(paths) // batch_size


_SPLIT_NAMES = {"train", "val", "valid", "validation", "test", "images", "photos"}


def _fidelity_photos(
    data: str | os.PathLike,
    used: list[Path],
    pre: Preprocess,
    size: int,
    seed: int,
    fidelity_data: Sequence[str | os.PathLike],
    verify: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The photos ``quantize`` measures INT8 against fp32 on (``int8_fidelity``'s groups), each group named
    for the report: ``other:NAME`` per ``fidelity_data`` folder (photos of other classes, as the caller
    says), ``verify-data``, ``held-out`` (photos under ``data`` it did not calibrate or tune on: the same
    classes) and ``altered`` (``altered_photos`` of those, or of the calibration photos if none are left)."""
    groups = {}
    for folder in fidelity_data:
        p = Path(folder).resolve()
        name = p.name if p.name.lower() not in _SPLIT_NAMES else f"{p.parent.name}/{p.name}"
        while f"other:{name}" in groups:
            name += "'"
        groups[f"other:{name}"] = load_batch(image_paths(folder, size, seed=2), pre)
    if verify is not None:
        groups["verify-data"] = verify
    rest = sorted(set(image_paths(data)) - set(used))
    if rest:
        rest = sorted(random.Random(seed + 3).sample(rest, min(size, len(rest))))
        groups["held-out"] = load_batch(rest, pre)
    base = groups.get("held-out")
    if base is None:
        base = load_batch(sorted(random.Random(seed + 3).sample(used, min(size, len(used)))), pre)
    groups["altered"] = altered_photos(base, seed)
    return groups
