"""What a task plugs into the one training engine: its data and loaders, its model, its loss (with
whatever the loss needs: a criterion, batch mixing, a teacher), how a batch reaches the device, the
validation score that ``best`` follows and how it is named, plotted and stored with the weights.

The engine (``engine.py``) owns everything else — schedule, steps, accumulation, EMA, signals, NaN
checks, checkpoints, metrics and resume — so a detector trains with the same guarantees as a classifier.
``ClassificationTask`` is this module's; ``detect.DetectionTask`` is the detection one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..classreport import write_predictions
from ..evaluate import EvalResult, evaluate_models
from .config import TrainConfig
from .distill import Teacher, check_recorded, distill_loss, load_teacher
from .distributed import Dist
from .inputs import Data, Loaders, build_data, loader_kind, make_loaders
from .mixing import BatchMix
from .optim import build_model
from .outputs import write_run_report

Run = Any  # the engine's Run (engine.py imports the tasks, so they name it loosely)

Log = Callable[..., None]


@dataclass
class Score:
    """One model's validation result: ``value`` is what ``best`` follows (higher is better)."""

    value: float
    row: dict[str, float]  # its metrics.jsonl columns
    text: str  # its part of the epoch's log line
    nbad: int = 0  # unreadable validation files


class Task:
    """The interface; ``ClassificationTask`` documents each part. The engine asks a task, never which task it is."""

    name = "task"
    metric = "val_score"  # the metrics.jsonl key `best` follows, also written to the weights' metadata
    metric_label = "val score"  # how the log names it
    curves: tuple[tuple[str, str], ...] = ()  # (metrics.jsonl key, legend) of curves.png's validation panel
    curve_axis = "score"  # that panel's axis name

    def build_data(self, cfg: TrainConfig, out: Path, dist: Dist, log: Log) -> Data:
        raise NotImplementedError

    def loader_kind(self, cfg: TrainConfig, data: Data, dist: Dist) -> str:
        raise NotImplementedError

    def make_loaders(self, cfg: TrainConfig, data: Data, dist: Dist, kind: str, micro: int) -> Loaders:
        raise NotImplementedError

    def build_model(self, cfg: TrainConfig, classes: list[str], log: Log, load_pretrained: bool) -> nn.Module:
        raise NotImplementedError

    def setup_loss(
        self, cfg: TrainConfig, data: Data, dist: Dist, log: Log, out: Path, resumed: bool, channels_last: bool
    ) -> None:
        """Build what ``loss`` needs beyond the model, before the model is built (nothing here may draw from the
        global RNGs: exact resume depends on their order)."""

    def to_device(self, x: Any, y: Any, dist: Dist, step: int, micro_batch: int) -> tuple[Any, Any]:
        """A loader's micro-batch on the training device, ready for ``loss``."""
        raise NotImplementedError

    def loss(self, run: Run, x: Any, y: Any, micro_batch: int) -> torch.Tensor:
        raise NotImplementedError

    def checkpoint_meta(self, model: nn.Module, classes: list[str]) -> dict[str, Any]:
        """Metadata the task's weights need beyond ``weights_meta`` to be rebuilt from the file alone."""
        return {}

    def validate(self, run: Run, models: dict[str, nn.Module]) -> tuple[dict[str, Score], dict[str, Any]]:
        raise NotImplementedError

    def write_best(self, run: Run, local: Any) -> None:
        """Files that go with a new ``best`` (every process calls it: it may gather)."""

    def report(self, run: Run) -> None:
        """The end-of-run report beside the curves (main process)."""


class ClassificationTask(Task):
    """Image folders -> class labels; cross-entropy (mixup/cutmix, distillation); ``best`` follows top-1."""

    name = "classification"
    metric = "val_top1"
    metric_label = "val top-1"
    curves = (("val_top1", "top-1"), ("val_top5", "top-5"))
    curve_axis = "accuracy"

    def __init__(self) -> None:
        self.criterion: nn.Module = nn.CrossEntropyLoss()
        self.mix: BatchMix | None = None
        self.teacher: Teacher | None = None

    def build_data(self, cfg: TrainConfig, out: Path, dist: Dist, log: Log) -> Data:
        return build_data(cfg, out, dist, log)

    def loader_kind(self, cfg: TrainConfig, data: Data, dist: Dist) -> str:
        return loader_kind(cfg, data, dist)

    def make_loaders(self, cfg: TrainConfig, data: Data, dist: Dist, kind: str, micro: int) -> Loaders:
        return make_loaders(cfg, data, dist, kind, micro)

    def build_model(self, cfg: TrainConfig, classes: list[str], log: Log, load_pretrained: bool) -> nn.Module:
        return build_model(cfg, classes, log, load_pretrained=load_pretrained)

    def setup_loss(
        self, cfg: TrainConfig, data: Data, dist: Dist, log: Log, out: Path, resumed: bool, channels_last: bool
    ) -> None:
        """Cross-entropy with label smoothing (integer or soft targets), mixup/cutmix of each micro-batch, and a
        frozen teacher for distillation (not wrapped, one per process; ``load_teacher`` forks the RNGs)."""
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.mix = BatchMix(cfg.mixup, cfg.cutmix, len(data.classes), cfg.seed) if cfg.mixup or cfg.cutmix else None
        if cfg.teacher:
            self.teacher = load_teacher(cfg.teacher, data.classes, dist.device, cfg.mean, cfg.std, channels_last)
            rows = f"its rows of the {len(data.classes)} ImageNet classes" if self.teacher.rows else "all its classes"
            renorm = "; inputs renormalised to its mean/std" if self.teacher.renormalise else ""
            log(f"distilling from {cfg.teacher} ({rows}{renorm}): T {cfg.kd_temperature:g}, weight {cfg.kd_weight:g}")
        check_recorded(out, self.teacher, resumed=resumed, write=dist.main)

    def to_device(self, x: torch.Tensor, y: torch.Tensor, dist: Dist, step: int, micro_batch: int):
        """Images and labels on the device; mixed (soft targets) when mixup/cutmix is on, seeded by (seed, step,
        micro-batch, rank) so the global RNGs are untouched."""
        x, y = x.to(dist.device, non_blocking=True), y.to(dist.device, non_blocking=True)
        if self.mix is not None:
            x, y = self.mix(x, y, step, micro_batch, dist.rank)
        return x, y

    def loss(self, run: Run, x: torch.Tensor, y: torch.Tensor, micro_batch: int) -> torch.Tensor:
        """Cross-entropy with label smoothing; with mixup/cutmix the targets are soft; with a teacher,
        Hinton's loss on the same (mixed) batch."""
        logits = run.model(x)
        if self.teacher is None:
            return self.criterion(logits, y)
        return distill_loss(logits, self.teacher(x), y, self.criterion, run.cfg.kd_temperature, run.cfg.kd_weight)

    def validate(self, run: Run, models: dict[str, nn.Module]) -> tuple[dict[str, Score], dict[str, EvalResult]]:
        """Top-1/top-5 of each of ``models`` over all processes, from one pass of the loader (each batch
        decoded once); and this process's own results, with its per-image predictions."""
        local = evaluate_models(models, run.loaders.val, run.data.val_source, run.dist.device, keep_preds=True)
        sums = run.dist.all_reduce([x for r in local.values() for x in (r.correct1, r.correct5, r.n, len(r.bad))])
        scores = {}
        for j, name in enumerate(local):
            c1, c5, nv, nbad = sums[4 * j : 4 * j + 4]
            top1, top5 = 100 * c1 / nv, 100 * c5 / nv
            if len(run.data.classes) > 5:
                row, text = {"val_top1": round(top1, 4), "val_top5": round(top5, 4)}, f"  top-5 {top5:6.2f}%"
            else:  # top-5 of 5 classes or fewer is 100 % by construction: not a score
                row, text = {"val_top1": round(top1, 4)}, ""
            scores[name] = Score(top1, row, f"val top-1 {top1:6.2f}%{text}", int(nbad))
        return scores, local

    def write_best(self, run: Run, local: EvalResult) -> None:
        """``val_predictions.csv``: the per-image top-1 of what best.safetensors holds, for the report and
        paired comparisons."""
        index, targets, preds = _gather_predictions(run, local)  # every process: a collective
        if run.dist.main:
            write_predictions(run.out / "val_predictions.csv", index, targets, preds)

    def report(self, run: Run) -> None:
        write_run_report(run.out, run.data.classes, run.log)


def _gather_predictions(run: Run, r: EvalResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, target, top-1) of every validation image, from all processes' shards, in index order."""
    parts = [(r.index, r.targets, r.preds)]
    if run.dist.world > 1:
        gathered: list[Any] = [None] * run.dist.world
        torch.distributed.all_gather_object(gathered, parts[0])
        parts = gathered
    index, targets, preds = (np.concatenate([p[k] for p in parts]) for k in range(3))
    order = np.argsort(index, kind="stable")
    return index[order], targets[order], preds[order]
