"""``bench``: the latency of every model on every runtime of this machine, or Vela's estimates for an Ethos-U
NPU (``--target``). Its own module because it shares nothing with ``export``/``quantize`` but the package;
``cli.deploy`` (the command table's module for all three) re-exports ``bench_arguments`` and ``bench_run``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._outputs import check_output
from .._utils import machine_info, require
from ..deploy import bench
from ..deploy.quantize import ACTIVATIONS
from ..models import FAMILIES, list_models
from ._args import thread_count

DETECTOR_RESOLUTION = 320  # models.detection.DEFAULT_RESOLUTION (not imported: it loads torchvision's detection)


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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --plot file that fdmobilenet did not write; PNGs it wrote are replaced without "
        "this; a link, folder or device never",
    )


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
    if a.plot:  # before the benchmark, which may take minutes
        check_output(a.plot, "plot", a.overwrite)
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
