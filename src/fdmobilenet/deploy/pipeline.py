"""The ``export`` command as a library call: weights file in, checked deployment file(s) out.

Every file written is compared with the PyTorch model it came from before success is reported;
an fp32 file that disagrees beyond float rounding is an error, an INT8 file must at least give
finite logits (its agreement is reported, not enforced: quantization changes logits by design).
A detector's file (fp32 .onnx or .pte, ``deploy.detector``) must find every PyTorch detection.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ParameterError, ParameterPathError
from .._progress import Progress
from .._utils import remove_orphan_temps, require
from ..models import build_from_weights
from ..preprocess import Preprocess, train_transform
from .executorch import PteClassifier, export_pte, export_quantized_pte
from .fidelity import altered_photos, fidelity_table, int8_fidelity
from .metadata import INTEGER_PRECISIONS, export_metadata
from .onnx import (
    CALIBRATION_METHODS,
    DEFAULT_OPSET,
    check_keep_float,
    check_opset,
    export_onnx,
    export_quantized_onnx,
    qdq_opset,
    quantize_onnx,
)
from .quantize import PtqConfig, QatConfig
from .runtime import OnnxClassifier
from .samples import image_paths, load_batch
from .torch_formats import export_pt2, export_torchscript, load_pt2, load_torchscript
from .verify import Agreement, check_float_agreement, measure_agreement

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
    of float CHW images in [0, 1] -> per-image ``{"boxes", "scores", "labels"}``, ``deploy.detector``)."""
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
    if clf.meta.get("task") != "detection":
        return clf
    from .detector import OnnxDetector, PteDetector  # torchvision: only for detectors

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
        return self.meta.get("task") == "detection"

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
) -> list[ExportReport]:
    """Export a weights file to the format of ``output``'s suffix and check every file written against the
    PyTorch model.

    With ``config.int8``, ``output`` is the INT8 file calibrated on ``config.calibration``: ONNX Runtime's
    static quantizer for ``.onnx``, the XNNPACK quantizer for ``.pte``. ``model_name`` overrides the model
    stored with the weights.
    """
    c = config or ExportConfig()
    fmt = format_of(output, c.fmt)
    c.check_format(fmt)
    model, meta = build_from_weights(weights, model_name, c.resolution)
    res = c.resolution or meta.get("resolution", 224)
    meta = {**meta, "source_weights": Path(weights).name}
    out = Path(output)
    remove_orphan_temps(out.parent, out.name)  # of a killed export to the same file (ours only: .fdm-tmp.*)
    if meta.get("task") == "detection" or hasattr(model, "forward_network"):
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
        fp32_path = out.with_name(out.stem + ".fp32.onnx") if c.keep_fp32 else Path(tmp) / "fp32.onnx"
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
            reports.append(_int8_report(model, out, "onnx-int8", written, real, res))
    return reports


def _int8_report(model, path: Path, fmt: str, meta: dict, real, res: int) -> ExportReport:
    """An INT8 file must give finite logits; its agreement with fp32 is reported, not enforced."""
    agreement = measure_agreement(model, open_exported(path), real, resolution=res)
    if not np.isfinite(agreement.max_abs_diff_random):
        raise ValueError(f"{path}: the INT8 model produces non-finite logits; recalibrate with other photos")
    return ExportReport(str(path), fmt, meta, agreement)


def _runtime_file(fmt: str) -> tuple[Any, Any, Any, str]:
    """(runner, fp32 writer, INT8 writer, PT2E quantizer runtime) of a ``.pte`` (``executorch``) or ``.tflite``."""
    if fmt == "tflite":
        from .litert import TfliteClassifier, export_quantized_tflite, export_tflite  # ai-edge-litert: own extra

        return TfliteClassifier, export_tflite, export_quantized_tflite, "litert"
    return PteClassifier, export_pte, export_quantized_pte, "xnnpack"


def _export_runtime_file(model, out: Path, fmt: str, full: dict, pre: Preprocess, c: ExportConfig, real):
    """fp32 or INT8 ExecuTorch (.pte, XNNPACK) or LiteRT (.tflite, full-integer) file, checked like the rest. INT8:
    PT2E calibration on ``c.calibration_size`` photos with the runtime's own quantizer (the same scheme: histogram
    activation ranges, per-channel weights); ``full`` is the export metadata, ``pre`` its preprocessing."""
    runner, write, write_int8, runtime = _runtime_file(fmt)
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
    return _int8_report(model, out, f"{fmt}-int8", full, real, res)


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
    """
    from .quantize import calibrate, convert, qat_distill

    fmt = format_of(output)
    if fmt not in ("onnx", "executorch", "tflite"):
        raise ParameterError(
            "output", f"`output` {output}: quantize writes .onnx (QDQ), .pte (XNNPACK) or .tflite (LiteRT) files"
        )
    check_opset(opset)
    cfg = cfg or QatConfig(epochs=0.0)  # QatConfig checks its own ranges
    ptq = ptq or PtqConfig()
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
    paths = image_paths(data, photos, cfg.seed)
    if exclude:
        left_out = {Path(p).resolve() for p in exclude}
        paths = [p for p in paths if p.resolve() not in left_out]
        if not paths:
            raise ParameterError("exclude", f"`exclude` leaves no photos under `data` {data} to calibrate on")
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
        check = _fidelity_photos(data, used, pre, fidelity_size, cfg.seed, fidelity_data, real)
        batches, steps = _photo_batches(paths, pre, cfg.batch_size, workers, cfg.seed)
        quantized = convert(qat_distill(model, batches, steps, res, cfg))
        how = {"method": "qat-distillation", "epochs": cfg.epochs, "lr": cfg.lr, "loss": cfg.loss,
               "train_classifier": cfg.train_classifier, "photos": len(paths)}  # fmt: skip
    else:
        # a seeded sample, not the first files: those are one folder (one class) of a class-per-folder tree
        used = sorted(random.Random(cfg.seed).sample(paths, min(calibration_size, len(paths))))
        check = _fidelity_photos(data, used, pre, fidelity_size, cfg.seed, fidelity_data, real)
        calib = load_batch(used, pre)
        bar = Progress(None, f"re-rounding weights ({ptq.rounding_steps} steps a layer)", unit="layer",
                       enabled=ptq.rounding_steps > 0)  # fmt: skip
        try:
            runtime = "xnnpack" if fmt == "onnx" else _runtime_file(fmt)[3]  # QDQ ONNX: XNNPACK's scheme
            quantized = calibrate(model, calib.split(16), res, ptq, log=lambda _: bar.update(1), runtime=runtime)
        finally:
            bar.close()
        how = {"method": "ptq", "images": len(calib), "observer": ptq.observer, "equalize": ptq.equalize,
               "rounding_steps": ptq.rounding_steps, "bias_correction": ptq.bias_correction,
               "float_layers": list(ptq.float_layers), "activations": ptq.activations}  # fmt: skip
    precision = "a16w8" if ptq.activations == "int16" else "int8"
    full = {**full, "precision": precision, "quantization": {**how, "source": str(data)}}
    if fmt == "onnx":
        full = export_quantized_onnx(quantized, output, full, opset, ptq.activations)
    else:
        _runtime_file(fmt)[2](quantized, output, full, res)
    report = _int8_report(model, Path(output), f"{fmt}-{precision}", full, real, res)
    report.extra["fidelity"] = int8_fidelity(model, open_exported(output), check)
    return [report]
