"""What a task plugs into ``compare`` (``CompareTask``), and the parts of the report every task shares: the
plan's checks, the default number of seeds, the family x budget table, the verdicts section, the files.

``compare_classification`` and ``compare_detection`` are the two plug-ins; ``compare`` runs either without
asking which one it holds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ParameterError
from .._utils import atomic_write_bytes, plain_log_axis, pyplot, save_figure
from ..models import FAMILIES
from .config import MIN_STEPS_PER_EPOCH, PAPER_BATCH
from .runner import Job, Log
from .verdicts import DETECTIONS, MISSING, MISSING_DETECTIONS

MAX_PLAN_WIDTH = 2.0  # widest multiplier a budget may ask for (ShuffleNet's paper goes to 2x)
MAX_BUDGET = 100_000.0  # MFLOPs: ten times a ResNet-152; beyond it no width is solved in this memory
SMALL_DATA_SEEDS = 3  # default seeds below the paper recipe's threshold: one small-data run decides nothing
SMALL_DATA_IMAGES = PAPER_BATCH * MIN_STEPS_PER_EPOCH  # 25,600, where ``auto_recipe`` switches to ``paper``


@dataclass
class Setup:
    """What a comparison settled before planning: the recipe, seeds, resolution and epochs of every run, and the
    data's size as the task counted it."""

    recipe: str
    seeds: int
    resolution: int
    epochs: int
    n_train: int | None = None
    n_val: int | None = None
    classes: list[str] | None = None


class CompareTask:
    """The task-specific half of ``compare``; ``compare_classification.ClassificationCompare`` documents each part."""

    name = "task"  # the training task (``verdicts`` reads its runs' files by it)
    head = "family"  # what a row of the report is
    unit = "photo"  # what the verdicts resample
    points = "points"  # the unit of a difference, for the log
    first = "fd_mobilenet"  # the row each verdict puts first
    plot_file = "plot.png"

    def check_options(self, data: str, options: dict[str, Any]) -> None:
        """Refuse options that are another task's."""

    def setup(
        self, data: str, val_split: float, recipe: str, seeds: int | None, resolution: int | None,
        epochs: int | None, log: Log,
    ) -> Setup:  # fmt: skip
        raise NotImplementedError

    def plan(
        self, budgets: list[float], families: list[str], setup: Setup, groups: int, pretrained_from: str | None,
        options: dict[str, Any], log: Log,
    ) -> list[Job]:  # fmt: skip
        raise NotImplementedError

    def notes(self, jobs: list[Job], options: dict[str, Any], log: Log) -> dict[str, Any]:
        """What the report says about the runs beyond their scores (and results.json records)."""
        return {}

    def summarise(self, family: str, budget: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """One report row from a (family, budget)'s runs; ``mean``/``sd`` are what the verdicts compare."""
        raise NotImplementedError

    def split(
        self, data: str, val_split: float, setup: Setup, run_dirs: list[Path], found: list[dict[str, Any]]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def title(self, name: str, setup: Setup, options: dict[str, Any]) -> str:
        raise NotImplementedError

    def sections(
        self, summary: list[dict[str, Any]], fams: list[str], budgets: list[float], how: str, notes: dict[str, Any]
    ) -> list[str]:
        """results.md between the split and the verdicts."""
        raise NotImplementedError

    def verdict_intro(self) -> list[str]:
        raise NotImplementedError

    def report_fields(self, notes: dict[str, Any]) -> dict[str, Any]:
        """Fields results.json adds for this task."""
        return {}

    def plot(self, summary: list[dict[str, Any]], fams: list[str], budgets: list[float], path: Path, title: str):
        raise NotImplementedError


def runs_text(setup: Setup) -> str:
    """``10 epochs, 3 seeds``: how long and how often every run of the comparison trained, for its title."""
    epochs = f"{setup.epochs} epoch{'s' if setup.epochs != 1 else ''}"
    return f"{epochs}, {setup.seeds} seed{'s' if setup.seeds > 1 else ''}"


def check_plan(budgets: list[float], families: list[str], seeds: int | None) -> None:
    """Refuse what would plan nothing or nonsense (no runs, a ``nan`` MFLOPs model) before any work starts."""
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ParameterError("seeds", f"`seeds` must be a whole number >= 1 (runs per cell), got {seeds!r}")
    if not budgets:
        raise ParameterError("budgets", "`budgets` is empty; give at least one budget in MFLOPs, e.g. 12,40,140")
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b) or not 0 < b <= MAX_BUDGET:
            raise ParameterError("budgets", f"`budgets` must be finite MFLOPs in (0, {MAX_BUDGET:g}], got {b!r}")
    if not families:
        raise ParameterError("families", f"`families` is empty; choose from {', '.join(FAMILIES)}")
    for f in families:
        if f not in FAMILIES:
            raise ParameterError("families", f"`families`: unknown family {f!r}; choose from {', '.join(FAMILIES)}")


def default_seeds(n_train: int, metric: str = "top-1") -> tuple[int, str]:
    """How many seeds ``compare`` trains when not told, and why (for the log).

    Below the paper recipe's threshold a run is cheap and its score moves with the seed (initialisation, data
    order, held-out split) by about as much as families differ, so three seeds; above it, one.
    """
    if n_train < SMALL_DATA_IMAGES:
        return SMALL_DATA_SEEDS, (
            f"{n_train:,} training images < {SMALL_DATA_IMAGES:,}: on small data one run's {metric} moves with the seed"
        )
    return 1, f"{n_train:,} training images >= {SMALL_DATA_IMAGES:,}: runs are long and vary little with the seed"


def summarise(task: CompareTask, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (family, budget), in first-seen order, as the task summarises its seeds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["budget_mflops"]), []).append(r)
    return [task.summarise(fam, budget, rs) for (fam, budget), rs in groups.items()]


def table(summary, fams, budgets, value, head: str = "family") -> list[str]:
    """A family x budget markdown table; ``value(row)`` is the text of a cell."""
    cell = {(r["family"], r["budget_mflops"]): r for r in summary}
    lines = [f"| {head} | " + " | ".join(f"{b:g} MFLOPs" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for f in fams:
        lines.append(f"| {f} | " + " | ".join(value(cell[(f, b)]) if (f, b) in cell else "—" for b in budgets) + " |")
    return lines


def verdict_lines(task: CompareTask, found: list[dict[str, Any]]) -> list[str]:
    """The "Verdicts" section of results.md."""
    lines = ["", "## Verdicts", ""]
    if not found:
        return [*lines, f"One {task.head} per budget: nothing to compare."]
    lines += [*task.verdict_intro(), "|---|---|---|---|---|---|---|---|"]
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
            f"With 1 seed the interval covers {task.unit} sampling only, not seed-to-seed variation (initialisation, "
            "data order, split): train more seeds before trusting a verdict."
        )
    if any(v["verdict"] == MISSING for v in found):
        notes.append(
            "Some runs have no val_predictions.csv (trained before it was written): their pairs show the difference "
            "of the means only; compare the mean ± sd rows above."
        )
    if any(v["verdict"] == MISSING_DETECTIONS for v in found):
        notes.append(
            f"Some runs have no {DETECTIONS} (their best.safetensors is gone): their pairs show the difference of "
            "the means only; compare the mean ± sd rows above."
        )
    return [*lines, *([""] + notes if notes else [])]


def write_reports(
    task: CompareTask,
    summary: list[dict[str, Any]],
    out: Path,
    title: str,
    split: dict[str, Any] | None = None,
    found: list[dict[str, Any]] | None = None,
    notes: dict[str, Any] | None = None,
) -> None:
    """results.json, results.csv, results.md (the task's sections, the split, the verdicts) and the task's plot."""
    found = found or []
    report = {"title": title, "split": split, "rows": summary, "verdicts": found, **task.report_fields(notes or {})}
    atomic_write_bytes(out / "results.json", json.dumps(report, indent=1).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in summary for k in r)))
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    budgets = sorted({r["budget_mflops"] for r in summary})
    fams = list(dict.fromkeys(r["family"] for r in summary))
    lines = [f"# {title}", ""]
    if split:
        photos = f", {split['photos']:,} validation photos" if split.get("photos") and task.unit == "photo" else ""
        lines += [f"Split: {split['text']}{photos}.", ""]
    n_seeds = sorted({r["seeds"] for r in summary})
    how = "one seed" if n_seeds == [1] else f"mean ± sample sd over {'/'.join(map(str, n_seeds))} seeds"
    lines += task.sections(summary, fams, budgets, how, notes or {})
    lines += verdict_lines(task, found)
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    task.plot(summary, fams, budgets, out / task.plot_file, title)


def plot_scores(
    summary: list[dict[str, Any]], fams: list[str], budgets: list[float], path: Path, title: str, x: str, y: str,
    y_sd: str, xlabel: str, ylabel: str,
) -> None:  # fmt: skip
    """The score against MMACs; families side by side (offsets, markers, line styles) so equal lines stay visible."""
    plt = pyplot()
    if plt is None:
        return
    markers, styles = "osD^vP*X", ("-", "--", "-.", ":")
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, f in enumerate(fams):
        rs = sorted((r for r in summary if r["family"] == f), key=lambda r: r[x])
        shift = 1 + 0.025 * (k - (len(fams) - 1) / 2)  # a few % apart on the log axis
        ax.errorbar(
            [r[x] * shift for r in rs], [r[y] for r in rs], yerr=[r[y_sd] or 0 for r in rs],
            marker=markers[k % len(markers)], linestyle=styles[k % len(styles)], capsize=3, label=f,
        )  # fmt: skip
    plain_log_axis(ax, "x", [r[x] for r in summary])  # 12, 20, 50 rather than 1.2x10^1
    ax.set_xticks(budgets)  # at the budgets the points were trained for (each within 3 % of its point)
    ax.tick_params(axis="x", which="minor", bottom=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 72)), fontsize=9)  # a detector comparison's title is long
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
