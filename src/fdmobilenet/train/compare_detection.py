"""``compare`` on detection data (a VOC folder or COCO json): the paper's detector comparison, SSDLite on each
family's backbone. Budgets are backbone MFLOPs at 224 px (the paper's convention), the backbones come
pretrained from ``backbones`` (``backbones.py``) or from scratch, said loudly, and the report gives VOC
mAP@0.5 (all-point and 11-point) with paired-bootstrap verdicts over the validation images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import ParameterError
from .._utils import torch_threads
from ..complexity import profile
from ..models import RELEASED_WIDTHS, create_model, family_kwargs, solve_width
from .backbones import (
    BACKBONE_RESOLUTION,
    Backbone,
    backbone_macs,
    check_loads,
    differences,
    find_backbones,
    parse_extra_rows,
    place_extra_row,
    read_backbone,
)
from .choose import choose_recipe
from .compare_detection_report import detector_sections
from .compare_report import CompareTask, Setup, check_plan, default_seeds, plot_scores, runs_text
from .config import TrainConfig, load_recipe
from .engine import TrainResult
from .runner import Job, Log
from .verdicts import DETECTIONS, mean_sd

__all__ = ["DetectionCompare", "DetectorJob", "differences", "find_backbones", "plan_detection", "read_backbone"]
DEFAULT_RESOLUTION = 320  # SSDLite's


@dataclass
class DetectorJob(Job):
    """One detector run: ``model`` (``ssdlite_<family>``) with its backbone at ``width`` (the budget's at 224 px),
    the row's ``label``, the backbone's MACs at 224 px (what the budget counts), the detector's MACs by part at
    its resolution (``macs`` is their total) and the backbone file's record (``Backbone.info``)."""

    model: str = ""
    label: str = ""
    backbone_macs: int = 0
    parts: dict[str, int] | None = None
    groups: int | None = None
    backbone_info: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        tag = "" if self.pretrained else "-scratch"
        return f"{self.label}{tag}-{self.budget:g}M-w{self.width:g}-seed{self.seed}"

    def settings(self, recipe_cfg: dict[str, Any], groups: int) -> dict[str, Any]:
        """The detector at its backbone's width (solved at 224 px), trained at the experiment's resolution."""
        got = {"model": self.model, "width": self.width, "pretrained": self.pretrained}
        return got if self.groups is None else {**got, "groups": self.groups}

    def describe(self, cfg: TrainConfig) -> str:
        return (
            f"backbone {self.backbone_macs / 1e6:.1f} MMACs at 224 px, detector {self.macs / 1e6:.1f} at "
            f"{cfg.resolution} px; backbone {'from ' + self.pretrained if self.pretrained else 'FROM SCRATCH'}"
        )

    def result_row(self, cfg: TrainConfig, result: TrainResult, metrics: list[dict[str, Any]]) -> dict[str, Any]:
        best = max(metrics, key=lambda m: m.get("val_map50", -1))
        return {
            "family": self.label, "budget_mflops": self.budget, "width": self.width,
            "backbone_macs": self.backbone_macs, "macs": self.macs, "macs_by_part": self.parts, "params": self.params,
            "resolution": cfg.resolution, "seed": self.seed, "map50": result.best_score,
            "map50_07": best.get("val_map50_07"), "backbone": self.pretrained, "backbone_info": self.backbone_info,
        }  # fmt: skip

    def finish(self, run_dir: Path, overrides: dict[str, Any], row: dict[str, Any], log: Log) -> bool:
        """``val_detections.npz`` of a finished run (the per-image outcomes the verdicts resample)."""
        if (run_dir / DETECTIONS).is_file() or not (run_dir / "best.safetensors").is_file():
            return False
        device = overrides.get("device")
        with torch_threads(overrides.get("threads")):
            got = write_val_detections(
                run_dir, overrides["data"], overrides.get("val_split", TrainConfig.val_split), self.seed,
                None if device == "auto" else device,
            )  # fmt: skip
        row["eval_map50"] = round(got, 4)
        if row.get("map50") is not None and abs(got - row["map50"]) > 0.05:
            log(
                f"[compare] warning: {self.name}: best.safetensors re-scored image by image gives mAP@0.5 {got:.2f}, "
                f"training logged {row['map50']:.2f}; the verdicts use the re-scored detections"
            )
        return True


def _authors_file(pretrained_from: str | Path, name: str) -> Path:
    src = Path(pretrained_from) / f"{name}.safetensors"
    if not src.is_file():
        raise ParameterError(
            "pretrained_from",
            f"`pretrained_from`: {src} not found; convert the authors' weights with `fdmobilenet convert` into that "
            "folder",
        )
    return src


def _rows(budgets, families, groups, backbones, extra_rows, pretrained_from):
    """(label, family, budget, width, groups, Backbone or None) of every detector row, before seeds."""
    extra_rows = parse_extra_rows(extra_rows)
    cells = []
    for budget in budgets:
        for fam in families:
            extra = family_kwargs(fam, groups)
            w = solve_width(fam, budget, resolution=BACKBONE_RESOLUTION, **extra)
            cells.append((fam, budget, w, extra.get("groups")))
    found = find_backbones(backbones, cells) if backbones is not None else {}
    rows: list[tuple[str, str, float, float, int | None, Backbone | None]] = [
        (f"ssdlite_{fam}", fam, budget, w, g, found.get((fam, budget))) for fam, budget, w, g in cells
    ]
    if pretrained_from is not None:
        for fam, budget, w, _ in cells:
            match = next((n for n, ow in RELEASED_WIDTHS.items() if abs(ow - w) < 0.02), None)
            if fam == "fd_mobilenet" and match:
                bb = read_backbone(_authors_file(pretrained_from, match), "pretrained_from")
                rows.append((f"ssdlite_{fam}+authors", fam, budget, bb.width, None, bb))
    for name, file in extra_rows.items():
        budget, bb, _ = place_extra_row(name, file, budgets)
        rows.append((f"ssdlite_{bb.family}+{name}", bb.family, budget, bb.width, bb.groups, bb))
    seen = set()
    for label, _, budget, *_ in rows:
        if (label, budget) in seen:
            raise ParameterError("extra_rows", f"`extra_rows`: two rows named {label} at {budget:g} MFLOPs; rename one")
        seen.add((label, budget))
    return rows


def plan_detection(
    budgets: list[float],
    families: list[str],
    seeds: int,
    num_classes: int,
    resolution: int = DEFAULT_RESOLUTION,
    groups: int = 3,
    backbones: str | Path | None = None,
    extra_rows: dict[str, str] | None = None,
    pretrained_from: str | Path | None = None,
) -> list[DetectorJob]:
    """The detector runs: ``ssdlite_<family>`` per family, budget and seed, the backbone's width solved for the
    budget at 224 px (the paper's convention) and the detector trained at ``resolution``; each backbone from
    ``backbones`` (checked to have that width) or from scratch. ``extra_rows`` ({name: classification weights})
    and ``pretrained_from`` (the authors' converted weights, where FD-MobileNet widths match) add rows whose
    backbones start from the given files, at the budget they cost."""
    from ..models.detection import macs_by_part  # here: torchvision loads only for detectors

    check_plan(budgets, families, seeds)
    jobs = []
    for label, fam, budget, w, g, bb in _rows(budgets, families, groups, backbones, extra_rows, pretrained_from):
        kw = {"groups": g} if g is not None else {}
        model = f"ssdlite_{fam}"
        if bb is not None:
            check_loads(model, bb, num_classes, resolution, "extra_rows" if "+" in label else "backbones")
        bb_macs, _ = backbone_macs(fam, w, g)
        with torch.device("meta"):  # shapes only
            p = profile(create_model(model, num_classes=num_classes, resolution=resolution, width=w, **kw), resolution)
        for seed in range(seeds):
            weights = None if bb is None else str(Path(bb.path).resolve())
            jobs.append(DetectorJob(
                fam, budget, w, seed, p.macs, p.params, weights, model=model, label=label, backbone_macs=bb_macs,
                parts=macs_by_part(p), groups=g, backbone_info=None if bb is None else bb.info,
            ))  # fmt: skip
    return jobs


def count_detection(data: str, val_split: float) -> tuple[int, int, list[str]]:
    """(training images, validation images, classes) of ``data`` as a seed-0 detection run splits it."""
    from ..data.detection import open_detection

    split = open_detection(data, val_split, 0)
    return len(split.train), len(split.val), split.classes


def write_val_detections(run_dir: Path, data: str, val_split: float, seed: int, device: str | None = None) -> float:
    """Re-score ``RUN/best.safetensors`` on the run's validation images, one image at a time as the run did,
    and keep every detection's VOC outcome in ``RUN/val_detections.npz`` (``verdicts.DETECTIONS``) for the
    bootstrap; returns its mAP@0.5 (all-point), which equals the run's best ``val_map50``."""
    from torch.utils.data import DataLoader

    from ..data.detection import DetectionDataset, collate_detection, detection_eval_transform, open_detection
    from ..data.splits import read_split
    from ..detect import score_detections
    from ..models.pretrained import build_from_weights

    split = open_detection(data, val_split, seed, read_split(run_dir / "split.json"))
    model, meta = build_from_weights(run_dir / "best.safetensors")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    records, names = split.val, []
    ds = DetectionDataset(records, detection_eval_transform(int(meta["resolution"])))
    batches = DataLoader(ds, batch_size=16, collate_fn=collate_detection)
    meters, _ = score_detections(
        {"best": model}, batches, meta.get("class_names") or split.classes, dev,
        on_batch=lambda _, idx, __: names.extend(records[i].name for i in idx),
    )  # fmt: skip
    outcomes = meters["best"].outcomes()
    outcomes.save(run_dir / DETECTIONS, names)
    return float(outcomes.map50()[0])


class DetectionCompare(CompareTask):
    """SSDLite detectors on photos with boxes, scored by VOC mAP@0.5 (all-point; 11-point beside it)."""

    name = "detection"
    head = "detector"
    unit = "image"
    points = "mAP@0.5 points"
    first = "ssdlite_fd_mobilenet"
    plot_file = "map50_vs_mflops.png"

    def setup(
        self, data: str, val_split: float, recipe: str, seeds: int | None, resolution: int | None,
        epochs: int | None, log: Log,
    ) -> Setup:  # fmt: skip
        """The recipe's resolution (SSDLite's 320) and epochs unless given."""
        n_train, n_val, classes = count_detection(data, val_split)
        if recipe == "auto":
            recipe, why = choose_recipe(data, val_split, task=self.name)
            log(f"[compare] recipe {recipe} (auto: {why})")
        if seeds is None:
            seeds, why = default_seeds(n_train, "mAP@0.5")
            log(f"[compare] {seeds} seed{'s' if seeds > 1 else ''} per detector and budget (default: {why})")
        recipe_cfg = load_recipe(recipe)
        resolution = resolution or recipe_cfg.get("resolution") or DEFAULT_RESOLUTION
        epochs = epochs or recipe_cfg.get("epochs") or TrainConfig.epochs
        return Setup(recipe, seeds, resolution, epochs, n_train, n_val, classes)

    def plan(
        self, budgets: list[float], families: list[str], setup: Setup, groups: int, pretrained_from: str | None,
        options: dict[str, Any], log: Log,
    ) -> list[Job]:  # fmt: skip
        backbones = options.get("backbones")
        jobs = plan_detection(
            budgets, families, setup.seeds, len(setup.classes or ()), setup.resolution, groups, backbones,
            options.get("extra_rows"), pretrained_from,
        )  # fmt: skip
        bb_note = "backbones from " + str(backbones) if backbones is not None else "BACKBONES FROM SCRATCH"
        log(f"[compare] detectors at {setup.resolution} px, budgets in backbone MFLOPs at 224 px; {bb_note}")
        return list(jobs)

    def notes(self, jobs: list[Job], options: dict[str, Any], log: Log) -> dict[str, Any]:
        """Each row's backbone record, and whether the main rows' backbones were pretrained the same way."""
        dets = [j for j in jobs if isinstance(j, DetectorJob)]
        infos = {f"{j.label}@{j.budget:g}": j.backbone_info for j in dets if j.backbone_info is not None}
        main = [
            Backbone(j.pretrained or "", j.family, j.width, j.groups, j.backbone_info)
            for j in dets
            if j.seed == 0 and j.backbone_info is not None and "+" not in j.label
        ]
        notes = {"backbones": infos, "differ": differences(main), "from_scratch": options.get("backbones") is None}
        if notes["differ"]:
            log(f"[compare] WARNING: the backbones were not pretrained the same way (they differ in "
                f"{', '.join(notes['differ'])})")  # fmt: skip
        return notes

    def summarise(self, family: str, budget: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """mAP@0.5 all-point (``mean``/``sd``, what the verdicts compare) and 11-point, and the cost: the backbone's
        MMACs at 224 px (the budget's) and the detector's at its resolution, by part."""
        mean, sd = mean_sd([r["map50"] for r in rows])
        m07 = [r["map50_07"] for r in rows if r.get("map50_07") is not None]
        mean07, sd07 = mean_sd(m07) if m07 else (None, None)
        parts = rows[0].get("macs_by_part") or {}
        return {
            "family": family,
            "budget_mflops": budget,
            "width": rows[0]["width"],
            "backbone_mmacs_224": round(rows[0]["backbone_macs"] / 1e6, 2),
            "resolution": rows[0]["resolution"],
            "detector_mmacs": round(rows[0]["macs"] / 1e6, 2),
            **{f"detector_{k}_mmacs": round(parts[k] / 1e6, 2) for k in ("backbone", "extras", "head") if k in parts},
            "params": rows[0]["params"],
            "seeds": len(rows),
            "map50_mean": round(mean, 2),
            "map50_std": None if sd is None else round(sd, 2),
            "map50_07_mean": None if mean07 is None else round(mean07, 2),
            "map50_07_std": None if sd07 is None else round(sd07, 2),
            "backbone_weights": rows[0].get("backbone") or "scratch",
            "train_seconds": round(sum(r["train_seconds"] for r in rows), 1),
            "img_per_s": rows[0]["img_per_s"],
            "mean": round(mean, 3),
            "sd": None if sd is None else round(sd, 3),
        }

    def split(
        self, data: str, val_split: float, setup: Setup, run_dirs: list[Path], found: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The folder's own lists, or a seeded hold-out: one per seed, as each run makes."""
        from ..data.detection import open_detection

        split = open_detection(data, val_split, 0)
        text, seeds = split.description, setup.seeds
        if split.record is not None and seeds > 1:
            text += f" at seed 0; each run holds out with its own seed (0..{seeds - 1})"
        return {"text": text, "root": str(data), "val_split": None if split.record is None else val_split,
                "seeds": list(range(seeds)) if split.record is not None else [], "photos": len(split.val)}  # fmt: skip

    def title(self, name: str, setup: Setup, options: dict[str, Any]) -> str:
        title = (
            f"{name}, SSDLite detectors at {setup.resolution} px (budgets: backbone MFLOPs at 224 px), "
            f"{runs_text(setup)}, recipe {Path(setup.recipe).stem}"
        )
        return title + (", backbones from scratch" if options.get("backbones") is None else "")

    def sections(
        self, summary: list[dict[str, Any]], fams: list[str], budgets: list[float], how: str, notes: dict[str, Any]
    ) -> list[str]:
        """What the budgets mean, where the backbones come from, both mAPs, the cost."""
        return detector_sections(summary, fams, budgets, how, notes)

    def verdict_intro(self) -> list[str]:
        return [
            "Difference in val mAP@0.5 (all-point, points, A − B) with a 95 % interval from a paired bootstrap over "
            "the validation images and the seeds (2,000 resamples, the same images for both detectors, mAP recomputed "
            "from every detection on each resample); a detector is *ahead* when the interval excludes 0.",
            "",
            "| budget | A | B | A − B | 95 % interval | verdict | images | seeds |",
        ]

    def report_fields(self, notes: dict[str, Any]) -> dict[str, Any]:
        return {"task": "detection", "metric": "val_map50", "budgets": f"backbone MFLOPs at {BACKBONE_RESOLUTION} px",
                **notes}  # fmt: skip

    def plot(self, summary: list[dict[str, Any]], fams: list[str], budgets: list[float], path: Path, title: str):
        plot_scores(summary, fams, budgets, path, title, "backbone_mmacs_224", "map50_mean", "map50_std",
                    f"backbone MFLOPs at {BACKBONE_RESOLUTION} px (budget; detectors offset slightly)",
                    "val mAP@0.5, all-point (%)")  # fmt: skip
