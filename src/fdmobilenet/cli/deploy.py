"""``export`` and ``bench``: deployment files checked against PyTorch, and their latency on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._utils import machine_info, require
from ..deploy import (
    CALIBRATION_METHODS,
    DEFAULT_OPSET,
    FORMATS,
    MIN_OPSET,
    SUFFIXES,
    ExportConfig,
    PtqConfig,
    QatConfig,
    bench,
    export_weights,
    quantize_weights,
)
from ..deploy.quantize import ACTIVATIONS, LOSSES, OBSERVERS
from ..models import FAMILIES, list_models
from . import in_flags
from ._args import positive_int, thread_count

DETECTOR_RESOLUTION = 320  # models.detection.DEFAULT_RESOLUTION (not imported: it loads torchvision's detection)

CALIBRATION_SIZE = 400  # photos sampled for INT8 calibration: one default for export --int8 and quantize

# --- export ---------------------------------------------------------------------------------------


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a .safetensors file from `convert` or `train`")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument(
        "-o", "--output", required=True, help="output file; its suffix picks the format: " + ", ".join(SUFFIXES)
    )
    p.add_argument("--format", choices=FORMATS, help="optional; must agree with the suffix of -o")
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

        r = export_ethosu_weights(
            a.weights, a.output, a.target, a.calibration, a.calibration_size, a.resolution, a.model, a.activations
        )
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
    reports = export_weights(a.weights, a.output, config, model_name=a.model)
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
    )
    for r in reports:
        print(json.dumps(r.as_dict()) if a.json else in_flags(str(r)))
    return 0


# --- bench ----------------------------------------------------------------------------------------


def bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        help="comma-separated names, name@R for another resolution, FAMILY:MFLOPS for a bare family at the width "
        f"meeting a budget, e.g. mobilenet_v3_small:40 (default: {','.join(bench.DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--backends",
        help=f"comma-separated subset of {', '.join(bench.BACKENDS)} (default: {','.join(bench.DEFAULT_BACKENDS)}; "
        "OpenVINO ones are dropped when it is not installed; ort-raw is plain InferenceSession.run, the baseline "
        "the ort wrapper must match)",
    )
    p.add_argument("--threads", type=thread_count, default=1, help="intra-op threads of every runtime")
    p.add_argument("--batch-size", dest="batch", type=int, default=1, help="images per call")
    p.add_argument("--batch", dest="batch", type=int, help=argparse.SUPPRESS)  # its former name, for one release
    p.add_argument(
        "--resolution", type=int, help="input size for models without @R (default: 224, detectors (ssdlite_*) 320)"
    )
    p.add_argument("--runs", type=int, default=200, help="timed runs per model and backend (after warm-up)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    p.add_argument("--calibration", help="photos to calibrate the int8 models with (default: random tensors)")
    p.add_argument("--workdir", help="keep the exported .onnx files here (default: a temporary folder)")
    p.add_argument(
        "--target",
        help="an Arm Ethos-U NPU (ethos-u55-128, ethos-u65-256, ...): instead of timing on this machine, Vela's "
        "estimate of each model lowered to INT8 for it (time at its clock, SRAM, flash, NPU/CPU operators); "
        "no hardware needed, extra mcu",
    )
    p.add_argument(
        "--activations",
        choices=ACTIVATIONS,
        default="int8",
        help="with --target: int16 = A16W8 (16-bit activations, INT8 weights), as `export --activations int16`",
    )
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--plot", help="write latency vs MMACs to this PNG file")


def _bench_specs(a: argparse.Namespace) -> list[tuple[str, int]]:
    for flag, v, lo in (("--threads", a.threads, 1), ("--batch-size", a.batch, 1), ("--runs", a.runs, 1)):
        if v < lo:
            raise ValueError(f"{flag} must be >= {lo}, got {v}")
    if a.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {a.warmup}")
    models = a.models or ",".join(bench.DEFAULT_MODELS)
    specs = [bench.parse_model_spec(s.strip(), a.resolution or 0) for s in models.split(",") if s]
    known = set(list_models(task=None))
    detectors = set(list_models(task="detection"))
    # without --resolution or @R: a classifier at 224 px, a detector at its own size (SSDLite's 320)
    specs = [(n, r or (DETECTOR_RESOLUTION if n.partition(":")[0] in detectors else 224)) for n, r in specs]
    for name, _ in specs:
        family, _, budget = name.partition(":")
        if family not in known:
            raise ValueError(f"--models: unknown model {family!r}; `fdmobilenet models` lists them")
        if budget and (family not in FAMILIES or not budget.replace(".", "", 1).isdigit()):
            raise ValueError(f"--models {name!r}: FAMILY:MFLOPS takes a bare family name and a number, e.g. "
                             "mobilenet_v3_small:40")  # fmt: skip
    return specs


def int8_caveat(info: dict) -> str:
    """Whether INT8 can be expected to run faster than fp32 on this CPU: x86 needs VNNI or AMX int8 dot
    products (without them, INT8 kernels emulate them and can be slower than fp32: OpenVINO INT8 ShuffleNet
    0.25x took 5.4-8.7 ms against 1.27 ms fp32 on an AVX2-only CPU)."""
    fast = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in info["cpu_flags"]]
    if fast:
        return f"INT8 rows: this CPU has {', '.join(fast)}, so INT8 kernels can beat fp32 here"
    if any(f.startswith("avx") for f in info["cpu_flags"]):
        return (
            "INT8 rows: this x86 CPU has no VNNI/AMX int8 instructions; INT8 is NOT expected to beat fp32 here "
            "(its ratios say nothing about CPUs or NPUs that have them)"
        )
    return "INT8 rows: INT8 speed depends on this CPU's int8 dot-product support (not detected here)"


def _bench_target(a: argparse.Namespace, specs: list[tuple[str, int]]) -> int:
    """``bench --target``: Vela's estimates side by side, the FD-MobileNet of nearest MACs as reference."""
    from ..deploy.ethosu import is_ethosu_target

    if not is_ethosu_target(a.target):
        raise ValueError(f"--target {a.target[:40]!r}: give an Ethos-U NPU, e.g. ethos-u55-128 or ethos-u65-256")
    for flag, given in (("--backends", a.backends), ("--calibration", a.calibration), ("--workdir", a.workdir),
                        ("--plot", a.plot)):  # fmt: skip
        if given:
            raise ValueError(f"{flag} times or plots runtimes on this machine; drop it with --target (Vela estimates)")
    rows = bench.estimate_on_npu(specs, a.target.lower(), a.activations)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    first = next((r["vela"] for r in rows if "vela" in r), None)
    where = f"{first['system_config']}, {first['memory_mode']}, {first['clock_hz'] / 1e6:g} MHz" if first else ""
    scheme = "A16W8 (16-bit activations)" if a.activations == "int16" else "INT8"
    print(f"# {a.target}: Vela's performance model ({where}); {scheme}, batch 1; estimates, no hardware")
    w = max([22, *(len(r["model"]) for r in rows)])
    print(f"{'model':<{w}} {'res':>4} {'MMACs':>7} {'est. ms':>8} {'SRAM KiB':>9} {'flash KiB':>9} {'NPU/CPU ops':>11} "
          f"{'FD faster':>10}  vs FD")  # fmt: skip
    for r in rows:
        if r["median_ms"] is None:
            print(f"{r['model']:<{w}} {r['resolution']:>4} {r['macs'] / 1e6:>7.1f} error: {r['error']}")
            continue
        v = r["vela"]
        ops = f"{v['npu_ops']}/{v['cpu_ops'] + len(v['outside_delegate'])}"
        ratio = f"{r['fd_speedup']:>9.2f}x" if "fd_speedup" in r else f"{'-':>10}"
        print(f"{r['model']:<{w}} {r['resolution']:>4} {r['macs'] / 1e6:>7.1f} {r['median_ms']:>8.3f} "
              f"{v['sram_bytes'] / 1024:>9.1f} {v['flash_bytes'] / 1024:>9.1f} {ops:>11} {ratio}  "
              f"{r.get('fd_reference', '')}")  # fmt: skip
    return 0


def bench_run(a: argparse.Namespace) -> int:
    specs = _bench_specs(a)
    if a.target:
        return _bench_target(a, specs)
    backends = bench.select_backends(a.backends)
    if any(b != "torch" and b != "torch-compile" for b in backends):
        require("onnx", "exporting models for ONNX Runtime / OpenVINO")
    if a.calibration and not Path(a.calibration).is_dir():
        raise FileNotFoundError(f"--calibration folder {a.calibration} does not exist")
    rows = bench.benchmark(specs, backends, a.threads, a.batch, a.runs, a.warmup, a.calibration, a.workdir)
    info = machine_info()
    if a.plot:
        bench.plot(rows, a.plot, f"{info['cpu']}, {a.threads} thread(s), batch {a.batch}")
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"# {info['cpu']} ({', '.join(info['cpu_flags'])}), {a.threads} thread(s), batch {a.batch}; "
        f"torch {info['torch']}, onnxruntime {info['onnxruntime']}, openvino {info['openvino']}; {info['date']}"
    )
    if any("int8" in r["backend"] for r in rows):
        print(f"# {int8_caveat(info)}")
    w = max([22, *(len(r["model"]) for r in rows)])
    ratio = lambda r: f"{r['fd_speedup']:>9.2f}x" if "fd_speedup" in r else f"{'-':>10}"  # detectors: none
    if any(r.get("postprocess") for r in rows):
        print(
            "# detectors: one call = normalisation + network + box decoding + per-class NMS (post-processing "
            "included: in the ONNX graph on ort, torchvision in Python on torch and executorch); random weights "
            "leave every candidate above the score threshold, NMS's heaviest case"
        )
    print(
        f"{'model':<{w}} {'res':>4} {'backend':<14} {'MMACs':>7} {'median ms':>10} {'p10':>8} {'p90':>8} "
        f"{'img/s':>8} {'GMAC/s':>7} {'FD faster':>10}  vs FD"
    )
    for r in rows:
        if r["median_ms"] is None:
            print(f"{r['model']:<{w}} {r['resolution']:>4} {r['backend']:<14} {'-':>7} error: {r['error']}")
            continue
        print(
            f"{r['model']:<{w}} {r['resolution']:>4} {r['backend']:<14} {r['macs'] / 1e6:>7.1f} "
            f"{r['median_ms']:>10.3f} {r['p10_ms']:>8.3f} {r['p90_ms']:>8.3f} {r['throughput_ips']:>8.0f} "
            f"{r['gmacs_per_s']:>7.2f} {ratio(r)}  {r.get('fd_reference', '')}"
        )
    return 0
