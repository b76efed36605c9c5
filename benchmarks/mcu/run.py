"""Issue 22: which models fit microcontrollers (``fit``) and what Vela plans for them on Ethos-U.

    PYTHONPATH=src python benchmarks/mcu/run.py [--no-vela]
    PYTHONPATH=src python benchmarks/mcu/run.py --render    # results.md from results.json

Writes benchmarks/mcu/results.json and results.md: ``fit`` tables for three targets, then FD-MobileNet vs
MobileNet V1 vs ShuffleNet V1 (g=3) at 12 and 40 MFLOPs (widths solved at 224 px) at 128/160/224 px
through ExecuTorch's Arm backend and Vela on Ethos-U55-128: SRAM, flash, operators on the NPU vs the
CPU, estimated time, next to ``profile --int8``'s own peak-activation count.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os
import platform
import time
from pathlib import Path

import torch

from fdmobilenet.fit import fit, format_size, limits_for
from fdmobilenet.models import create_model, solve_width

HERE = Path(__file__).parent
FIT_CASES = [("ethos-u55-128", "256KiB"), ("cortex-m7", None), ("nrf52840", None)]
FAMILIES = ("fd_mobilenet", "mobilenet_v1", "shufflenet_v1")


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": f"{platform.machine()} {platform.processor()}".strip()}
    for pkg in ("torch", "executorch", "ethos-u-vela", "tosa-tools"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["cpus"] = os.cpu_count()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-vela", action="store_true")
    ap.add_argument("--target", default="ethos-u55-128")
    ap.add_argument("--resolutions", default="128,160,224")
    a = ap.parse_args()
    torch.set_num_threads(1)
    res = {"date": datetime.date.today().isoformat(), "versions": versions(), "fit": {}, "vela": []}
    md_lines = [f"# Microcontrollers: fit and Vela ({res['date']})", "", f"Versions: {res['versions']}", ""]
    for target, sram in FIT_CASES:
        t = time.perf_counter()
        r = fit(limits_for(target, max_sram=sram))
        took = time.perf_counter() - t
        res["fit"][f"{target} {sram or ''}".strip()] = {**r.as_dict(), "seconds": round(took, 2)}
        md_lines += [f"## fit --target {target}" + (f" --max-sram {sram}" if sram else ""), ""]
        md_lines += [f"{len(r.fitting)} of {r.searched} fit; {took:.1f} s (profiles cached). Largest per family:", ""]
        md_lines += ["| model | width | res | MMACs | params | SRAM (int8 act) | flash (int8 w) |", "|---" * 7 + "|"]
        for c in r.best_per_family.values():
            md_lines.append(
                f"| {c.name} | {c.width:g} | {c.resolution} | {c.macs / 1e6:.1f} | {c.params:,} | "
                f"{format_size(c.sram)} | {format_size(c.flash)} |"
            )
        md_lines.append("")
    if not a.no_vela:
        from fdmobilenet.complexity import profile
        from fdmobilenet.deploy.ethosu import lower_ethosu

        md_lines += [
            f"## Vela on {a.target} (INT8 via ExecuTorch's Arm backend; random calibration)",
            "",
            "| family | MFLOPs@224 | width | res | MMACs | ours: int8 act | Vela SRAM | diff | int8 w (ours) "
            "| Vela flash | NPU/CPU ops | outside delegate | est. ms |",
            "|---" * 13 + "|",
        ]
        for budget in (12, 40):
            for fam in FAMILIES:
                w = solve_width(fam, budget, resolution=224)
                model = create_model(fam, width=w)
                for r_ in (int(x) for x in a.resolutions.split(",")):
                    p = profile(model, r_)
                    try:
                        _, v = lower_ethosu(model, r_, a.target)
                    except Exception as e:  # a failure is a finding: record it
                        res["vela"].append({"family": fam, "budget": budget, "resolution": r_, "error": repr(e)})
                        md_lines.append(f"| {fam} | {budget} | {w:g} | {r_} | failed: {type(e).__name__} |")
                        continue
                    row = {"family": fam, "budget": budget, "width": w, "resolution": r_, "macs": p.macs,
                           "int8_peak_activation_bytes": p.int8_peak_activation_bytes,
                           "int8_peak_nhcwb16_bytes": p.int8_peak_nhcwb16_bytes,
                           "int8_weight_bytes": p.int8_weight_bytes, **v.as_dict()}  # fmt: skip
                    res["vela"].append(row)
                    ours, theirs = p.int8_peak_activation_bytes, v.sram_bytes
                    outside = ",".join(v.outside_delegate) or "-"
                    md_lines.append(
                        f"| {fam} | {budget} | {w:g} | {r_} | {p.macs / 1e6:.1f} | {format_size(ours)} | "
                        f"{format_size(theirs)} | {(theirs - ours) / ours:+.0%} | {format_size(p.int8_weight_bytes)} | "
                        f"{format_size(v.flash_bytes)} | {v.npu_ops}/{v.cpu_ops} | {outside} "
                        f"| {v.inference_ms:.2f} |"
                    )
                    print(md_lines[-1], flush=True)
                    (HERE / "results.json").write_text(json.dumps(res, indent=1))
    (HERE / "results.json").write_text(json.dumps(res, indent=1))
    (HERE / "results.md").write_text("\n".join(md_lines) + "\n")


def _nhcwb16(family: str, width: float, resolution: int) -> int:
    """Our INT8 peak in Ethos-U's NHCWB16 layout, for rows recorded before it was counted (meta device: shapes)."""
    from fdmobilenet.complexity import profile

    with torch.device("meta"):
        model = create_model(family, width=width)
    return profile(model, resolution).int8_peak_nhcwb16_bytes


def run_a16w8(target: str = "ethos-u55-128") -> None:
    """``--a16w8``: FD-MobileNet and MobileNet V1 at 12 and 40 MFLOPs lowered with 16-bit activations (INT8
    weights, ``--activations int16``), beside the INT8 rows already in results.json."""
    from fdmobilenet.complexity import profile
    from fdmobilenet.deploy.ethosu import lower_ethosu

    torch.set_num_threads(1)
    res = json.loads((HERE / "results.json").read_text())
    res["a16w8"] = {"date": datetime.date.today().isoformat(), "versions": versions(), "rows": []}
    for budget in (12, 40):
        for fam in ("fd_mobilenet", "mobilenet_v1"):
            w = solve_width(fam, budget, resolution=224)
            model = create_model(fam, width=w)
            for r_ in (128, 160, 224):
                _, v = lower_ethosu(model, r_, target, activations="int16")
                p = profile(model, r_)
                row = {"family": fam, "budget": budget, "width": w, "resolution": r_,
                       "int8_peak_nhcwb16_bytes": p.int8_peak_nhcwb16_bytes, **v.as_dict()}  # fmt: skip
                res["a16w8"]["rows"].append(row)
                print(row, flush=True)
                (HERE / "results.json").write_text(json.dumps(res, indent=1))
    (HERE / "results.md").write_text(render_vela(res))


def render_a16w8(res: dict) -> list[str]:
    """The A16W8 rows beside the INT8 ones: what 16-bit activations cost in SRAM and time."""
    a = res.get("a16w8")
    if not a:
        return []
    int8 = {(v["family"], v["budget"], v["resolution"]): v for v in res["vela"] if "error" not in v}
    lines = [
        "",
        f"## A16W8 (`--activations int16`: 16-bit activations, INT8 weights; {a['date']})",
        "",
        "The same lowering with Arm's a16w8 scheme (`export --target ... --activations int16`); `fit --activations "
        "int16` counts 2 bytes an activation (`2 x NHCWB16`). Far closer to fp32 on photos unlike the calibration's "
        "(benchmarks/int8/fidelity.md); the price in SRAM and time:",
        "",
        "| family | MFLOPs@224 | res | INT8 SRAM | A16W8 SRAM | 2 x NHCWB16 | diff | INT8 flash | A16W8 flash "
        "| NPU/CPU ops | INT8 ms | A16W8 ms | ratio |",
        "|---" * 13 + "|",
    ]
    for v in a["rows"]:
        i = int8.get((v["family"], v["budget"], v["resolution"]))
        if i is None:
            continue
        ours = 2 * v["int8_peak_nhcwb16_bytes"]
        lines.append(
            f"| {v['family']} | {v['budget']} | {v['resolution']} | {format_size(i['sram_bytes'])} | "
            f"{format_size(v['sram_bytes'])} | {format_size(ours)} | {(v['sram_bytes'] - ours) / ours:+.1%} | "
            f"{format_size(i['flash_bytes'])} | {format_size(v['flash_bytes'])} | {v['npu_ops']}/{v['cpu_ops']} | "
            f"{i['inference_ms']:.2f} | {v['inference_ms']:.2f} | {v['inference_ms'] / i['inference_ms']:.2f}x |"
        )
    return lines


def render_vela(res: dict) -> str:
    """``--render``: results.md's Vela table from results.json (rows written as each model compiled, so an
    interrupted run still reports what it measured, and says which rows are missing)."""
    lines = [
        f"# Microcontrollers: Vela on Ethos-U ({res['date']}; rendered from results.json)",
        "",
        f"Versions: {res['versions']}",
        "",
        "INT8 via ExecuTorch's Arm backend (random calibration), Vela's default U55 system "
        "(Ethos_U55_High_End_Embedded, Shared_Sram, 500 MHz). `fit` tables: `results.json` (`fit`).",
        "",
        "`ours: int8 act` counts every feature map as it is; `NHCWB16` the same live set with channels padded to "
        "16, the brick layout Ethos-U keeps feature maps in (the input image stays NHWC): that is what Vela plans.",
        "",
        "| family | MFLOPs@224 | width | res | MMACs | ours: int8 act | ours: NHCWB16 | Vela SRAM | diff | "
        "int8 w (ours) | Vela flash | NPU/CPU ops | est. ms |",
        "|---" * 13 + "|",
    ]
    done = set()
    for v in res["vela"]:
        done.add((v["family"], v["budget"], v["resolution"]))
        if "error" in v:
            lines.append(f"| {v['family']} | {v['budget']} | | {v['resolution']} | failed: {v['error'][:80]} |")
            continue
        ours, theirs = v["int8_peak_activation_bytes"], v["sram_bytes"]
        padded = v.get("int8_peak_nhcwb16_bytes") or _nhcwb16(v["family"], v["width"], v["resolution"])
        lines.append(
            f"| {v['family']} | {v['budget']} | {v['width']:g} | {v['resolution']} | {v['macs'] / 1e6:.1f} | "
            f"{format_size(ours)} | {format_size(padded)} | {format_size(theirs)} | "
            f"{(theirs - padded) / padded:+.1%} | "
            f"{format_size(v['int8_weight_bytes'])} | {format_size(v['flash_bytes'])} | "
            f"{v['npu_ops']}/{v['cpu_ops']} | {v['inference_ms']:.2f} |"
        )
    missing = [f"{f} {b} MFLOPs {r} px" for b in (12, 40) for f in FAMILIES for r in (128, 160, 224)
               if (f, b, r) not in done]  # fmt: skip
    if missing:
        lines += ["", f"Not measured (the run was stopped before them): {', '.join(missing)}."]
    lines += render_a16w8(res)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--render"]:
        (HERE / "results.md").write_text(render_vela(json.loads((HERE / "results.json").read_text())))
        raise SystemExit(0)
    if sys.argv[1:] == ["--a16w8"]:
        run_a16w8()
        raise SystemExit(0)
    main()
