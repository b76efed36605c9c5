"""``models``, ``profile`` and ``convert``: what the registry holds, what each model costs, the authors' weights.

``models`` reads names and the generated complexity table only, so it answers without importing torch;
``profile`` and ``convert`` import the model stack when they run. Detectors (``ssdlite_*``) are listed in
a section of their own, without MACs (they depend on the class count and resolution: ``profile`` them).
"""

from __future__ import annotations

import argparse
import json

from .._utils import format_size
from ..models._complexity_table import COMPLEXITY_AT_224
from ..models._registry import FAMILIES, list_models, lookup, model_task
from ._args import csv, csv_floats


def models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'fd_*'")
    p.add_argument("--json", action="store_true", help="print JSON rows")


def models_run(a: argparse.Namespace) -> int:
    rows = []
    for name in list_models(a.pattern):
        macs, params = (None, None) if name in FAMILIES else COMPLEXITY_AT_224[name]
        rows.append({"model": name, "macs": macs, "params": params})
    detectors = [
        {"model": n, "task": "detection", "backbone": lookup(n)[1].get("backbone")}
        for n in list_models(a.pattern, task="detection")
    ]
    if a.json:
        print(json.dumps(rows + detectors, indent=1))
        return 0
    if rows:
        print(f"{'model':<24} {'MMACs@224':>10} {'params':>11}")
    for r in rows:
        if r["macs"] is None:
            print(f"{r['model']:<24} {'(width=)':>10} {'':>11}")
        else:
            print(f"{r['model']:<24} {r['macs'] / 1e6:>10.2f} {r['params']:>11,}")
    if detectors:
        print(f"{'' if not rows else chr(10)}{'detector (SSDLite)':<32} backbone  (MACs: fdmobilenet profile NAME)")
        for d in detectors:
            print(f"{d['model']:<32} {d['backbone'] or '(backbone=, width=)'}")
    return 0


def profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="registered model names")
    p.add_argument("--resolution", type=int, help="input size (default: 224 for classifiers, 320 for detectors)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per model")
    p.add_argument("--layers", action="store_true", help="add a per-layer table")
    p.add_argument(
        "--int8",
        action="store_true",
        help="add the INT8 memory a microcontroller needs: weights in flash (int8 + int32 bias + fp32 scale per "
        "channel) and peak activations in RAM (1 byte an element), next to fp32",
    )
    p.add_argument("--mflops", type=csv_floats, help="budgets in M multiply-adds, e.g. 12,40,140: match each family")
    p.add_argument(
        "--families",
        type=csv,
        default=["fd_mobilenet", "mobilenet_v1", "shufflenet_v1"],
        help="families for --mflops (default: fd_mobilenet,mobilenet_v1,shufflenet_v1)",
    )
    p.add_argument("--groups", type=int, default=3, help="ShuffleNet group count for --mflops")
    p.add_argument(
        "--target",
        help="an Arm Ethos-U NPU (ethos-u55-128, ethos-u65-256, ...): also compile each model with Vela (INT8, "
        "ExecuTorch's Arm backend) and print its SRAM, flash, operators on the NPU/CPU and estimated time",
    )


def profile_run(a: argparse.Namespace) -> int:
    from ..complexity import profile  # torch: imported when profiling, not for `fdmobilenet models`
    from ..models import create_model, family_kwargs, macs_by_part, solve_width

    todo: list[tuple[str, dict]] = [(n, {}) for n in a.names]
    if a.mflops:
        for budget in a.mflops:
            for fam in a.families:
                extra = family_kwargs(fam, a.groups)
                w = solve_width(fam, budget, resolution=a.resolution or 224, **extra)
                todo.append((fam, {"width": w, **extra, "budget": budget}))
    if not todo:
        raise ValueError("name at least one model (see `fdmobilenet models`) or give --mflops")
    results = []
    for name, kw in todo:
        budget = kw.pop("budget", None)
        model = create_model(name, resolution=a.resolution, **kw)  # detectors: 20 classes (VOC) by default
        res = model.pretrained_cfg["input_size"][-1]
        p = profile(model, res, name=name)
        d = p.as_dict(layers=a.layers)
        d.update(kw)
        if model_task(name) == "detection":
            d["num_classes"] = model.num_classes
            d.update({f"{k}_macs": v for k, v in macs_by_part(p).items() if k != "total"})
        if budget is not None:
            d["budget_mflops"] = budget
        if a.target:
            from ..deploy.ethosu import lower_ethosu

            d["vela"] = lower_ethosu(model, res, a.target)[1].as_dict()
        results.append(d)
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    int8_head = f" {'fp32 weights':>12} {'int8 weights':>12} {'int8 act':>10} {'NHCWB16':>10}" if a.int8 else ""
    print(f"{'model':<24} {'width':>6} {'res':>4} {'MMACs':>9} {'params':>11} {'peak act':>10}{int8_head}")
    for d in results:
        width = f"{d['width']:.4g}" if "width" in d else ""
        int8 = (
            f" {format_size(d['weight_bytes']):>12} {format_size(d['int8_weight_bytes']):>12} "
            f"{format_size(d['int8_peak_activation_bytes']):>10} {format_size(d['int8_peak_nhcwb16_bytes']):>10}"
            if a.int8
            else ""
        )
        print(
            f"{d['model']:<24} {width:>6} {d['resolution']:>4} {d['macs'] / 1e6:>9.2f} {d['params']:>11,} "
            f"{d['peak_activation_bytes'] / 2**20:>8.2f}MiB{int8}"
        )
        if "vela" in d:
            from ..deploy.ethosu import VelaReport

            print(f"    {VelaReport(**d['vela'])}")
            ours, theirs = d["int8_peak_nhcwb16_bytes"], d["vela"]["sram_bytes"]
            print(
                f"    int8 peak activations in NHCWB16 (ours, no tiling) {format_size(ours)} vs Vela's SRAM "
                f"{format_size(theirs)} ({(theirs - ours) / ours:+.1%}); unpadded "
                f"{format_size(d['int8_peak_activation_bytes'])}"
            )
        if "backbone_macs" in d:
            print(
                f"    backbone {d['backbone_macs'] / 1e6:.2f} + extras {d['extras_macs'] / 1e6:.2f} + head "
                f"{d['head_macs'] / 1e6:.2f} MMACs ({d['num_classes']} classes; box decoding and NMS not counted)"
            )
        if a.layers:
            extra = f" {'int8 act':>10} {'int8 w':>9}" if a.int8 else ""
            print(f"    {'layer':<34} {'type':<12} {'output':<18} {'MMACs':>8} {'params':>9}{extra}")
            for layer in d["layers"]:
                shape = "x".join(str(s) for s in layer["out_shape"][1:])
                extra = (
                    f" {format_size(layer['activation_elements']) if layer['activation_elements'] else '':>10} "
                    f"{format_size(layer['int8_weight_bytes']):>9}"
                    if a.int8
                    else ""
                )
                print(
                    f"    {layer['name']:<34} {layer['kind']:<12} {shape:<18} "
                    f"{layer['macs'] / 1e6:>8.3f} {layer['params']:>9,}{extra}"
                )
    if a.int8:
        print(
            "int8 weights: int8 + int32 bias + fp32 scale per output channel, BatchNorm folded (flash)\n"
            "int8 act: the largest set of activations alive at once, 1 byte each (RAM, no tiling)\n"
            "NHCWB16: the same with channels padded to 16, the layout Ethos-U NPUs keep feature maps in (what Vela "
            "plans)"
        )
    return 0


def convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the authors' .pth.tar checkpoint (or any state_dict file)")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--model", help="registered model name (inferred from the weights if omitted)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dst file that fdmobilenet did not write; weights it wrote are replaced "
        "without this; a link, folder or device never",
    )


def convert_run(a: argparse.Namespace) -> int:
    from ..models import convert_authors_checkpoint  # torch: imported when converting only

    meta = convert_authors_checkpoint(a.src, a.dst, a.model, overwrite=a.overwrite)
    print(f"wrote {a.dst}: {meta['model']}, {meta['num_classes']} classes, source {meta['source']}")
    return 0
