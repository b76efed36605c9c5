"""The sections of a detector comparison's results.md: what the budgets mean, where the backbones come from
(said loudly when from scratch, warned when pretrained differently), both mAPs, the detectors' cost by part
and the backbones' own records. Split from ``compare_detection`` (the plug-in) for size alone."""

from __future__ import annotations

from typing import Any

from .backbones import BACKBONE_RESOLUTION
from .compare_report import table
from .verdicts import format_mean_sd


def detector_sections(summary: list[dict[str, Any]], fams, budgets, how: str, notes: dict[str, Any]) -> list[str]:
    """results.md for detectors: what the budgets mean, where the backbones come from, both mAPs, the cost."""
    res = sorted({r["resolution"] for r in summary})
    res_text = "/".join(map(str, res))
    lines = [
        f"Detectors: SSDLite on each family's backbone (`ssdlite_<family>`). Budgets are **backbone MFLOPs at "
        f"{BACKBONE_RESOLUTION} px** (the paper's convention: the width whose classifier costs the budget at "
        f"{BACKBONE_RESOLUTION} px); the detectors run at {res_text} px, their own MMACs are under "
        '"Detector cost".',
        "",
    ]
    main_rows = [r for r in summary if "+" not in r["family"]]
    if all(r["backbone_weights"] == "scratch" for r in main_rows):
        lines += [
            "**BACKBONES FROM SCRATCH**: no backbone weights were given (compare's backbones option), so every "
            "detector's backbone starts from random weights. The paper's comparison pretrains every backbone the "
            "same way (e.g. a classification compare on ImageNet or Imagenette, then its folder as the backbones); "
            "these numbers measure the architectures trained on this data alone.",
            "",
        ]
    else:
        lines += [
            'Backbones: pretrained, one classification weights file per family and budget (see "Backbones").',
            "",
        ]
        if notes.get("differ"):
            lines += [
                f"**Warning: the backbones were not pretrained the same way** (they differ in "
                f"{', '.join(notes['differ'])}): the comparison mixes pretraining with architecture.",
                "",
            ]
    if any("+" in r["family"] for r in summary):
        lines += [
            "Rows named `+NAME` are extra rows: their backbones start from the file given for them, not pretrained "
            "like the others; compare them with care.",
            "",
        ]
    cost = lambda r: f"(w {r['width']:g}, {r['backbone_mmacs_224']:.1f} M)"  # noqa: E731
    lines += [f"val mAP@0.5, all-point (VOC2010+), % ({how}; backbone width, backbone MMACs at 224 px)", ""]
    lines += table(
        summary,
        fams,
        budgets,
        lambda r: f"{format_mean_sd(r['map50_mean'], r['map50_std'], r['seeds'])} {cost(r)}",
        "detector",
    )
    lines += ["", f"val mAP@0.5, 11-point (VOC2007), % ({how})", ""]

    def m07(r: dict[str, Any]) -> str:
        return "—" if r["map50_07_mean"] is None else format_mean_sd(r["map50_07_mean"], r["map50_07_std"], r["seeds"])

    lines += table(summary, fams, budgets, m07, "detector")
    lines += [
        "",
        f"## Detector cost at {res_text} px",
        "",
        "| detector | budget | width | backbone MMACs at 224 px | detector MMACs (backbone + extras + head) | params |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary:
        split = "+".join(f"{r.get(f'detector_{k}_mmacs', 0):.1f}" for k in ("backbone", "extras", "head"))
        lines.append(
            f"| {r['family']} | {r['budget_mflops']:g} MFLOPs | {r['width']:g} | {r['backbone_mmacs_224']:.1f} | "
            f"{r['detector_mmacs']:.1f} ({split}) | {r['params']:,} |"
        )
    return lines + _backbone_table(summary, notes.get("backbones") or {})


def _backbone_table(summary: list[dict[str, Any]], infos: dict[str, Any]) -> list[str]:
    """The "Backbones" section: each row's backbone file and how it was trained (nothing when all from scratch)."""
    if not infos:
        return []
    lines = [
        "",
        "## Backbones",
        "",
        "| detector | budget | weights | model | data | recipe | epochs | val top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        info = infos.get(f"{r['family']}@{r['budget_mflops']:g}")
        if info is None:
            lines.append(f"| {r['family']} | {r['budget_mflops']:g} MFLOPs | from scratch | | | | | |")
            continue
        shown = {k: "?" if info.get(k) is None else str(info[k]) for k in ("model", "data", "recipe", "epochs")}
        if info.get("data") is None and info.get("source"):  # e.g. the authors' file: its own name
            shown["data"] = f"? ({info['source']})"
        top1 = "?" if info.get("val_top1") is None else f"{info['val_top1']:.2f}"
        lines.append(
            f"| {r['family']} | {r['budget_mflops']:g} MFLOPs | {r['backbone_weights']} | {shown['model']} | "
            f"{shown['data']} | {shown['recipe']} | {shown['epochs']} | {top1} |"
        )
    return lines
