"""``compare`` on class folders: every (family, budget) at the width whose multiply-adds meet the budget at the
chosen resolution, the same recipe and seeds for all, val top-1 (mean ± sd) against MFLOPs, and paired-bootstrap
verdicts over the validation photos (``verdicts``)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .._errors import ParameterError
from ..complexity import profile
from ..data.splits import load_folders, read_split
from ..models import RELEASED_WIDTHS, create_model, family_kwargs, solve_width
from .choose import choose_recipe
from .compare_report import MAX_PLAN_WIDTH, CompareTask, Setup, check_plan, default_seeds, plot_scores, runs_text, table
from .runner import Job, Log
from .verdicts import describe_split, format_mean_sd, mean_sd

DEFAULT_RESOLUTION, DEFAULT_EPOCHS = 224, 10


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
            if w > MAX_PLAN_WIDTH:  # e.g. 140 MFLOPs at 64 px: width 3.55, no such network was ever trained
                raise ParameterError(
                    "budgets",
                    f"`budgets` {budget:g} MFLOPs at {resolution} px needs {fam} at width {w:g} (over "
                    f"{MAX_PLAN_WIDTH:g}, beyond any published width); lower `budgets` or raise `resolution`",
                )
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


def count_images(data: str, val_split: float) -> tuple[int, int]:
    """Training and validation images of ``data`` (the seed-0 split ``train`` makes), counted without decoding."""
    split = load_folders(data, val_split, 0)
    return len(split.train), len(split.val)


class ClassificationCompare(CompareTask):
    """Families of classifiers on class folders, scored by val top-1."""

    name = "classification"
    head = "family"
    unit = "photo"
    points = "points"
    first = "fd_mobilenet"
    plot_file = "accuracy_vs_mflops.png"

    def check_options(self, data: str, options: dict[str, Any]) -> None:
        """``backbones`` and ``extra_rows`` are detector rows: refused on class folders."""
        which = "backbones" if options.get("backbones") is not None else "extra_rows"
        if options.get("backbones") is not None or options.get("extra_rows"):
            raise ParameterError(
                which, f"`{which}` is for detection data (a VOC folder or COCO json); {data} has no boxes"
            )

    def setup(
        self, data: str, val_split: float, recipe: str, seeds: int | None, resolution: int | None,
        epochs: int | None, log: Log,
    ) -> Setup:  # fmt: skip
        """224 px and 10 epochs unless given; the images are counted only when the recipe or seeds need it."""
        n_train = n_val = None
        if recipe == "auto" or seeds is None:
            n_train, n_val = count_images(data, val_split)
            if recipe == "auto":
                recipe, why = choose_recipe(data, val_split, task=self.name, n_train=n_train)
                log(f"[compare] recipe {recipe} (auto: {why})")
            if seeds is None:
                seeds, why = default_seeds(n_train)
                log(f"[compare] {seeds} seed{'s' if seeds > 1 else ''} per family and budget (default: {why})")
        assert seeds is not None
        return Setup(recipe, seeds, resolution or DEFAULT_RESOLUTION, epochs or DEFAULT_EPOCHS, n_train, n_val)

    def plan(
        self, budgets: list[float], families: list[str], setup: Setup, groups: int, pretrained_from: str | None,
        options: dict[str, Any], log: Log,
    ) -> list[Job]:  # fmt: skip
        return plan(budgets, families, setup.resolution, setup.seeds, groups, pretrained_from)

    def summarise(self, family: str, budget: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Mean and sample sd (n - 1) of top-1 over seeds (no sd for one seed), top-5's mean, cost and time."""
        mean, sd = mean_sd([r["top1"] for r in rows])
        top5 = [r["top5"] for r in rows if r["top5"] is not None]
        return {
            "family": family,
            "budget_mflops": budget,
            "width": rows[0]["width"],
            "mmacs": round(rows[0]["macs"] / 1e6, 2),
            "params": rows[0]["params"],
            "seeds": len(rows),
            "top1_mean": round(mean, 2),
            "top1_std": None if sd is None else round(sd, 2),
            "top5_mean": round(statistics.mean(top5), 2) if top5 else None,
            "train_seconds": round(sum(r["train_seconds"] for r in rows), 1),
            "img_per_s": rows[0]["img_per_s"],
            "mean": round(mean, 3),
            "sd": None if sd is None else round(sd, 3),
        }

    def split(
        self, data: str, val_split: float, setup: Setup, run_dirs: list[Path], found: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The split the runs measured on, with its number of validation photos."""
        split = describe_split([read_split(d / "split.json") for d in run_dirs], data, setup.n_val)
        if split["photos"] is None:
            counted = next((v["photos"] for v in found if v["photos"]), None)
            split["photos"] = counted or count_images(data, val_split)[1]
        return split

    def title(self, name: str, setup: Setup, options: dict[str, Any]) -> str:
        return f"{name}, {setup.resolution} px, {runs_text(setup)}, recipe {Path(setup.recipe).stem}"

    def sections(
        self, summary: list[dict[str, Any]], fams: list[str], budgets: list[float], how: str, notes: dict[str, Any]
    ) -> list[str]:
        def top1(r: dict[str, Any]) -> str:
            return f"{format_mean_sd(r['top1_mean'], r['top1_std'], r['seeds'])} (w {r['width']:g}, {r['mmacs']:.1f} M)"

        return [f"val top-1 % ({how}; width, MMACs)", "", *table(summary, fams, budgets, top1)]

    def verdict_intro(self) -> list[str]:
        return [
            "Difference in val top-1 (points, A − B) with a 95 % interval from a paired bootstrap over the "
            "validation photos and the seeds (2,000 resamples, the same photos for both families); a family is "
            "*ahead* when the interval excludes 0.",
            "",
            "| budget | A | B | A − B | 95 % interval | verdict | photos | seeds |",
        ]

    def plot(self, summary: list[dict[str, Any]], fams: list[str], budgets: list[float], path: Path, title: str):
        plot_scores(summary, fams, budgets, path, title, "mmacs", "top1_mean", "top1_std",
                    "MFLOPs budget (multiply-adds; families offset slightly)", "val top-1 (%)")  # fmt: skip
