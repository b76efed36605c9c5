"""``fdmobilenet compare``: the paper's experiment on your data, in one command.

Every (family, budget) pair gets the width whose multiply-adds meet the budget at the chosen
resolution, then trains with the same recipe and seeds; the val accuracy (mean ± sd over seeds) is
reported against MFLOPs, with a paired-bootstrap verdict on each pair of families per budget
(``verdicts``). Settings given as ``overrides`` (a ``teacher`` to distil from, the input pipeline, ...)
apply to every run alike. Finished runs are kept (``done.json`` in their folder) and skipped on a re-run; an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
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
from ..data.splits import load_folders, read_split
from ..models import FAMILIES, RELEASED_WIDTHS, create_model, family_kwargs, solve_width
from .config import MIN_STEPS_PER_EPOCH, PAPER_BATCH, TrainConfig, auto_recipe
from .outputs import read_metrics
from .verdicts import MISSING, describe_split, format_mean_sd, mean_sd, verdicts

SMALL_DATA_SEEDS = 3  # default seeds below the paper recipe's threshold: one small-data run decides nothing
SMALL_DATA_IMAGES = PAPER_BATCH * MIN_STEPS_PER_EPOCH  # 25,600, where ``auto_recipe`` switches to ``paper``


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
    check_plan(budgets, families, seeds)
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


def check_plan(budgets: list[float], families: list[str], seeds: int | None) -> None:
    """Refuse what would plan nothing or nonsense (no runs, a ``nan`` MFLOPs model) before any work starts."""
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ParameterError("seeds", f"`seeds` must be a whole number >= 1 (runs per cell), got {seeds!r}")
    if not budgets:
        raise ParameterError("budgets", "`budgets` is empty; give at least one budget in MFLOPs, e.g. 12,40,140")
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b) or b <= 0:
            raise ParameterError("budgets", f"`budgets` must be finite numbers of MFLOPs > 0, got {b!r}")
    if not families:
        raise ParameterError("families", f"`families` is empty; choose from {', '.join(FAMILIES)}")
    for f in families:
        if f not in FAMILIES:
            raise ParameterError("families", f"`families`: unknown family {f!r}; choose from {', '.join(FAMILIES)}")


def count_images(data: str, val_split: float) -> tuple[int, int]:
    """Training and validation images of ``data`` (the seed-0 split ``train`` makes), counted without decoding."""
    split = load_folders(data, val_split, 0)
    return len(split.train), len(split.val)


def default_seeds(n_train: int) -> tuple[int, str]:
    """How many seeds ``compare`` trains when not told, and why (for the log).

    Below the paper recipe's threshold a run is cheap and its top-1 moves with the seed (initialisation,
    data order, held-out split) by about as much as families differ, so three seeds; above it, one.
    """
    if n_train < SMALL_DATA_IMAGES:
        return SMALL_DATA_SEEDS, (
            f"{n_train:,} training images < {SMALL_DATA_IMAGES:,}: on small data one run's top-1 moves with the seed"
        )
    return 1, f"{n_train:,} training images >= {SMALL_DATA_IMAGES:,}: runs are long and vary little with the seed"


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


def _same_settings(run_dir: Path, overrides: dict[str, Any]) -> None:
    """A run kept from an earlier compare must have been trained with the settings asked for now: a
    ``teacher`` (or epochs, lr, ...) added to the same ``out`` would otherwise report the old runs."""
    saved_file = run_dir / "config.json"
    if not saved_file.is_file():
        return
    try:
        saved = json.loads(saved_file.read_text())
    except (ValueError, UnicodeDecodeError):
        return  # a damaged config is reported by the training run that reads it
    asked = json.loads(json.dumps({k: v for k, v in overrides.items() if v is not None}))
    differ = [k for k, v in asked.items() if isinstance(saved, dict) and k in saved and saved[k] != v]
    if differ:
        k = differ[0]
        raise ParameterError(
            "out",
            f"{run_dir} was trained with `{k}` {saved[k]!r}, not {asked[k]!r}; compare into another `out` "
            "(its runs are kept as they are)",
        )


def _run_one(job: Job, overrides: dict[str, Any], recipe: str, out: Path, groups: int, log) -> dict[str, Any]:
    run_dir = out / "runs" / job.name
    done = run_dir / "done.json"
    _same_settings(run_dir, overrides)
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
    """Mean and sample standard deviation (n - 1) over seeds, one row per (family, budget); no sd for one seed."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["budget_mflops"]), []).append(r)
    out = []
    for (fam, budget), rs in groups.items():
        mean, sd = mean_sd([r["top1"] for r in rs])
        top5 = [r["top5"] for r in rs if r["top5"] is not None]
        out.append(
            {
                "family": fam,
                "budget_mflops": budget,
                "width": rs[0]["width"],
                "mmacs": round(rs[0]["macs"] / 1e6, 2),
                "params": rs[0]["params"],
                "seeds": len(rs),
                "top1_mean": round(mean, 2),
                "top1_std": None if sd is None else round(sd, 2),
                "top5_mean": round(statistics.mean(top5), 2) if top5 else None,
                "train_seconds": round(sum(r["train_seconds"] for r in rs), 1),
                "img_per_s": rs[0]["img_per_s"],
                "mean": round(mean, 3),
                "sd": None if sd is None else round(sd, 3),
            }
        )
    return out


def _verdict_lines(found: list[dict[str, Any]]) -> list[str]:
    """The "Verdicts" section of results.md."""
    lines = ["", "## Verdicts", ""]
    if not found:
        return [*lines, "One family per budget: nothing to compare."]
    lines += [
        "Difference in val top-1 (points, A − B) with a 95 % interval from a paired bootstrap over the validation "
        "photos and the seeds (2,000 resamples, the same photos for both families); a family is *ahead* when the "
        "interval excludes 0.",
        "",
        "| budget | A | B | A − B | 95 % interval | verdict | photos | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in found:
        diff = "—" if v["diff"] is None else f"{v['diff']:+.2f}"
        interval = "—" if v["lo"] is None else f"[{v['lo']:+.2f}, {v['hi']:+.2f}]"
        photos = "—" if v["photos"] is None else f"{v['photos']:,}"
        lines.append(
            f"| {v['budget']:g} MFLOPs | {v['a']} | {v['b']} | {diff} | {interval} | {v['verdict']} | {photos} "
            f"| {v['seeds']} |"
        )
    notes = []
    if any(v["covers"] == "photos" for v in found):
        notes.append(
            "With 1 seed the interval covers photo sampling only, not seed-to-seed variation (initialisation, data "
            "order, split): train more seeds before trusting a verdict."
        )
    if any(v["verdict"] == MISSING for v in found):
        notes.append(
            "Some runs have no val_predictions.csv (trained before it was written): their pairs show the difference "
            "of the means only; compare the mean ± sd rows above."
        )
    return [*lines, *([""] + notes if notes else [])]


def write_reports(
    summary: list[dict[str, Any]],
    out: Path,
    title: str,
    split: dict[str, Any] | None = None,
    found: list[dict[str, Any]] | None = None,
) -> None:
    """results.json, results.csv, results.md (family x budget table, split, verdicts) and accuracy_vs_mflops.png."""
    found = found or []
    report = {"title": title, "split": split, "rows": summary, "verdicts": found}
    atomic_write_bytes(out / "results.json", json.dumps(report, indent=1).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(summary[0]))
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    budgets = sorted({r["budget_mflops"] for r in summary})
    fams = list(dict.fromkeys(r["family"] for r in summary))
    cell = {(r["family"], r["budget_mflops"]): r for r in summary}
    lines = [f"# {title}", ""]
    if split:
        photos = f", {split['photos']:,} validation photos" if split.get("photos") else ""
        lines += [f"Split: {split['text']}{photos}.", ""]
    n_seeds = sorted({r["seeds"] for r in summary})
    how = "one seed" if n_seeds == [1] else f"mean ± sample sd over {'/'.join(map(str, n_seeds))} seeds"
    lines += [f"val top-1 % ({how}; width, MMACs)", ""]
    lines.append("| family | " + " | ".join(f"{b:g} MFLOPs" for b in budgets) + " |")
    lines.append("|---" * (len(budgets) + 1) + "|")
    for f in fams:
        cells = []
        for b in budgets:
            r = cell.get((f, b))
            value = format_mean_sd(r["top1_mean"], r["top1_std"], r["seeds"]) if r else ""
            cells.append(f"{value} (w {r['width']:g}, {r['mmacs']:.1f} M)" if r else "—")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    lines += _verdict_lines(found)
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    _plot(summary, fams, budgets, out, title)


def _plot(summary: list[dict[str, Any]], fams: list[str], budgets: list[float], out: Path, title: str) -> None:
    """Accuracy against MMACs; families side by side (offsets, markers, line styles) so equal lines stay visible."""
    plt = pyplot()
    if plt is None:
        return
    markers, styles = "osD^vP*X", ("-", "--", "-.", ":")
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, f in enumerate(fams):
        rs = sorted((r for r in summary if r["family"] == f), key=lambda r: r["mmacs"])
        shift = 1 + 0.025 * (k - (len(fams) - 1) / 2)  # a few % apart on the log axis
        ax.errorbar(
            [r["mmacs"] * shift for r in rs], [r["top1_mean"] for r in rs], yerr=[r["top1_std"] or 0 for r in rs],
            marker=markers[k % len(markers)], linestyle=styles[k % len(styles)], capsize=3, label=f,
        )  # fmt: skip
    plain_log_axis(ax, "x", [r["mmacs"] for r in summary])  # 12, 20, 50 rather than 1.2x10^1
    ax.set_xticks(budgets)  # at the budgets the points were trained for (each within 3 % of its point)
    ax.tick_params(axis="x", which="minor", bottom=False)
    ax.set_xlabel("MFLOPs budget (multiply-adds; families offset slightly)")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_mflops.png", dpi=120)


def _split_report(
    run_dirs: list[Path], data: str, n_val: int | None, val_split: float, found: list[dict[str, Any]]
) -> dict[str, Any]:
    """The split the runs measured on, with its number of validation photos."""
    split = describe_split([read_split(d / "split.json") for d in run_dirs], data, n_val)
    if split["photos"] is None:
        split["photos"] = next((v["photos"] for v in found if v["photos"]), None) or count_images(data, val_split)[1]
    return split


def compare(
    data: str,
    budgets: list[float],
    families: list[str],
    out: str | Path,
    resolution: int = 224,
    epochs: int = 10,
    seeds: int | None = None,
    recipe: str = "auto",
    groups: int = 3,
    pretrained_from: str | None = None,
    overrides: dict[str, Any] | None = None,
    log=print,
) -> list[dict[str, Any]]:
    """Train every (family, budget, seed) and write the reports; returns the summary rows.

    ``seeds`` None: 3 on small data (below the paper recipe's 25,600 training images), else 1 (the log says why).
    """
    out = Path(out)
    check_plan(budgets, families, seeds)  # before the images are counted
    val_split = (overrides or {}).get("val_split", TrainConfig.val_split)
    n_val = None
    if recipe == "auto" or seeds is None:
        n_train, n_val = count_images(data, val_split)
        if recipe == "auto":
            recipe, why = auto_recipe(n_train)
            log(f"[compare] recipe {recipe} (auto: {why})")
        if seeds is None:
            seeds, why = default_seeds(n_train)
            log(f"[compare] {seeds} seed{'s' if seeds > 1 else ''} per family and budget (default: {why})")
    jobs = plan(budgets, families, resolution, seeds, groups, pretrained_from)
    base = {"data": data, "resolution": resolution, "epochs": epochs, **(overrides or {})}
    log(f"[compare] {len(jobs)} runs: {', '.join(j.name for j in jobs)}")
    rows = [_run_one(j, base, recipe, out, groups, log) for j in jobs]
    summary = summarise(rows)
    runs: dict[tuple[str, float], dict[int, Path]] = {}
    for job, row in zip(jobs, rows, strict=True):
        runs.setdefault((row["family"], job.budget), {})[job.seed] = out / "runs" / job.name
    found = verdicts(runs)
    means = {(r["family"], r["budget_mflops"]): r["mean"] for r in summary}
    for v in found:
        if v["diff"] is None and v["verdict"] == MISSING:  # the difference of the means, without an interval
            v["diff"] = round(means[(v["a"], v["budget"])] - means[(v["b"], v["budget"])], 2)
    split = _split_report([out / "runs" / j.name for j in jobs], data, n_val, val_split, found)
    d = Path(data)
    name = f"{d.parent.name}/{d.name}" if d.name in ("train", "images", "data") else d.name
    seeds_text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    epochs_text = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    title = f"{name}, {resolution} px, {epochs_text}, {seeds_text}, recipe {Path(recipe).stem}"
    write_reports(summary, out, title, split, found)
    log(f"[compare] wrote {out}/results.md, results.csv, results.json, accuracy_vs_mflops.png")
    for v in found:
        interval = f" [{v['lo']:+.2f}, {v['hi']:+.2f}]" if v["lo"] is not None else ""
        diff = f"{v['diff']:+.2f} points{interval}: " if v["diff"] is not None else ""
        log(f"[compare] {v['budget']:g} MFLOPs, {v['a']} vs {v['b']}: {diff}{v['verdict']}")
    return summary
