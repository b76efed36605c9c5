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
    p.add_argument("--max-mmacs", type=float, help="compute budget in M multiply-adds (the papers' MFLOPs)")
    p.add_argument("--families", type=csv, default=list(FIT_FAMILIES), help="families to search (default: all)")
    p.add_argument("--widths", type=csv_floats, default=list(FIT_WIDTHS), help="width multipliers to search")
    p.add_argument("--resolutions", type=_ints, default=list(FIT_RESOLUTIONS), help="input sizes to search")
    p.add_argument("--top", type=int, default=15, help="rows of the Pareto table to print")
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
    from ..fit import DEVICES, brick_layout, fit, format_size, limits_for

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
    result = fit(limits, a.families, a.widths, a.resolutions, cache=not a.no_cache)
    if a.data is not None:
        from ..train.fit_data import fit_to_data

        overrides = {k: getattr(a, k) for k in _OVERRIDES if getattr(a, k) is not None}
        ptq = None
        if a.rounding_steps is not None:
            from ..deploy.quantize import PtqConfig

            ptq = PtqConfig(rounding_steps=a.rounding_steps)
        # --json: stdout holds the report alone, the training log goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if a.json else contextlib.nullcontext():
            report = fit_to_data(
                result, a.data, a.out or "fit-run", a.epochs, a.train_top or 2, a.pretrained_from,
                a.recipe or "auto", overrides, ptq=ptq,
            )  # fmt: skip
        if a.json:
            print(json.dumps(report, indent=1))
        return 0
    if a.json:
        print(json.dumps(result.as_dict(), indent=1))
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
        if brick_layout(limits)
        else "peak activations"
    )
    print(f"{len(result.fitting)} of {result.searched} candidates fit (INT8: SRAM = {layout}, flash = weights)")
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
    print(
        "\nMACs are the accuracy proxy (no latency model: MACs do not predict NPU time; "
        "`fdmobilenet profile NAME --target ethos-u55-128` asks Vela)"
    )
    return 0
