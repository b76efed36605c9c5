"""Latency on the user's own hardware: the paper's speed claim, put to the test.

The paper's second claim is speed at matched complexity (FD-MobileNet 1.11x faster than
MobileNet V1 and 1.82x faster than ShuffleNet, on ARM). MACs do not predict latency well, so
``bench`` measures every model of the comparison on every requested runtime and reports each
model's speed relative to the FD-MobileNet of nearest MACs on the same runtime.

All runners of one invocation are timed *interleaved* (a few runs of each in turn, repeated), so
slow drifts of a noisy machine hit every model alike and the ratios stay meaningful. The timed
call is the bare runtime call on pre-allocated input and output memory (the calls are built in
``bench_cases``; their names are re-exported here).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ParameterError
from .._progress import Progress
from .._utils import OPENVINO_HINT, TRAIN_HINT, MissingDependencyError, plain_log_axis, pyplot, require, save_figure
from ..complexity import profile
from ..models import model_family
from .bench_cases import DETECTOR_POSTPROCESS, Case, build_cases, export_files, spec_model  # noqa: F401 (re-exported)
from .runtime import BACKENDS as RUNTIMES

# every runtime of runtime.BACKENDS timed in fp32 and int8, beside PyTorch, plain ORT and ExecuTorch
BACKENDS = ("torch", "torch-compile", *(b for r in RUNTIMES for b in (r, f"{r}-int8")), "ort-raw", "executorch",
            "executorch-int8")  # fmt: skip
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


def parse_model_spec(spec: str, default_resolution: int) -> tuple[str, int]:
    """``name`` or ``name@R`` (e.g. ``mobilenet_v1_025@160``); ``family:MFLOPS`` is a bare family at the width
    that meets the budget (e.g. ``mobilenet_v3_small:40``)."""
    name, _, res = spec.partition("@")
    if res and not res.isdigit():
        raise ParameterError(
            "models", f"`models` entry {spec!r}: the part after @ must be a resolution in pixels, e.g. {name}@160"
        )
    return name, int(res) if res else default_resolution


def _available(backend: str) -> bool:
    need = {"ort": "onnxruntime", "openvino": "openvino", "executorch": "executorch"}
    mod = next((m for prefix, m in need.items() if backend.startswith(prefix)), None)
    return mod is None or importlib.util.find_spec(mod) is not None


def measure(cases: list[Case], runs: int, warmup: int = 20, chunk: int = 10) -> dict[int, list[float]]:
    """Per-case call times in ms: ``warmup`` untimed calls each, then rounds of ``chunk`` timed calls per case.

    The first call of each chunk is untimed too: it only re-warms caches the other cases evicted.
    """
    live = [(i, c.call) for i, c in enumerate(cases) if c.call is not None]
    times: dict[int, list[float]] = {i: [] for i, _ in live}
    clock = time.perf_counter_ns
    bar = Progress(len(live) * runs, f"bench: timing {len(live)} cases", "call")
    with torch.inference_mode(), bar:
        for _, call in live:
            for _ in range(warmup):
                call()
        while any(len(t) < runs for t in times.values()):
            bar.update(sum(min(chunk, max(runs - len(t), 0)) for t in times.values()))
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
    rows = []
    for i, c in enumerate(cases):
        row: dict[str, Any] = {
            "model": c.model,
            "family": model_family(c.model.partition(":")[0]),
            "backend": c.backend,
            "threads": threads,
            "batch": batch,
            "resolution": c.resolution,
            "macs": c.macs,
            "params": c.params,
            **({"postprocess": c.postprocess} if c.postprocess else {}),
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
        # detectors are compared with nothing: their calls include NMS, no FD-MobileNet classifier's does
        peers = (
            []
            if "postprocess" in row
            else [
                r
                for r in rows
                if r["family"] == REFERENCE_FAMILY and r["backend"] == row["backend"] and r["median_ms"] is not None
            ]
        )
        _compare_with_fd(row, peers)
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


def _compare_with_fd(row: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    """``fd_reference`` and ``fd_speedup`` of ``row``: how many times faster the FD-MobileNet of nearest MACs
    among ``peers`` (timed alike) is than this model; nothing without peers."""
    if peers:
        ref = min(peers, key=lambda r: abs(math.log(r["macs"] / row["macs"])))
        row["fd_reference"] = f"{ref['model']}@{ref['resolution']}"
        row["fd_speedup"] = _sig(row["median_ms"] / ref["median_ms"])


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def plot(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Latency against MMACs (log-log): one panel per backend, one line per family, the legend beside the
    panels (not over the data) and plain tick labels (12, 20, 50 rather than 1.2x10^1)."""
    plt = pyplot()
    if plt is None:
        raise ParameterError("plot", f"`plot` needs matplotlib: {TRAIN_HINT} (or pip install matplotlib)")
    done = [r for r in rows if r.get("median_ms") is not None]
    if not done:
        raise ParameterError("plot", "`plot`: no model ran, nothing to plot")
    backends = sorted({r["backend"] for r in done})
    families = sorted({r["family"] for r in done})
    ncol = min(3, len(backends))
    nrow = math.ceil(len(backends) / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.4 * ncol + 2.0, 3.0 * nrow + 0.6), squeeze=False, sharex=True, sharey=True
    )
    markers = "os^vDP*Xph"
    for ax, backend in zip(axes.flat, backends):
        for i, fam in enumerate(families):
            rs = sorted((r for r in done if r["backend"] == backend and r["family"] == fam), key=lambda r: r["macs"])
            if rs:
                xs, ys = [r["macs"] / 1e6 for r in rs], [r["median_ms"] for r in rs]
                ax.plot(xs, ys, marker=markers[i % len(markers)], color=f"C{i}", label=fam, markersize=4)
        ax.set_title(backend, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(backends) :]:
        ax.set_visible(False)
    first = axes.flat[0]
    plain_log_axis(first, "x", [r["macs"] / 1e6 for r in done])
    plain_log_axis(first, "y", [r["median_ms"] for r in done])
    for ax in axes[-1]:
        ax.set_xlabel("MMACs")
    for ax in axes[:, 0]:
        ax.set_ylabel("median latency (ms)")
    handles = {f: h for ax in axes.flat for h, f in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title or "latency vs complexity", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / fig.get_figwidth(), 1))
    save_figure(fig, path)


def select_backends(requested: str | None) -> list[str]:
    """The backends to time: the ``requested`` comma-separated list (each checked to be installed), or every
    installed default."""
    if not requested:
        backends = [b for b in DEFAULT_BACKENDS if _available(b)]
        dropped = [b for b in DEFAULT_BACKENDS if b not in backends]
        if dropped:
            print(f"bench: skipping {', '.join(dropped)} (not installed)", file=sys.stderr)
        return backends
    backends = [b.strip() for b in requested.split(",") if b.strip()]
    if not backends:
        raise ParameterError(
            "backends", f"`backends` {requested!r} names no backend; choose from {', '.join(BACKENDS)}"
        )
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ParameterError("backends", f"`backends`: unknown {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    for b in backends:
        if b.startswith("openvino"):
            require("openvino", f"`backends` {b}", OPENVINO_HINT)
        elif b.startswith("ort"):
            require("onnxruntime", f"`backends` {b}")
        elif b.startswith("executorch"):
            from .executorch import EXECUTORCH_HINT

            require("executorch", f"`backends` {b}", EXECUTORCH_HINT)
    return backends


def benchmark(
    specs: list[tuple[str, int]],
    backends: list[str],
    threads: int = 1,
    batch: int = 1,
    runs: int = 200,
    warmup: int = 20,
    calibration: str | None = None,
    workdir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Build, time and summarise every (model, backend): the ``bench`` command between parsing and printing.

    The exported files go to ``workdir`` if given (kept), else to a temporary folder.
    """
    torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        if workdir:
            work = Path(workdir)
            work.mkdir(parents=True, exist_ok=True)
            taken = [p for name, res in specs for p in export_files(work, name, res) if p.exists()]
            if taken:
                raise ParameterError(
                    "workdir",
                    f"`workdir` {work}: {taken[0]} exists and bench would replace it with a random-weight export; "
                    "give an empty folder",
                )
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fdm-bench-")))
        cases = build_cases(specs, backends, threads, batch, work, calibration)
        times = measure(cases, runs, warmup)
    return summarise(cases, times, threads, batch)


def estimate_on_npu(specs: list[tuple[str, int]], target: str, activations: str = "int8") -> list[dict[str, Any]]:
    """``bench --target``: what Arm's Vela compiler plans for each model on an Ethos-U NPU, no hardware needed.

    Every model is lowered as ``export --target`` lowers it (INT8 through ExecuTorch's Arm backend, random
    calibration: memory and time depend on shapes, not on the weights) and Vela's performance model gives
    cycles and time at the configuration's clock, SRAM, flash and the operators left to the CPU. The rows
    carry ``fd_speedup`` as ``benchmark``'s do: the FD-MobileNet of nearest MACs against each model.
    ``activations`` ``int16``: lowered as A16W8 (``export --target ... --activations int16``).
    """
    from .ethosu import lower_ethosu

    rows: list[dict[str, Any]] = []
    for k, (name, res) in enumerate(specs, 1):
        print(f"bench: lowering {name}@{res} for {target} ({k}/{len(specs)})", file=sys.stderr, flush=True)
        model = spec_model(name, res)
        if hasattr(model, "forward_network"):
            raise ParameterError("models", f"`models` {name}: NPU estimates are for classifiers, not detectors")
        prof = profile(model, res)
        row: dict[str, Any] = {"model": name, "family": model_family(name.partition(":")[0]), "backend": target,
                               "resolution": res, "activations": activations,
                               "macs": prof.macs, "params": prof.params}  # fmt: skip
        try:
            vela = lower_ethosu(model, res, target, activations=activations)[1]
        except MissingDependencyError:
            raise
        except Exception as e:  # a model the toolchain cannot lower is a row, not a crash
            rows.append({**row, "median_ms": None, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"})
            continue
        row.update(median_ms=round(vela.inference_ms, 4), vela=vela.as_dict())
        rows.append(row)
    peers = [r for r in rows if r["family"] == REFERENCE_FAMILY and r["median_ms"] is not None]
    for row in rows:
        if row["median_ms"] is not None:
            _compare_with_fd(row, peers)
    return rows
