"""``export`` and ``quantize``: deployment files checked against PyTorch. ``bench`` (their latency on this
machine) is in ``cli.bench``; its functions are re-exported here, the module the command table names."""

from __future__ import annotations

import argparse
import json

from ..deploy import (
    CALIBRATION_METHODS,
    DEFAULT_OPSET,
    FORMATS,
    MIN_OPSET,
    SUFFIXES,
    ExportConfig,
    PtqConfig,
    QatConfig,
    export_weights,
    quantize_weights,
)
from ..deploy.quantize import ACTIVATIONS, LOSSES, OBSERVERS
from . import in_flags
from ._args import positive_int
from .bench import bench_arguments, bench_run, int8_caveat  # noqa: F401 (re-exported)

CALIBRATION_SIZE = 400  # photos sampled for INT8 calibration: one default for export --int8 and quantize

# --- export ---------------------------------------------------------------------------------------


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a .safetensors file from `convert` or `train`")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument(
        "-o", "--output", required=True, help="output file; its suffix picks the format: " + ", ".join(SUFFIXES)
    )
    p.add_argument("--format", choices=FORMATS, help="optional; must agree with the suffix of -o")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o file (and --keep-fp32's NAME.fp32.onnx) that fdmobilenet did not write; "
        "files it wrote are replaced without this; a link, folder or device never",
    )
    p.add_argument("--resolution", type=int, help="input size (default: the weights')")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset ({MIN_OPSET}-{DEFAULT_OPSET})")
    p.add_argument(
        "--int8",
        action="store_true",
        help="write a static INT8 file (per-channel weights): QDQ for .onnx (ONNX Runtime's quantizer), XNNPACK "
        "for .pte, full-integer for .tflite (LiteRT's quantizer); `fdmobilenet quantize` (range equalization, "
        "re-rounded weights, bias correction) loses less accuracy (classifiers only)",
    )
    p.add_argument("--keep-fp32", action="store_true", help="with --int8 .onnx: also keep NAME.fp32.onnx")
    p.add_argument("--calibration", help="folder of representative photos for --int8 (not the evaluation photos)")
    p.add_argument("--calibration-size", type=int, default=CALIBRATION_SIZE, help="images sampled from --calibration")
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
    p.add_argument(
        "--postprocess",
        choices=("graph", "none"),
        help="detectors: box decoding and per-class NMS inside the ONNX graph (graph, the default for .onnx: it "
        "returns boxes, scores, labels, num_detections) or in fdmobilenet's Python runner (none: it returns "
        "bbox_regression, cls_logits, anchors); a .pte is always none (ExecuTorch has no NMS kernel)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--target",
        help="an Arm Ethos-U NPU (ethos-u55-128, ethos-u55-256, ethos-u65-256, ...): an INT8 .pte through "
        "ExecuTorch's Arm backend and Vela, calibrated on --calibration and corrected as `quantize` does "
        "(equalization, AdaRound, bias correction); prints Vela's SRAM, flash, time",
    )
    p.add_argument(
        "--activations",
        choices=ACTIVATIONS,
        default="int8",
        help="with --target: int16 = A16W8 (16-bit activations, INT8 weights): twice the activation SRAM, far "
        "closer to fp32 on photos unlike the calibration's (benchmarks/int8/fidelity.md)",
    )


def export_run(a: argparse.Namespace) -> int:
    if a.activations != "int8" and not a.target:
        raise ValueError(f"--activations {a.activations} is for an Ethos-U --target; for a QDQ .onnx use "
                         f"`fdmobilenet quantize --activations {a.activations}`")  # fmt: skip
    if a.target:
        from ..deploy.ethosu import export_ethosu_weights

        args = (a.weights, a.output, a.target, a.calibration, a.calibration_size, a.resolution, a.model)
        r = export_ethosu_weights(*args, a.activations, overwrite=a.overwrite)
        print(json.dumps(r.as_dict(), indent=1) if a.json else f"wrote {a.output}\n{r}")
        return 0
    keep_float = [] if a.keep_float.strip().lower() == "none" else [s.strip() for s in a.keep_float.split(",") if s]
    config = ExportConfig(
        fmt=a.format,
        resolution=a.resolution,
        opset=a.opset,
        int8=a.int8,
        keep_fp32=a.keep_fp32,
        calibration=a.calibration,
        calibration_size=a.calibration_size,
        calibration_method=a.calibration_method,
        calibration_percentile=a.calibration_percentile,
        keep_float=tuple(keep_float),
        verify_data=a.verify_data,
        verify_size=a.verify_size,
        postprocess=a.postprocess,
    )
    reports = export_weights(a.weights, a.output, config, model_name=a.model, overwrite=a.overwrite)
    if a.json:
        print(json.dumps([r.as_dict() for r in reports], indent=1))
    else:
        for r in reports:
            print(in_flags(str(r)))
    return 0


# --- quantize -------------------------------------------------------------------------------------


def quantize_arguments(p: argparse.ArgumentParser) -> None:
    d, dp = QatConfig(), PtqConfig()
    p.add_argument("--weights", required=True, help="the fp32 .safetensors file (the teacher)")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument(
        "--calibration",
        dest="data",
        help="folder of photos like the ones the model will see (searched recursively; labels not needed, "
        "other classes are fine): Imagenette's photos do for the ImageNet weights; the same flag as export's",
    )
    p.add_argument("--data", dest="data", help=argparse.SUPPRESS)  # its former name, kept for one release
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="INT8 file: .onnx (QDQ), .pte (ExecuTorch, XNNPACK) or .tflite (LiteRT, full-integer; extra litert)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o file that fdmobilenet did not write; files it wrote are replaced without "
        "this; a link, folder or device never",
    )
    p.add_argument(
        "--epochs",
        type=float,
        default=0.0,
        help="passes of quantization-aware distillation over --data; 0 (default) = post-training calibration "
        "with range equalization, re-rounded weights and bias correction, which held best on photos of other classes "
        "(benchmarks/int8/fidelity.md)",
    )
    p.add_argument(
        "--calibration-size", type=positive_int, default=CALIBRATION_SIZE, help="photos to calibrate on (--epochs 0)"
    )
    p.add_argument(
        "--no-equalize",
        action="store_true",
        help="--epochs 0: skip cross-layer range equalization (skipped anyway with --activations int16)",
    )
    p.add_argument("--no-bias-correction", action="store_true", help="--epochs 0: skip the per-layer bias correction")
    p.add_argument(
        "--rounding-steps",
        type=int,
        default=dp.rounding_steps,
        help="--epochs 0: AdaRound steps per layer that re-round the INT8 weights to reproduce each layer's fp32 "
        "output; 0 rounds to nearest (faster, less faithful)",
    )
    p.add_argument(
        "--observer", choices=OBSERVERS, default=dp.observer, help="--epochs 0: how activation ranges are chosen"
    )
    p.add_argument(
        "--float-layers",
        default="none",
        help="--epochs 0: layers left fp32, e.g. stem,classifier (the input and the logits stay unrounded); "
        "default none",
    )
    p.add_argument(
        "--activations",
        choices=ACTIVATIONS,
        default=dp.activations,
        help="--epochs 0: int16 = 16-bit activations, INT8 weights (A16W8), far closer to fp32 on photos unlike "
        "the calibration's; a QDQ .onnx at opset 21 for runtimes with 16-bit activation kernels (e.g. Qualcomm "
        "QNN); XNNPACK and LiteRT run int8 only",
    )
    p.add_argument("--lr", type=float, default=d.lr, help="QAT: peak learning rate (cosine to 0, SGD momentum 0.9)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="QAT: photos per step")
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=d.loss,
        help="QAT: match the fp32 softmax (kl) or all its logits (logits: mean squared difference)",
    )
    p.add_argument("--freeze-classifier", action="store_true", help="QAT: do not fine-tune the classifier")
    p.add_argument(
        "--photos", type=positive_int, help="use a seeded sample of this many photos from --data (default: all)"
    )
    p.add_argument(
        "--fidelity-data",
        action="append",
        default=[],
        metavar="DIR",
        help="photos of OTHER classes than --data's to measure INT8 against fp32 on (agreement, KL; no labels "
        "needed; repeatable). Without it the report measures held-out and altered --data photos only",
    )
    p.add_argument(
        "--fidelity-size", type=positive_int, default=200, help="photos per --fidelity-data folder and group"
    )
    p.add_argument("--verify-data", help="photos NOT in --data to report agreement with fp32 on")
    p.add_argument("--verify-size", type=positive_int, default=200, help="how many --verify-data photos to compare on")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset ({MIN_OPSET}-{DEFAULT_OPSET})")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes")
    p.add_argument("--seed", type=int, default=d.seed, help="photo order and sampling")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def quantize_run(a: argparse.Namespace) -> int:
    if not a.data:
        raise ValueError("give --calibration DIR: photos like the ones the model will see (labels not needed)")
    cfg = QatConfig(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed, loss=a.loss,
                    train_classifier=not a.freeze_classifier)  # fmt: skip
    float_layers = [] if a.float_layers.strip().lower() == "none" else a.float_layers.split(",")
    ptq = PtqConfig(
        observer=a.observer,
        equalize=False if a.no_equalize else None,
        bias_correction=not a.no_bias_correction,
        rounding_steps=a.rounding_steps,
        float_layers=tuple(s.strip() for s in float_layers if s.strip()),
        activations=a.activations,
    )
    reports = quantize_weights(
        a.weights,
        a.data,
        a.output,
        model_name=a.model,
        cfg=cfg,
        photos=a.photos,
        calibration_size=a.calibration_size,
        verify_data=a.verify_data,
        verify_size=a.verify_size,
        opset=a.opset,
        workers=a.workers,
        ptq=ptq,
        fidelity_data=a.fidelity_data,
        fidelity_size=a.fidelity_size,
        overwrite=a.overwrite,
    )
    for r in reports:
        print(json.dumps(r.as_dict()) if a.json else in_flags(str(r)))
    return 0
