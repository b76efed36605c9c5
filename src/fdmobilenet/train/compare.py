"""``fdmobilenet compare``: the paper's experiment on your data, in one command.

Every (family, budget) pair gets the width whose multiply-adds meet the budget at the chosen
resolution, then trains with the same recipe and seeds; the val accuracy is reported against
MFLOPs. Settings given as ``overrides`` (a ``teacher`` to distil from, the input pipeline, ...) apply to
every run alike. Finished runs are kept (``done.json`` in their folder) and skipped on a re-run; an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import train as training
from .._errors import ParameterError, StoppedError
from .._utils import atomic_write_bytes, plain_log_axis, pyplot, save_figure
from ..complexity import profile
from ..models import FAMILIES, RELEASED_WIDTHS, create_model, family_kwargs, solve_width
from .outputs import read_metrics


@dataclass
class Job:
    family: str
    budget: float
    width: float
    seed: int
    macs: int
    params: int
    pretrained: str | None = None

    @property
    def name(self) -> str:
        tag = "-ft" if self.pretrained else ""
        return f"{self.family}{tag}-{self.budget:g}M-w{self.width:g}-seed{self.seed}"


def plan(
    budgets: list[float],
    families: list[str],
    resolution: int,
    seeds: int,
    groups: int = 3,
    pretrained_from: str | None = None,
) -> list[Job]:
    """The runs to do: one per family, budget and seed (plus fine-tuning rows where widths match)."""
    for f in families:
        if f not in FAMILIES:
            raise ParameterError("families", f"`families`: unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    jobs = []
    for budget in budgets:
        for fam in families:
            extra = family_kwargs(fam, groups)
            w = solve_width(fam, budget, resolution=resolution, **extra)
            p = profile(create_model(fam, width=w, resolution=resolution, **extra), resolution)
            for seed in range(seeds):
                jobs.append(Job(fam, budget, w, seed, p.macs, p.params))
                if pretrained_from and fam == "fd_mobilenet":
                    match = next((n for n, ow in RELEASED_WIDTHS.items() if abs(ow - w) < 0.02), None)
                    if match:
                        src = Path(pretrained_from) / f"{match}.safetensors"
                        if not src.is_file():
                            raise ParameterError(
                                "pretrained_from",
                                f"`pretrained_from`: {src} not found; convert the authors' weights with "
                                f"`fdmobilenet convert` into that folder",
                            )
                        jobs.append(Job(fam, budget, RELEASED_WIDTHS[match], seed, p.macs, p.params, str(src)))
    return jobs


class RunStopped(StoppedError):
    """A run of the comparison ended early; ``exit_code`` is its own (128 + signal, or 3 on divergence)."""

    def __init__(self, name: str, exit_code: int, run_dir: Path):
        if exit_code == training.EXIT_DIVERGED:
            what = (
                f"training {name} diverged (NaN/inf loss); running it again would diverge the same way: lower `lr` "
                f"(or choose another `recipe`) and use another `out`, or delete {run_dir}"
            )
        else:
            sig = exit_code - 128
            name_sig = signal.Signals(sig).name if sig in signal.valid_signals() else f"exit code {exit_code}"
            what = f"training {name} was stopped ({name_sig}); checkpoint kept: re-run the same command to resume"
        super().__init__(what, exit_code)


def _run_one(job: Job, overrides: dict[str, Any], recipe: str, out: Path, groups: int, log) -> dict[str, Any]:
    run_dir = out / "runs" / job.name
    done = run_dir / "done.json"
    if done.is_file():
        log(f"[compare] {job.name}: done before, kept")
        return json.loads(done.read_text())
    cfg_overrides = {**overrides, "out": str(run_dir), "seed": job.seed}
    recipe_cfg = training.load_recipe(recipe)
    if job.pretrained:
        cfg_overrides["model"] = next(n for n, w in RELEASED_WIDTHS.items() if w == job.width)
        cfg_overrides["pretrained"] = job.pretrained
        cfg_overrides.setdefault("lr", training.finetune_lr(recipe_cfg))
    else:
        cfg_overrides.update(model=job.family, width=job.width, **family_kwargs(job.family, groups))
    cfg = training.make_config(cfg_overrides, training.make_config(recipe_cfg))
    resume = (run_dir / "config.json").is_file()
    log(f"[compare] {job.name}: {'resuming' if resume else 'training'} ({job.macs / 1e6:.1f} MMACs)")
    t0 = time.perf_counter()
    result = training.train(cfg, resume=resume, recipe=recipe)
    if result.exit_code != 0:
        raise RunStopped(job.name, result.exit_code, run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    best = max(metrics, key=lambda m: m.get("val_top1", -1))
    row = {
        "family": job.family + ("+pretrained" if job.pretrained else ""),
        "budget_mflops": job.budget,
        "width": job.width,
        "macs": job.macs,
        "params": job.params,
        "seed": job.seed,
        "top1": result.best_top1,
        "top5": best.get("val_top5"),
        "epochs": cfg.epochs,
        "train_seconds": round(sum(m.get("time_s", 0.0) for m in metrics) or time.perf_counter() - t0, 1),
        "img_per_s": round(statistics.mean(m["img_s"] for m in metrics), 1) if metrics else None,
    }
    atomic_write_bytes(done, json.dumps(row, indent=1).encode())
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds, one row per (family, budget)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["budget_mflops"]), []).append(r)
    out = []
    for (fam, budget), rs in groups.items():
        top1 = [r["top1"] for r in rs]
        top5 = [r["top5"] for r in rs if r["top5"] is not None]
        out.append(
            {
                "family": fam,
                "budget_mflops": budget,
                "width": rs[0]["width"],
                "mmacs": round(rs[0]["macs"] / 1e6, 2),
                "params": rs[0]["params"],
                "seeds": len(rs),
                "top1_mean": round(statistics.mean(top1), 2),
                "top1_std": round(statistics.stdev(top1), 2) if len(top1) > 1 else 0.0,
                "top5_mean": round(statistics.mean(top5), 2) if top5 else None,
                "train_seconds": round(sum(r["train_seconds"] for r in rs), 1),
                "img_per_s": rs[0]["img_per_s"],
            }
        )
    return out


def write_reports(summary: list[dict[str, Any]], out: Path, title: str) -> None:
    """results.json, results.csv, results.md (family x budget table) and accuracy_vs_mflops.png."""
    atomic_write_bytes(out / "results.json", json.dumps(summary, indent=1).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(summary[0]))
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    budgets = sorted({r["budget_mflops"] for r in summary})
    fams = list(dict.fromkeys(r["family"] for r in summary))
    cell = {(r["family"], r["budget_mflops"]): r for r in summary}
    lines = [f"# {title}", "", "val top-1 % (mean ± std over seeds; width, MMACs)", ""]
    lines.append("| family | " + " | ".join(f"{b:g} MFLOPs" for b in budgets) + " |")
    lines.append("|---" * (len(budgets) + 1) + "|")
    for f in fams:
        cells = []
        for b in budgets:
            r = cell.get((f, b))
            cells.append(
                f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} (w {r['width']:g}, {r['mmacs']:.1f} M)" if r else "—"
            )
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for f in fams:
        rs = sorted((r for r in summary if r["family"] == f), key=lambda r: r["mmacs"])
        ax.errorbar(
            [r["mmacs"] for r in rs], [r["top1_mean"] for r in rs], yerr=[r["top1_std"] for r in rs],
            marker="o", capsize=3, label=f,
        )  # fmt: skip
    plain_log_axis(ax, "x", [r["mmacs"] for r in summary])  # 12, 20, 50 rather than 1.2x10^1
    ax.set_xlabel("MMACs (multiply-adds)")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_mflops.png", dpi=120)


def compare(
    data: str,
    budgets: list[float],
    families: list[str],
    out: str | Path,
    resolution: int = 224,
    epochs: int = 10,
    seeds: int = 1,
    recipe: str = "auto",
    groups: int = 3,
    pretrained_from: str | None = None,
    overrides: dict[str, Any] | None = None,
    log=print,
) -> list[dict[str, Any]]:
    """Train every (family, budget, seed) and write the reports; returns the summary rows."""
    out = Path(out)
    jobs = plan(budgets, families, resolution, seeds, groups, pretrained_from)
    if recipe == "auto":
        recipe, why = training.choose_recipe(data, (overrides or {}).get("val_split", training.TrainConfig.val_split))
        log(f"[compare] recipe {recipe} (auto: {why})")
    base = {"data": data, "resolution": resolution, "epochs": epochs, **(overrides or {})}
    log(f"[compare] {len(jobs)} runs: {', '.join(j.name for j in jobs)}")
    rows = [_run_one(j, base, recipe, out, groups, log) for j in jobs]
    summary = summarise(rows)
    d = Path(data)
    name = f"{d.parent.name}/{d.name}" if d.name in ("train", "images", "data") else d.name
    title = f"{name}, {resolution} px, {epochs} epochs, {seeds} seed(s), recipe {Path(recipe).stem}"
    write_reports(summary, out, title)
    log(f"[compare] wrote {out}/results.md, results.csv, results.json, accuracy_vs_mflops.png")
    return summary
