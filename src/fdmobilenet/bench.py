"""Latency on the user's own hardware: the paper's speed claim, put to the test.

The paper's second claim is speed at matched complexity (FD-MobileNet 1.11x faster than
MobileNet V1 and 1.82x faster than ShuffleNet, on ARM). MACs do not predict latency well, so
``bench`` measures every model of the comparison on every requested runtime and reports each
model's speed relative to the FD-MobileNet of nearest MACs on the same runtime.

All runners of one invocation are timed *interleaved* (a few runs of each in turn, repeated), so
slow drifts of a noisy machine hit every model alike and the ratios stay meaningful. The timed
call is the bare runtime call on pre-allocated input and output memory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKENDS = ("torch", "torch-compile", "ort", "ort-int8", "openvino", "openvino-int8", "ort-raw")
DEFAULT_BACKENDS = ("torch", "ort", "ort-int8", "openvino", "openvino-int8")
# The paper's comparison at matched budgets (MACs at 224 px unless @R): ~140, ~40 and ~12 MMACs.
DEFAULT_MODELS = (
    "fd_mobilenet_100",
    "fd_mobilenet_050",
    "fd_mobilenet_025",
    "mobilenet_v1_050",
    "mobilenet_v1_025",
    "mobilenet_v1_025@160",  # the "0.25x at 160 px"; it measures 21 MMACs
    "mobilenet_v1_025@128",  # the MobileNet V1 that really is ~14 MMACs, nearest to FD-MobileNet 0.25x's 12
    "shufflenet_v1_g3_100",
    "shufflenet_v1_g3_050",
    "shufflenet_v1_g3_025",
)
REFERENCE_FAMILY = "fd_mobilenet"


@dataclass
class Case:
    """One model at one resolution on one backend, with the zero-argument call that is timed."""

    model: str
    resolution: int
    backend: str
    macs: int
    params: int
    call: Callable[[], Any] | None = None
    note: str = ""


def parse_model_spec(spec: str, default_resolution: int) -> tuple[str, int]:
    """``name`` or ``name@R`` (e.g. ``mobilenet_v1_025@160``)."""
    name, _, res = spec.partition("@")
    if res and not res.isdigit():
        raise ValueError(f"--models entry {spec!r}: the part after @ must be a resolution in pixels, e.g. {name}@160")
    return name, int(res) if res else default_resolution


def machine_info() -> dict[str, Any]:
    """CPU model, SIMD flags that decide which kernels run, core count and library versions."""
    cpu, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_flags": [f for f in wanted if f in flags],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    for mod in ("torch", "onnxruntime", "openvino", "onnx"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def _available(backend: str) -> bool:
    import importlib.util

    need = {"ort": "onnxruntime", "openvino": "openvino"}
    mod = next((m for prefix, m in need.items() if backend.startswith(prefix)), None)
    return mod is None or importlib.util.find_spec(mod) is not None


def build_cases(
    specs: list[tuple[str, int]],
    backends: list[str],
    threads: int,
    batch: int,
    workdir: Path,
    calibration: str | None = None,
) -> list[Case]:
    """Build each model once, export what the backends need, and make one timed call per (model, backend)."""
    import numpy as np
    import torch

    from .complexity import profile
    from .export import MissingDependencyError, export_onnx, fold_batchnorm, quantize_onnx
    from .models import create_model

    cases = []
    for name, res in specs:
        torch.manual_seed(0)
        model = create_model(name, resolution=res).eval()
        prof = profile(model, res)
        tag = f"{name}@{res}"
        fp32 = workdir / f"{name}_{res}.onnx"
        int8 = workdir / f"{name}_{res}.int8.onnx"
        if any(b.startswith(("ort", "openvino")) for b in backends):
            export_onnx(model, fp32, {"model": name}, res)
        if any(b.endswith("int8") for b in backends):
            # Latency does not depend on the weights' values, only on shapes; calibration sets the scales.
            calib = calibration or np.random.default_rng(0).standard_normal((16, 3, res, res), dtype=np.float32)
            quantize_onnx(fp32, int8, calib, calibration_size=64, method="minmax")
        for backend in backends:
            case = Case(name, res, backend, prof.macs, prof.params)
            try:
                case.call = _make_call(backend, model, fp32, int8, threads, batch, res, fold_batchnorm)
            except MissingDependencyError:
                raise
            except Exception as e:  # one backend failing (e.g. no C++ compiler for torch.compile) is a row, not a crash
                case.note = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                print(f"bench: {tag} on {backend} unavailable: {case.note}", file=sys.stderr)
            cases.append(case)
    return cases


def _make_call(backend, model, fp32, int8, threads, batch, res, fold_batchnorm) -> Callable[[], Any]:
    import torch

    if backend in ("torch", "torch-compile"):
        net = fold_batchnorm(model)  # the same graph the exports contain
        if backend == "torch-compile":
            net = torch.compile(net)
        x = torch.randn(batch, 3, res, res)
        with torch.inference_mode():
            net(x)  # torch.compile compiles here, not in the timed loop
        return lambda net=net, x=x: net(x)
    from .runtime import OnnxClassifier

    path = int8 if backend.endswith("int8") else fp32
    runtime = "openvino" if backend.startswith("openvino") else "ort"
    clf = OnnxClassifier(path, runtime, threads)
    return clf.raw_ort_runner(batch) if backend == "ort-raw" else clf.runner(batch)


def measure(cases: list[Case], runs: int, warmup: int = 20, chunk: int = 10) -> dict[int, list[float]]:
    """Per-case call times in ms: ``warmup`` untimed calls each, then rounds of ``chunk`` timed calls per case.

    The first call of each chunk is untimed too: it only re-warms caches the other cases evicted.
    """
    import torch

    live = [(i, c.call) for i, c in enumerate(cases) if c.call is not None]
    times: dict[int, list[float]] = {i: [] for i, _ in live}
    clock = time.perf_counter_ns
    with torch.inference_mode():
        for _, call in live:
            for _ in range(warmup):
                call()
        while any(len(t) < runs for t in times.values()):
            for i, call in live:
                t = times[i]
                n = min(chunk, runs - len(t))
                if n <= 0:
                    continue
                call()
                for _ in range(n):
                    t0 = clock()
                    call()
                    t.append((clock() - t0) / 1e6)
    return times


def summarise(cases: list[Case], times: dict[int, list[float]], threads: int, batch: int) -> list[dict[str, Any]]:
    """Rows with latency percentiles, throughput, GMAC/s and the speed ratio against FD-MobileNet."""
    import numpy as np

    from .models import model_family

    rows = []
    for i, c in enumerate(cases):
        row: dict[str, Any] = {
            "model": c.model,
            "family": model_family(c.model),
            "backend": c.backend,
            "threads": threads,
            "batch": batch,
            "resolution": c.resolution,
            "macs": c.macs,
            "params": c.params,
        }
        t = times.get(i)
        if not t:
            rows.append({**row, "median_ms": None, "error": c.note or "not run"})
            continue
        a = np.asarray(t)
        med = float(np.median(a))
        row.update(
            median_ms=round(med, 4),
            p10_ms=round(float(np.percentile(a, 10)), 4),
            p90_ms=round(float(np.percentile(a, 90)), 4),
            runs=len(a),
            throughput_ips=round(batch * 1000.0 / med, 1),
            gmacs_per_s=_sig(c.macs * batch / (med / 1000.0) / 1e9),  # 4 digits: under 1 GMAC/s too
        )
        rows.append(row)
    for row in rows:
        if row["median_ms"] is None:
            continue
        peers = [
            r
            for r in rows
            if r["family"] == REFERENCE_FAMILY and r["backend"] == row["backend"] and r["median_ms"] is not None
        ]
        if peers:
            ref = min(peers, key=lambda r: abs(math.log(r["macs"] / row["macs"])))
            row["fd_reference"] = f"{ref['model']}@{ref['resolution']}"
            # How many times faster the FD-MobileNet of nearest complexity is than this model.
            row["fd_speedup"] = _sig(row["median_ms"] / ref["median_ms"])
        ort = next(
            (
                r
                for r in rows
                if r["backend"] == "ort"
                and r["model"] == row["model"]
                and r["resolution"] == row["resolution"]
                and r["median_ms"] is not None
            ),
            None,
        )
        if ort is not None:
            row["speedup_vs_ort_fp32"] = _sig(ort["median_ms"] / row["median_ms"])
    return rows


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def plot(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Latency against MMACs (log-log), one line per family and backend."""
    import io

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ValueError('--plot needs matplotlib: pip install "fdmobilenet[train]" (or pip install matplotlib)') from e
    from .weights import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    styles = {"fd_mobilenet": "o-", "mobilenet_v1": "s--", "shufflenet_v1": "^:"}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("median_ms") is not None:
            groups.setdefault((r["family"], r["backend"]), []).append(r)
    backends = sorted({b for _, b in groups})
    colors = {b: f"C{i}" for i, b in enumerate(backends)}
    for (fam, backend), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["macs"])
        ax.plot(
            [r["macs"] / 1e6 for r in rs],
            [r["median_ms"] for r in rs],
            styles.get(fam, "x-"),
            color=colors[backend],
            label=f"{fam} / {backend}",
            markersize=5,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MMACs")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(title or "latency vs complexity", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help=f"comma-separated names, name@R for another resolution (default: {DEFAULT_MODELS})")
    p.add_argument(
        "--backends",
        help=f"comma-separated subset of {', '.join(BACKENDS)} (default: {','.join(DEFAULT_BACKENDS)}; "
        "OpenVINO ones are dropped when it is not installed; ort-raw is plain InferenceSession.run, the baseline "
        "the ort wrapper must match)",
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of every runtime")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--resolution", type=int, default=224, help="input size for models without @R")
    p.add_argument("--runs", type=int, default=200, help="timed runs per model and backend (after warm-up)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    p.add_argument("--calibration", help="photos to calibrate the int8 models with (default: random tensors)")
    p.add_argument("--workdir", help="keep the exported .onnx files here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--plot", help="write latency vs MMACs to this PNG file")


def run(a: argparse.Namespace) -> int:
    import torch

    from .export import require
    from .models import list_models

    for flag, v, lo in (("--threads", a.threads, 1), ("--batch", a.batch, 1), ("--runs", a.runs, 1)):
        if v < lo:
            raise ValueError(f"{flag} must be >= {lo}, got {v}")
    if a.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {a.warmup}")
    specs = [parse_model_spec(s.strip(), a.resolution) for s in (a.models or ",".join(DEFAULT_MODELS)).split(",") if s]
    known = set(list_models())
    for name, _ in specs:
        if name not in known:
            raise ValueError(f"--models: unknown model {name!r}; `fdmobilenet models` lists them")
    if a.backends:
        backends = [b.strip() for b in a.backends.split(",") if b.strip()]
        bad = [b for b in backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"--backends: unknown {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
        for b in backends:
            if b.startswith("openvino"):
                require("openvino", f"--backends {b}", 'pip install "fdmobilenet[openvino]"')
            elif b.startswith("ort"):
                require("onnxruntime", f"--backends {b}")
    else:
        backends = [b for b in DEFAULT_BACKENDS if _available(b)]
        dropped = [b for b in DEFAULT_BACKENDS if b not in backends]
        if dropped:
            print(f"bench: skipping {', '.join(dropped)} (not installed)", file=sys.stderr)
    if any(b != "torch" and b != "torch-compile" for b in backends):
        require("onnx", "exporting models for ONNX Runtime / OpenVINO")
    if a.calibration and not Path(a.calibration).is_dir():
        raise FileNotFoundError(f"--calibration folder {a.calibration} does not exist")

    torch.set_num_threads(a.threads)
    with contextlib.ExitStack() as stack:
        if a.workdir:
            workdir = Path(a.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fdm-bench-")))
        cases = build_cases(specs, backends, a.threads, a.batch, workdir, a.calibration)
        times = measure(cases, a.runs, a.warmup)
    rows = summarise(cases, times, a.threads, a.batch)
    info = machine_info()
    if a.plot:
        title = f"{info['cpu']}, {a.threads} thread(s), batch {a.batch}"
        plot(rows, a.plot, title)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"# {info['cpu']} ({', '.join(info['cpu_flags'])}), {a.threads} thread(s), batch {a.batch}; "
        f"torch {info['torch']}, onnxruntime {info['onnxruntime']}, openvino {info['openvino']}; {info['date']}"
    )
    print(
        f"{'model':<22} {'res':>4} {'backend':<14} {'MMACs':>7} {'median ms':>10} {'p10':>8} {'p90':>8} "
        f"{'img/s':>8} {'GMAC/s':>7} {'FD faster':>10}  vs FD"
    )
    for r in rows:
        if r["median_ms"] is None:
            print(f"{r['model']:<22} {r['resolution']:>4} {r['backend']:<14} {'-':>7} error: {r['error']}")
            continue
        print(
            f"{r['model']:<22} {r['resolution']:>4} {r['backend']:<14} {r['macs'] / 1e6:>7.1f} {r['median_ms']:>10.3f} "
            f"{r['p10_ms']:>8.3f} {r['p90_ms']:>8.3f} {r['throughput_ips']:>8.0f} {r['gmacs_per_s']:>7.2f} "
            f"{r.get('fd_speedup', float('nan')):>9.2f}x  {r.get('fd_reference', '')}"
        )
    return 0
