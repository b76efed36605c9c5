"""``fit``: the family, width and resolution that fit a device (INT8 SRAM and flash), ranked by MACs; with
``--data``, the leading ones trained on your photos and the winner quantized (``train.fit_data``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from ._args import csv, csv_floats, positive_int, thread_count


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def fit_arguments(p: argparse.ArgumentParser) -> None:
    from ..fit import FIT_FAMILIES, FIT_RESOLUTIONS, FIT_WIDTHS

    p.add_argument("--target", help="a device preset (its SRAM, flash and clock; see --list-targets)")
    p.add_argument("--list-targets", action="store_true", help="list the device presets with their sources")
    p.add_argument("--max-sram", help="RAM for INT8 activations: bytes, or 256KiB, 2MiB, 300kB (overrides --target)")
    p.add_argument("--max-flash", help="flash for INT8 weights: bytes, or 1MiB, 512KiB (overrides --target)")
    p.add_argument(
        "--activations",
        choices=("int8", "int16"),
        default="int8",
        help="int16: A16W8 (16-bit activations, as `quantize --activations int16`): twice the SRAM, far closer to fp32",
    )
    p.add_argument("--max-mmacs", type=float, help="compute budget in M multiply-adds (the papers' MFLOPs)")
    p.add_argument("--families", type=csv, default=list(FIT_FAMILIES), help="families to search (default: all)")
    p.add_argument("--widths", type=csv_floats, default=list(FIT_WIDTHS), help="width multipliers to search")
    p.add_argument("--resolutions", type=_ints, default=list(FIT_RESOLUTIONS), help="input sizes to search")
    p.add_argument("--top", type=int, default=15, help="rows of the Pareto table to print")
    p.add_argument(
        "--estimate",
        type=int,
        metavar="N",
        help="Ethos-U targets: ask Vela for the time (at the target's clock), SRAM and flash of the first N rows of "
        "the Pareto set (~30 s a row; extra mcu). Default 0, or 8 with --max-latency",
    )
    p.add_argument(
        "--max-latency",
        type=float,
        metavar="MS",
        help="Ethos-U targets: the Pareto rows are estimated by Vela, most MACs first, until one runs within MS "
        "milliseconds (at most --estimate rows)",
    )
    p.add_argument("--no-cache", action="store_true", help="profile every candidate again (no cache file)")
    p.add_argument("--json", action="store_true", help="print JSON")
    g = p.add_argument_group(
        "with data", "train the leading candidates on your photos, quantize the winner to INT8, report both"
    )
    g.add_argument("--data", metavar="DIR", help="class folders (or train/ and val/): train the leading candidates")
    g.add_argument(
        "--epochs", type=positive_int, help="epochs a run (default: the recipe's, as `train --data` picks: 30 below "
        "25,600 training images)"
    )  # fmt: skip
    g.add_argument("--train-top", type=positive_int, help="train this many leading candidates (default 2)")
    g.add_argument("--out", help="folder of the runs, the INT8 file and fit-report.md/.json (default fit-run)")
    g.add_argument(
        "--pretrained-from", metavar="DIR", help="released FD-MobileNet widths fine-tune from DIR/<name>.safetensors "
        "or the authors' .pth.tar (default: $FDM_WEIGHTS, else the download cache; else from scratch)"
    )  # fmt: skip
    g.add_argument("--recipe", help="training recipe (default auto; see `train`)")
    g.add_argument(
        "--rounding-steps", type=int, help="AdaRound steps per layer of the INT8 winner (default: `quantize`'s, 500)"
    )
    g.add_argument("--batch-size", type=positive_int, help="batch size (default: chosen from the data)")
    g.add_argument("--val-split", type=float, help="hold-out fraction for DIRs without val/ (default 0.1)")
    g.add_argument("--threads", type=thread_count, help="CPU threads of training, quantizing and scoring")
    g.add_argument("--workers", type=int, help="data-loading processes")
    g.add_argument("--device", help="cpu, cuda, cuda:N or auto (training)")
    g.add_argument("--in-memory", action=argparse.BooleanOptionalAction, help="decode the photos once (see `train`)")


_DATA_ONLY = ("epochs", "train_top", "out", "pretrained_from", "recipe", "rounding_steps", "batch_size",
              "val_split", "threads", "workers", "device", "in_memory")  # fmt: skip
_OVERRIDES = ("batch_size", "val_split", "threads", "workers", "device", "in_memory")


def fit_run(a: argparse.Namespace) -> int:
    from ..fit import DEVICES, ethos_u, fit, format_size, limits_for

    if a.list_targets:
        if a.json:
            print(json.dumps([vars(d) for d in DEVICES.values()], indent=1))
            return 0
        print(f"{'target':<14} {'SRAM':>9} {'flash':>9} {'clock':>8}  device")
        for d in DEVICES.values():
            flash = format_size(d.flash) if d.flash else "-"
            print(f"{d.name:<14} {format_size(d.sram):>9} {flash:>9} {d.clock_mhz:>5}MHz  {d.description}")
            print(f"{'':<14} source: {d.source}")
        return 0
    if a.data is None:
        given = next((k for k in _DATA_ONLY if getattr(a, k) is not None), None)
        if given:
            raise ValueError(f"--{given.replace('_', '-')} needs --data DIR (it trains on your photos)")
    limits = limits_for(a.target, a.max_sram, a.max_flash, a.max_mmacs)
    rows_to_estimate = _estimate_count(a, limits)
    result = fit(limits, a.families, a.widths, a.resolutions, cache=not a.no_cache, activations=a.activations)
    if a.data is not None:
        from ..train.fit_data import fit_to_data

        overrides = {k: getattr(a, k) for k in _OVERRIDES if getattr(a, k) is not None}
        from ..deploy.quantize import PtqConfig

        steps = {} if a.rounding_steps is None else {"rounding_steps": a.rounding_steps}
        ptq = PtqConfig(activations=a.activations, **steps)
        # --json: stdout holds the report alone, the training log goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if a.json else contextlib.nullcontext():
            report = fit_to_data(
                result, a.data, a.out or "fit-run", a.epochs, a.train_top or 2, a.pretrained_from,
                a.recipe or "auto", overrides, ptq=ptq,
            )  # fmt: skip
        if a.json:
            print(json.dumps(report, indent=1))
        return 0
    estimates = _estimates(result, limits, rows_to_estimate, a.max_latency, quiet=a.json)
    if a.json:
        print(json.dumps({**result.as_dict(), **({"vela": estimates} if rows_to_estimate else {})}, indent=1))
        return 0
    told = []
    if limits.device:
        told.append(f"{limits.device.name} ({limits.device.description}, {limits.device.clock_mhz} MHz)")
    if limits.sram:
        told.append(f"SRAM {format_size(limits.sram)}")
    if limits.flash:
        told.append(f"flash {format_size(limits.flash)}")
    if limits.mmacs:
        told.append(f"{limits.mmacs:g} MMACs")
    print(f"fit: {'; '.join(told)}")
    layout = (
        "peak activations in the NPU's NHCWB16 layout, channels padded to 16, as Vela plans"
        if ethos_u(limits)
        else "peak activations"
    )
    scheme = "A16W8: 16-bit activations" if result.activations == "int16" else "INT8"
    print(f"{len(result.fitting)} of {result.searched} candidates fit ({scheme}: SRAM = {layout}, flash = weights)")
    if not result.fitting:
        print("nothing fits: raise a limit or search smaller widths/resolutions (--widths, --resolutions)")
        return 0
    from ..fit import binding

    def table(rows, title):
        print(f"\n{title}")
        print(f"{'model':<26} {'width':>6} {'res':>4} {'MMACs':>8} {'params':>10} {'SRAM':>9} {'flash':>9}  binds")
        for c in rows:
            print(
                f"{c.name:<26} {c.width:>6g} {c.resolution:>4} {c.macs / 1e6:>8.2f} {c.params:>10,} "
                f"{format_size(c.sram):>9} {format_size(c.flash):>9}  {binding(c, limits)}"
            )

    front = result.front
    more = f" (first {a.top} of {len(front)}; --top)" if len(front) > a.top else ""
    table(front[: a.top], f"Pareto set: most MACs for the SRAM and flash{more}")
    table(result.best_per_family.values(), "largest that fits, per family")
    if rows_to_estimate:
        _print_estimates(estimates, a.max_latency)
    else:
        print(
            "\nMACs are the accuracy proxy (no latency model: MACs do not predict NPU time; `--estimate N` asks "
            "Vela for the first N rows on an Ethos-U target)"
        )
    return 0


def _estimate_count(a: argparse.Namespace, limits) -> int:
    """Rows Vela estimates (``--estimate``, 8 with ``--max-latency``): refused up front where Vela cannot run."""
    from ..fit import ethos_u

    n = a.estimate if a.estimate is not None else (8 if a.max_latency is not None else 0)
    if n < 0:
        raise ValueError(f"--estimate must be >= 0, got {n}")
    if a.max_latency is not None and not (a.max_latency > 0 and a.max_latency < float("inf")):
        raise ValueError(f"--max-latency must be a positive number of milliseconds, got {a.max_latency}")
    if a.max_latency is not None and n == 0:
        raise ValueError("--max-latency needs Vela's estimates: drop --estimate 0")
    if n and not ethos_u(limits):
        raise ValueError("--estimate and --max-latency ask Vela: give an Ethos-U --target (e.g. ethos-u55-128)")
    return n


def _estimates(result, limits, n: int, max_latency: float | None, quiet: bool) -> list[dict]:
    """Vela's plan for the Pareto rows, most MACs first: ``n`` of them, or until one is within ``max_latency``."""
    from ..fit import estimate, ethos_u

    npu, out = ethos_u(limits), []
    for c in result.front[:n]:
        if not quiet:
            print(f"fit: asking Vela about {c.name} at {c.resolution} px ...", file=sys.stderr, flush=True)
        r = estimate(c, npu, result.activations)
        out.append({"name": c.name, "width": c.width, "resolution": c.resolution, "macs": c.macs, **r.as_dict()})
        if max_latency is not None and r.inference_ms <= max_latency:
            break
    return out


def _print_estimates(rows: list[dict], max_latency: float | None) -> None:
    from ..fit import format_size

    first = rows[0] if rows else None
    where = f"{first['system_config']}, {first['clock_hz'] / 1e6:g} MHz" if first else ""
    print(f"\nVela's estimates ({where}; INT8, batch 1; no hardware):")
    print(f"{'model':<26} {'res':>4} {'MMACs':>8} {'est. ms':>8} {'SRAM':>9} {'flash':>9} {'NPU/CPU ops':>11}")
    for r in rows:
        ops = f"{r['npu_ops']}/{r['cpu_ops'] + len(r['outside_delegate'])}"
        print(f"{r['name']:<26} {r['resolution']:>4} {r['macs'] / 1e6:>8.2f} {r['inference_ms']:>8.3f} "
              f"{format_size(r['sram_bytes']):>9} {format_size(r['flash_bytes']):>9} {ops:>11}")  # fmt: skip
    if max_latency is not None:
        hit = next((r for r in rows if r["inference_ms"] <= max_latency), None)
        if hit:
            print(f"most MACs within {max_latency:g} ms: {hit['name']} at {hit['resolution']} px "
                  f"({hit['inference_ms']:.3f} ms)")  # fmt: skip
        else:
            print(f"none of the {len(rows)} rows estimated runs within {max_latency:g} ms: raise --estimate or a limit")
