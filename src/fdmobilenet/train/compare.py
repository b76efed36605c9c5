"""``fdmobilenet compare``: the paper's experiment on your data, in one command.

Every (family, budget) pair gets the width whose multiply-adds meet the budget at the chosen
resolution, then trains with the same recipe and seeds; the val accuracy (mean ± sd over seeds) is
reported against MFLOPs, with a paired-bootstrap verdict on each pair of families per budget
(``verdicts``). Settings given as ``overrides`` (a ``teacher`` to distil from, the input pipeline, ...)
apply to every run alike. Finished runs are kept (``done.json`` in their folder) and skipped on a re-run; an
interrupted run resumes from its last checkpoint.

Detection data (a VOC folder or COCO json) compares SSDLite detectors instead: budgets are backbone
MFLOPs at 224 px, the backbones come pretrained from ``backbones`` (or from scratch, said loudly), and the
report gives VOC mAP@0.5 (all-point and 11-point); see ``compare_detection``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import statistics
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import train as training
from .._errors import ParameterError, StoppedError
from .._utils import atomic_write_bytes, plain_log_axis, pyplot, save_figure, torch_threads
from ..complexity import profile
from ..data.splits import load_folders, read_split
from ..models import FAMILIES, RELEASED_WIDTHS, create_model, family_kwargs, solve_width
from . import compare_detection as det
from .config import MIN_STEPS_PER_EPOCH, PAPER_BATCH, TrainConfig, auto_recipe, make_config
from .outputs import read_metrics
from .verdicts import DETECTIONS, MISSING, MISSING_DETECTIONS, describe_split, format_mean_sd, mean_sd, verdicts

MAX_PLAN_WIDTH = 2.0  # widest multiplier a budget may ask for (ShuffleNet's paper goes to 2x)
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
    pretrained: str | None = None  # a classifier's weights to fine-tune, or a detector's backbone weights
    # detectors only: the model (ssdlite_<family>), the row's name, the backbone's MACs at 224 px (what the
    # budget counts), the detector's MACs by part at its resolution (``macs`` is their total) and the
    # backbone file's record (``compare_detection.Backbone.info``)
    model: str | None = None
    label: str | None = None
    backbone_macs: int | None = None
    parts: dict[str, int] | None = None
    groups: int | None = None
    backbone_info: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        if self.model is not None:
            tag = "" if self.pretrained else "-scratch"
            return f"{self.label}{tag}-{self.budget:g}M-w{self.width:g}-seed{self.seed}"
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


def plan_detection(
    budgets: list[float],
    families: list[str],
    seeds: int,
    num_classes: int,
    resolution: int = 320,
    groups: int = 3,
    backbones: str | Path | None = None,
    extra_rows: dict[str, str] | None = None,
    pretrained_from: str | Path | None = None,
) -> list[Job]:
    """The detector runs: ``ssdlite_<family>`` per family, budget and seed, the backbone's width solved for the
    budget at 224 px (the paper's convention) and the detector trained at ``resolution``; each backbone from
    ``backbones`` (checked to have that width) or from scratch. ``extra_rows`` ({name: classification weights})
    and ``pretrained_from`` (the authors' converted weights, where FD-MobileNet widths match) add rows whose
    backbones start from the given files, at the budget they cost."""
    from ..models.detection import macs_by_part  # here: torchvision loads only for detectors

    check_plan(budgets, families, seeds)
    extra_rows = det.parse_extra_rows(extra_rows)
    cells = []
    for budget in budgets:
        for fam in families:
            extra = family_kwargs(fam, groups)
            w = solve_width(fam, budget, resolution=det.BACKBONE_RESOLUTION, **extra)
            cells.append((fam, budget, w, extra.get("groups")))
    found = det.find_backbones(backbones, cells) if backbones is not None else {}
    rows: list[tuple[str, str, float, float, int | None, det.Backbone | None]] = []  # label, family, budget, ...
    for fam, budget, w, g in cells:
        rows.append((f"ssdlite_{fam}", fam, budget, w, g, found.get((fam, budget))))
    if pretrained_from is not None:
        for fam, budget, w, _ in cells:
            match = next((n for n, ow in RELEASED_WIDTHS.items() if abs(ow - w) < 0.02), None)
            if fam == "fd_mobilenet" and match:
                src = Path(pretrained_from) / f"{match}.safetensors"
                if not src.is_file():
                    raise ParameterError(
                        "pretrained_from",
                        f"`pretrained_from`: {src} not found; convert the authors' weights with `fdmobilenet convert` "
                        "into that folder",
                    )
                bb = det.read_backbone(src, "pretrained_from")
                rows.append((f"ssdlite_{fam}+authors", fam, budget, bb.width, None, bb))
    for name, file in extra_rows.items():
        budget, bb, _ = det.place_extra_row(name, file, budgets)
        rows.append((f"ssdlite_{bb.family}+{name}", bb.family, budget, bb.width, bb.groups, bb))
    jobs = []
    seen = set()
    for label, _, budget, *_ in rows:
        if (label, budget) in seen:
            raise ParameterError("extra_rows", f"`extra_rows`: two rows named {label} at {budget:g} MFLOPs; rename one")
        seen.add((label, budget))
    for label, fam, budget, w, g, bb in rows:
        kw = {"groups": g} if g is not None else {}
        model = f"ssdlite_{fam}"
        if bb is not None:
            det.check_loads(model, bb, num_classes, resolution, "extra_rows" if "+" in label else "backbones")
        bb_macs, _ = det.backbone_macs(fam, w, g)
        with torch.device("meta"):  # shapes only
            p = profile(create_model(model, num_classes=num_classes, resolution=resolution, width=w, **kw), resolution)
        parts = macs_by_part(p)
        for seed in range(seeds):
            jobs.append(
                Job(
                    fam, budget, w, seed, p.macs, p.params, None if bb is None else str(Path(bb.path).resolve()),
                    model, label, bb_macs, parts, g, None if bb is None else bb.info,
                )
            )  # fmt: skip
    return jobs


MAX_BUDGET = 100_000.0  # MFLOPs: ten times a ResNet-152; beyond it no width is solved in this memory


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


def count_images(data: str, val_split: float) -> tuple[int, int]:
    """Training and validation images of ``data`` (the seed-0 split ``train`` makes), counted without decoding."""
    split = load_folders(data, val_split, 0)
    return len(split.train), len(split.val)


def default_seeds(n_train: int, metric: str = "top-1") -> tuple[int, str]:
    """How many seeds ``compare`` trains when not told, and why (for the log).

    Below the paper recipe's threshold a run is cheap and its top-1 (a detector's mAP) moves with the seed
    (initialisation, data order, held-out split) by about as much as families differ, so three seeds; above
    it, one.
    """
    if n_train < SMALL_DATA_IMAGES:
        return SMALL_DATA_SEEDS, (
            f"{n_train:,} training images < {SMALL_DATA_IMAGES:,}: on small data one run's {metric} moves with the seed"
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
    ``teacher`` (or epochs, lr, backbone weights, ...) added to the same ``out`` would otherwise report the old runs."""
    saved_file = run_dir / "config.json"
    if not saved_file.is_file():
        return
    try:
        saved = json.loads(saved_file.read_text())
    except (ValueError, UnicodeDecodeError):
        return  # a damaged config is reported by the training run that reads it
    ignored = ("out", "threads", "device")  # where a run goes and what it runs on: not what it learns
    asked = json.loads(json.dumps({k: v for k, v in overrides.items() if v is not None and k not in ignored}))
    differ = [k for k, v in asked.items() if isinstance(saved, dict) and k in saved and saved[k] != v]
    if differ:
        k = differ[0]
        raise ParameterError(
            "out",
            f"{run_dir} was trained with `{k}` {saved[k]!r}, not {asked[k]!r}; compare into another `out` "
            "(its runs are kept as they are)",
        )


def _job_overrides(job: Job, overrides: dict[str, Any], recipe_cfg: dict[str, Any], run_dir: Path, groups: int):
    """The settings of one run: everyone's ``overrides`` plus its model, width, seed and weights."""
    cfg_overrides = {**overrides, "out": str(run_dir), "seed": job.seed}
    if job.model is not None:  # a detector: backbone width at 224 px, trained at its own resolution
        cfg_overrides.update(model=job.model, width=job.width, pretrained=job.pretrained)
        if job.groups is not None:
            cfg_overrides["groups"] = job.groups
    elif job.pretrained:
        cfg_overrides["model"] = next(n for n, w in RELEASED_WIDTHS.items() if w == job.width)
        cfg_overrides["pretrained"] = job.pretrained
        cfg_overrides.setdefault("lr", training.finetune_lr(recipe_cfg))
    else:
        cfg_overrides.update(model=job.family, width=job.width, **family_kwargs(job.family, groups))
    return cfg_overrides


def _run_one(job: Job, overrides: dict[str, Any], recipe: str, out: Path, groups: int, log) -> dict[str, Any]:
    run_dir = out / "runs" / job.name
    done = run_dir / "done.json"
    recipe_cfg = training.load_recipe(recipe)
    cfg_overrides = _job_overrides(job, overrides, recipe_cfg, run_dir, groups)
    _same_settings(run_dir, cfg_overrides)
    if done.is_file():
        log(f"[compare] {job.name}: done before, kept")
        row = json.loads(done.read_text())
        if job.model is not None and not (run_dir / DETECTIONS).is_file() and (run_dir / "best.safetensors").is_file():
            _score_images(job, run_dir, overrides, row, log)
            atomic_write_bytes(done, json.dumps(row, indent=1).encode())
        return row
    cfg = training.make_config(cfg_overrides, training.make_config(recipe_cfg))
    resume = (run_dir / "config.json").is_file()
    cost = f"{job.macs / 1e6:.1f} MMACs"
    if job.model is not None:
        cost = (
            f"backbone {job.backbone_macs / 1e6:.1f} MMACs at 224 px, detector {job.macs / 1e6:.1f} at {cfg.resolution}"
        )
        cost += f" px; backbone {'from ' + job.pretrained if job.pretrained else 'FROM SCRATCH'}"
    log(f"[compare] {job.name}: {'resuming' if resume else 'training'} ({cost})")
    t0 = time.perf_counter()
    result = training.train(cfg, resume=resume, recipe=recipe)
    if result.exit_code != 0:
        raise RunStopped(job.name, result.exit_code, run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    common = {
        "epochs": cfg.epochs,
        "train_seconds": round(sum(m.get("time_s", 0.0) for m in metrics) or time.perf_counter() - t0, 1),
        "img_per_s": round(statistics.mean(m["img_s"] for m in metrics), 1) if metrics else None,
    }
    if job.model is not None:
        best = max(metrics, key=lambda m: m.get("val_map50", -1))
        row = {
            "family": job.label, "budget_mflops": job.budget, "width": job.width, "backbone_macs": job.backbone_macs,
            "macs": job.macs, "macs_by_part": job.parts, "params": job.params, "resolution": cfg.resolution,
            "seed": job.seed, "map50": result.best_top1, "map50_07": best.get("val_map50_07"),
            "backbone": job.pretrained, "backbone_info": job.backbone_info, **common,
        }  # fmt: skip
        _score_images(job, run_dir, overrides, row, log)
    else:
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
            **common,
        }
    atomic_write_bytes(done, json.dumps(row, indent=1).encode())
    return row


def _score_images(job: Job, run_dir: Path, overrides: dict[str, Any], row: dict[str, Any], log) -> None:
    """``val_detections.npz`` of a finished detector run (the per-image outcomes the verdicts resample)."""
    val_split = overrides.get("val_split", TrainConfig.val_split)
    device = overrides.get("device")
    with torch_threads(overrides.get("threads")):
        got = det.write_val_detections(
            run_dir, overrides["data"], val_split, job.seed, None if device == "auto" else device
        )
    row["eval_map50"] = round(got, 4)
    if row.get("map50") is not None and abs(got - row["map50"]) > 0.05:
        log(
            f"[compare] warning: {job.name}: best.safetensors re-scored image by image gives mAP@0.5 {got:.2f}, "
            f"training logged {row['map50']:.2f}; the verdicts use the re-scored detections"
        )


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (n - 1) over seeds, one row per (family, budget); no sd for one seed."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["budget_mflops"]), []).append(r)
    out = []
    for (fam, budget), rs in groups.items():
        if "map50" in rs[0]:
            out.append(_summarise_detector(fam, budget, rs))
            continue
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


def _summarise_detector(label: str, budget: float, rs: list[dict[str, Any]]) -> dict[str, Any]:
    """A detector's row: mAP@0.5 all-point (``mean``/``sd``, what the verdicts compare) and 11-point, and its cost:
    the backbone's MMACs at 224 px (the budget's) and the detector's at its resolution, by part."""
    mean, sd = mean_sd([r["map50"] for r in rs])
    m07 = [r["map50_07"] for r in rs if r.get("map50_07") is not None]
    mean07, sd07 = mean_sd(m07) if m07 else (None, None)
    parts = rs[0].get("macs_by_part") or {}
    return {
        "family": label,
        "budget_mflops": budget,
        "width": rs[0]["width"],
        "backbone_mmacs_224": round(rs[0]["backbone_macs"] / 1e6, 2),
        "resolution": rs[0]["resolution"],
        "detector_mmacs": round(rs[0]["macs"] / 1e6, 2),
        **{f"detector_{k}_mmacs": round(parts[k] / 1e6, 2) for k in ("backbone", "extras", "head") if k in parts},
        "params": rs[0]["params"],
        "seeds": len(rs),
        "map50_mean": round(mean, 2),
        "map50_std": None if sd is None else round(sd, 2),
        "map50_07_mean": None if mean07 is None else round(mean07, 2),
        "map50_07_std": None if sd07 is None else round(sd07, 2),
        "backbone_weights": rs[0].get("backbone") or "scratch",
        "train_seconds": round(sum(r["train_seconds"] for r in rs), 1),
        "img_per_s": rs[0]["img_per_s"],
        "mean": round(mean, 3),
        "sd": None if sd is None else round(sd, 3),
    }


def _verdict_lines(found: list[dict[str, Any]], detection: bool = False) -> list[str]:
    """The "Verdicts" section of results.md."""
    lines = ["", "## Verdicts", ""]
    if not found:
        return [*lines, f"One {'detector' if detection else 'family'} per budget: nothing to compare."]
    if detection:
        lines += [
            "Difference in val mAP@0.5 (all-point, points, A − B) with a 95 % interval from a paired bootstrap over "
            "the validation images and the seeds (2,000 resamples, the same images for both detectors, mAP recomputed "
            "from every detection on each resample); a detector is *ahead* when the interval excludes 0.",
            "",
            "| budget | A | B | A − B | 95 % interval | verdict | images | seeds |",
        ]
    else:
        lines += [
            "Difference in val top-1 (points, A − B) with a 95 % interval from a paired bootstrap over the "
            "validation photos and the seeds (2,000 resamples, the same photos for both families); a family is "
            "*ahead* when the interval excludes 0.",
            "",
            "| budget | A | B | A − B | 95 % interval | verdict | photos | seeds |",
        ]
    lines.append("|---|---|---|---|---|---|---|---|")
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
        what = "image" if detection else "photo"
        notes.append(
            f"With 1 seed the interval covers {what} sampling only, not seed-to-seed variation (initialisation, data "
            "order, split): train more seeds before trusting a verdict."
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


def _table(summary, fams, budgets, value) -> list[str]:
    """A family x budget markdown table; ``value(row)`` is the text of a cell."""
    cell = {(r["family"], r["budget_mflops"]): r for r in summary}
    head = "detector" if "map50_mean" in summary[0] else "family"
    lines = [f"| {head} | " + " | ".join(f"{b:g} MFLOPs" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for f in fams:
        lines.append(f"| {f} | " + " | ".join(value(cell[(f, b)]) if (f, b) in cell else "—" for b in budgets) + " |")
    return lines


def _detector_sections(summary: list[dict[str, Any]], fams, budgets, how: str, notes: dict[str, Any]) -> list[str]:
    """results.md for detectors: what the budgets mean, where the backbones come from, both mAPs, the cost."""
    res = sorted({r["resolution"] for r in summary})
    res_text = "/".join(map(str, res))
    lines = [
        f"Detectors: SSDLite on each family's backbone (`ssdlite_<family>`). Budgets are **backbone MFLOPs at "
        f"{det.BACKBONE_RESOLUTION} px** (the paper's convention: the width whose classifier costs the budget at "
        f"{det.BACKBONE_RESOLUTION} px); the detectors run at {res_text} px, their own MMACs are under "
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
    lines += _table(
        summary, fams, budgets, lambda r: f"{format_mean_sd(r['map50_mean'], r['map50_std'], r['seeds'])} {cost(r)}"
    )
    lines += ["", f"val mAP@0.5, 11-point (VOC2007), % ({how})", ""]

    def m07(r: dict[str, Any]) -> str:
        return "—" if r["map50_07_mean"] is None else format_mean_sd(r["map50_07_mean"], r["map50_07_std"], r["seeds"])

    lines += _table(summary, fams, budgets, m07)
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
    infos = notes.get("backbones") or {}
    if infos:
        lines += [
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


def write_reports(
    summary: list[dict[str, Any]],
    out: Path,
    title: str,
    split: dict[str, Any] | None = None,
    found: list[dict[str, Any]] | None = None,
    notes: dict[str, Any] | None = None,
) -> None:
    """results.json, results.csv, results.md (family x budget table, split, verdicts) and accuracy_vs_mflops.png
    (detectors: map50_vs_mflops.png, mAP@0.5 against backbone MFLOPs at 224 px)."""
    found = found or []
    detection = "map50_mean" in summary[0]
    report = {"title": title, "split": split, "rows": summary, "verdicts": found}
    if detection:
        report.update(task="detection", metric="val_map50", budgets=f"backbone MFLOPs at {det.BACKBONE_RESOLUTION} px")
        report.update(notes or {})
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
        photos = f", {split['photos']:,} validation photos" if split.get("photos") and not detection else ""
        lines += [f"Split: {split['text']}{photos}.", ""]
    n_seeds = sorted({r["seeds"] for r in summary})
    how = "one seed" if n_seeds == [1] else f"mean ± sample sd over {'/'.join(map(str, n_seeds))} seeds"
    if detection:
        lines += _detector_sections(summary, fams, budgets, how, notes or {})
    else:
        lines += [f"val top-1 % ({how}; width, MMACs)", ""]

        def top1(r: dict[str, Any]) -> str:
            return f"{format_mean_sd(r['top1_mean'], r['top1_std'], r['seeds'])} (w {r['width']:g}, {r['mmacs']:.1f} M)"

        lines += _table(summary, fams, budgets, top1)
    lines += _verdict_lines(found, detection)
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    if detection:
        _plot(summary, fams, budgets, out / "map50_vs_mflops.png", title, "backbone_mmacs_224", "map50_mean",
              "map50_std", f"backbone MFLOPs at {det.BACKBONE_RESOLUTION} px (budget; detectors offset slightly)",
              "val mAP@0.5, all-point (%)")  # fmt: skip
    else:
        _plot(summary, fams, budgets, out / "accuracy_vs_mflops.png", title, "mmacs", "top1_mean", "top1_std",
              "MFLOPs budget (multiply-adds; families offset slightly)", "val top-1 (%)")  # fmt: skip


def _plot(
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


def _split_report(
    run_dirs: list[Path], data: str, n_val: int | None, val_split: float, found: list[dict[str, Any]]
) -> dict[str, Any]:
    """The split the runs measured on, with its number of validation photos."""
    split = describe_split([read_split(d / "split.json") for d in run_dirs], data, n_val)
    if split["photos"] is None:
        split["photos"] = next((v["photos"] for v in found if v["photos"]), None) or count_images(data, val_split)[1]
    return split


def _detection_split_report(data: str, val_split: float, seeds: int) -> dict[str, Any]:
    """The detection split (the folder's own lists, or a seeded hold-out: one per seed, as each run makes)."""
    from ..data.detection import open_detection

    split = open_detection(data, val_split, 0)
    text = split.description
    if split.record is not None and seeds > 1:
        text += f" at seed 0; each run holds out with its own seed (0..{seeds - 1})"
    return {"text": text, "root": str(data), "val_split": None if split.record is None else val_split,
            "seeds": list(range(seeds)) if split.record is not None else [], "photos": len(split.val)}  # fmt: skip


def compare(
    data: str,
    budgets: list[float],
    families: list[str],
    out: str | Path,
    resolution: int | None = None,
    epochs: int | None = None,
    seeds: int | None = None,
    recipe: str = "auto",
    groups: int = 3,
    pretrained_from: str | None = None,
    overrides: dict[str, Any] | None = None,
    log=print,
    backbones: str | Path | None = None,
    extra_rows: dict[str, str] | list[str] | None = None,
) -> list[dict[str, Any]]:
    """Train every (family, budget, seed) and write the reports; returns the summary rows.

    ``resolution`` None: 224 for classifiers; for detection data the detectors' (the recipe's, 320), the
    backbone widths being solved at 224 px whatever it is. ``epochs`` None: 10 for classifiers, the recipe's for
    detectors. ``seeds`` None: 3 on small data (below the paper recipe's 25,600 training images), else 1 (the log
    says why). ``backbones`` (a folder of classification weights, see ``compare_detection``) and ``extra_rows``
    ({name: weights file}) are for detection data only.
    """
    out = Path(out)
    check_plan(budgets, families, seeds)  # before the images are counted
    given = {"epochs": epochs, "resolution": resolution, "groups": groups, **(overrides or {}), "data": str(data)}
    make_config({k: v for k, v in given.items() if v is not None} | {"out": str(out)})  # checked now, not per run
    from ..data.detection import is_detection_data

    detection = is_detection_data(data)
    if not detection and (backbones is not None or extra_rows):
        which = "backbones" if backbones is not None else "extra_rows"
        raise ParameterError(which, f"`{which}` is for detection data (a VOC folder or COCO json); {data} has no boxes")
    val_split = (overrides or {}).get("val_split", TrainConfig.val_split)
    n_val = classes = None
    if detection:
        n_train, n_val, classes = det.count_detection(data, val_split)
        if recipe == "auto":
            recipe, why = training.choose_recipe(data, val_split)
            log(f"[compare] recipe {recipe} (auto: {why})")
        if seeds is None:
            seeds, why = default_seeds(n_train, "mAP@0.5")
            log(f"[compare] {seeds} seed{'s' if seeds > 1 else ''} per detector and budget (default: {why})")
        recipe_cfg = training.load_recipe(recipe)
        resolution = resolution or recipe_cfg.get("resolution") or 320
        epochs = epochs or recipe_cfg.get("epochs") or TrainConfig.epochs
    else:
        resolution, epochs = resolution or 224, epochs or 10
    if not detection and (recipe == "auto" or seeds is None):
        n_train, n_val = count_images(data, val_split)
        if recipe == "auto":
            recipe, why = auto_recipe(n_train)
            log(f"[compare] recipe {recipe} (auto: {why})")
        if seeds is None:
            seeds, why = default_seeds(n_train)
            log(f"[compare] {seeds} seed{'s' if seeds > 1 else ''} per family and budget (default: {why})")
    assert seeds is not None
    if detection:
        jobs = plan_detection(
            budgets, families, seeds, len(classes), resolution, groups, backbones, extra_rows, pretrained_from
        )  # fmt: skip
        bb_note = "backbones from " + str(backbones) if backbones is not None else "BACKBONES FROM SCRATCH"
        log(f"[compare] detectors at {resolution} px, budgets in backbone MFLOPs at 224 px; {bb_note}")
    else:
        jobs = plan(budgets, families, resolution, seeds, groups, pretrained_from)
    base = {"data": data, "resolution": resolution, "epochs": epochs, **(overrides or {})}
    log(f"[compare] {len(jobs)} runs: {', '.join(j.name for j in jobs)}")
    notes: dict[str, Any] = {}
    if detection:
        infos = {f"{j.label}@{j.budget:g}": j.backbone_info for j in jobs if j.backbone_info is not None}
        main = [
            det.Backbone(j.pretrained or "", j.family, j.width, j.groups, j.backbone_info)
            for j in jobs
            if j.seed == 0 and j.backbone_info is not None and "+" not in (j.label or "")
        ]
        notes = {"backbones": infos, "differ": det.differences(main), "from_scratch": backbones is None}
        if notes["differ"]:
            log(f"[compare] WARNING: the backbones were not pretrained the same way (they differ in "
                f"{', '.join(notes['differ'])})")  # fmt: skip
    rows = [_run_one(j, base, recipe, out, groups, log) for j in jobs]
    summary = summarise(rows)
    runs: dict[tuple[str, float], dict[int, Path]] = {}
    for job, row in zip(jobs, rows, strict=True):
        runs.setdefault((row["family"], job.budget), {})[job.seed] = out / "runs" / job.name
    task = "detection" if detection else "classification"
    found = verdicts(runs, first="ssdlite_fd_mobilenet" if detection else "fd_mobilenet", task=task)
    means = {(r["family"], r["budget_mflops"]): r["mean"] for r in summary}
    for v in found:
        if v["diff"] is None and v["verdict"] in (MISSING, MISSING_DETECTIONS):  # the difference of the means
            v["diff"] = round(means[(v["a"], v["budget"])] - means[(v["b"], v["budget"])], 2)
    if detection:
        split = _detection_split_report(data, val_split, seeds)
    else:
        split = _split_report([out / "runs" / j.name for j in jobs], data, n_val, val_split, found)
    d = Path(data)
    name = f"{d.parent.name}/{d.name}" if d.name in ("train", "images", "data") else d.name
    seeds_text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    epochs_text = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    if detection:
        title = (
            f"{name}, SSDLite detectors at {resolution} px (budgets: backbone MFLOPs at 224 px), {epochs_text}, "
            f"{seeds_text}, recipe {Path(recipe).stem}"
        )
        title += ", backbones from scratch" if backbones is None else ""
    else:
        title = f"{name}, {resolution} px, {epochs_text}, {seeds_text}, recipe {Path(recipe).stem}"
    write_reports(summary, out, title, split, found, notes)
    plot = "map50_vs_mflops.png" if detection else "accuracy_vs_mflops.png"
    log(f"[compare] wrote {out}/results.md, results.csv, results.json, {plot}")
    unit = "mAP@0.5 points" if detection else "points"
    for v in found:
        interval = f" [{v['lo']:+.2f}, {v['hi']:+.2f}]" if v["lo"] is not None else ""
        diff = f"{v['diff']:+.2f} {unit}{interval}: " if v["diff"] is not None else ""
        log(f"[compare] {v['budget']:g} MFLOPs, {v['a']} vs {v['b']}: {diff}{v['verdict']}")
    return summary
