"""Render results-yardstick.md: the initialisation ablation (``init_ablation.sh`` -> results-init-ablation.jsonl)
and the engine's defaults against the strongest simple loop (``engine_vs_plain.py --case yard*`` ->
results-yardstick.jsonl), with machine and versions.

    python benchmarks/reference/yardstick_report.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from fdmobilenet._utils import machine_info

HERE = Path(__file__).resolve().parent
ABLATION = {
    ("own", None, ""): "the strong loop's own network (PyTorch's init)",
    ("package", "authors", ""): "package network, the authors' init (the package's default before)",
    ("package", "authors", "all"): "... every layer given PyTorch's init",
    ("package", "authors", "pw"): "... pointwise convs given PyTorch's init",
    ("package", "authors", "dw"): "... depthwise convs given PyTorch's init",
    ("package", "authors", "fc"): "... classifier given PyTorch's init",
    ("package", "authors", "stem"): "... stem conv given PyTorch's init",
    ("package", None, ""): "package network as create_model builds it now (PyTorch's init)",
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def ablation_table(rows: list[dict]) -> list[str]:
    lines = ["| network | initialisation | loop variant | seeds | val top-1 % | Δ vs the authors' init |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        variant = ", ".join(
            f"{k.replace('_', ' ')} {r[k]}"
            for k, d in (("pct_start", 0.1), ("lr", 0.1), ("wd", 4e-5))
            if r.get(k, d) != d
        )
        key = (f"{r['family']} {r['width']:g}x", r["net"], r.get("base_init"), r.get("init", ""), variant)
        groups.setdefault(key, []).append(r)
    for (net_name, net, base_init, init, variant), rs in groups.items():
        base = [r["val_top1"] for r in groups.get((net_name, "package", "authors", "", ""), [])]
        tops = [r["val_top1"] for r in rs]
        delta = f"{statistics.mean(tops) - statistics.mean(base):+.2f}" if base else "—"
        name = ABLATION.get((net, base_init, init), f"{net} {base_init} {init}")
        lines.append(f"| {net_name} | {name} | {variant or 'as documented'} | {len(rs)} | {_mean_sd(tops)} | {delta} |")
    return lines


def yardstick_table(rows: list[dict]) -> list[str]:
    lines = ["| case | runner | seeds | val top-1 % (last epoch) | engine − strong | train img/s | wall s |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for case in dict.fromkeys(r["case"] for r in rows):
        ref = case.removesuffix("-engine-ablation")  # engine ablations are judged against their case's loop
        strong = [r["top1"] for r in rows if r["case"] == ref and r["runner"] == "strong"]
        for runner in dict.fromkeys(r["runner"] for r in rows if r["case"] == case):
            rs = [r for r in rows if r["case"] == case and r["runner"] == runner]
            tops = [r["top1"] for r in rs]
            gap = f"{statistics.mean(tops) - statistics.mean(strong):+.2f}" if strong and runner != "strong" else ""
            lines.append(
                f"| {case} | {runner} | {len(rs)} | {_mean_sd(tops)} | {gap} | "
                f"{statistics.mean(r['img_s'] for r in rs):.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} |"
            )
    return lines


# the engine's runs with today's defaults, per family: what the verdicts compare
CURRENT = {
    "FD-MobileNet 0.25x": "yard128-fd-engine-ablation-wd-bn-bias-{seed}",
    "MobileNet V1 0.125x": "yard128-mb-defaults-{seed}",
    "ShuffleNet V1 g=3 0.225x": "yard128-sh-defaults-{seed}",
}


def verdict_table(work: Path) -> list[str]:
    """Paired bootstrap verdicts (photos and seeds) between the families' engine runs at 128 px."""
    from fdmobilenet.train.verdicts import verdicts

    runs = {}
    for fam, pattern in CURRENT.items():
        dirs = {s: work / "runs" / pattern.format(seed=s) for s in range(3)}
        dirs = {s: d for s, d in dirs.items() if (d / "val_predictions.csv").is_file()}
        if dirs:
            runs[(fam, 12.0)] = dirs
    lines = ["| A | B | A − B (points) | 95 % interval | verdict | seeds |", "|---|---|---:|---|---|---:|"]
    for v in verdicts(runs, first="FD-MobileNet 0.25x"):
        interval = "—" if v["lo"] is None else f"[{v['lo']:+.2f}, {v['hi']:+.2f}]"
        diff = "—" if v["diff"] is None else f"{v['diff']:+.2f}"
        lines.append(f"| {v['a']} | {v['b']} | {diff} | {interval} | {v['verdict']} | {v['seeds']} |")
    return lines


def main() -> None:
    info = machine_info()
    lines = [
        "# The yardstick: the engine's defaults against the strongest simple loop",
        "",
        f"- written {info['date']}; {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"torch {info['torch']}; runs one after another (some beside other work: img/s only side by side)",
        "- data: Imagenette (`shared/datasets/imagenette/train`), the seeded 15 % hold-out of `split.py` (8,049 train /"
        " 1,420 val photos); 10 epochs; FD-MobileNet 0.25x, MobileNet V1 0.125x, ShuffleNet V1 g=3 0.225x (12 MFLOPs"
        " at 224 px)",
        "- strong loop: `strong_loop.py` (its docstring has the recipe); engine: `fdmobilenet train --data SPLIT "
        "--model FAMILY --width W --resolution R --epochs 10`, no recipe flags (recipe `small`, what `compare` runs)",
        "",
        "## Initialisation ablation (FD-MobileNet 0.25x, 128 px; `init_ablation.sh`)",
        "",
        *ablation_table(_rows(HERE / "results-init-ablation.jsonl")),
        "",
        "## Engine defaults against the strong loop (`engine_vs_plain.py --case yard128-* / yard224-*`)",
        "",
        *yardstick_table(_rows(HERE / "results-yardstick.jsonl")),
        "",
        "The engine's img/s of a run that shared the CPU with other work (seed 0 of the first FD-MobileNet rows) "
        "pull its mean down; the quiet runs are the side-by-side speed.",
        "",
        "## Verdicts at 12 MFLOPs, 128 px (the engine's runs with today's defaults; paired bootstrap over the "
        "1,420 photos and the seeds, best epoch's predictions)",
        "",
        *verdict_table(HERE / "work"),
        "",
    ]
    (HERE / "results-yardstick.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
