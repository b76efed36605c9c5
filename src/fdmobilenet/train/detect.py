"""The detection task: VOC/COCO boxes in, an SSDLite detector trained by the same engine, ``best``
following VOC mAP@0.5 (all-point) on the held-out photos.

Everything else a run promises (schedule, exact resume, atomic checkpoints, signals, metrics, curves)
comes from ``engine.py``; this module only supplies the data, the model, the loss and the score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import ParameterError
from .._utils import write_if_changed
from ..data.detection import (
    DetectionDataset,
    collate_detection,
    detection_eval_transform,
    detection_train_transform,
    open_detection,
)
from ..data.order import EpochOrder, SeededView
from ..data.splits import read_split
from ..detect import score_detections
from ..detection_metrics import DetectionScores
from ..models import create_model, read_pretrained
from ..models.detection import detector_metadata
from ..models.pretrained import is_detector_meta
from .config import TrainConfig
from .distributed import Dist
from .inputs import Data, Loaders, StopSafeLoader, _ignore_stop_signals
from .optim import model_kwargs
from .tasks import Log, Run, Score, Task

# settings a detection run cannot honour: refused rather than silently ignored
_CLASSIFICATION_ONLY = {
    "mixup": 0.0, "cutmix": 0.0, "teacher": None, "auto_augment": "none", "random_erasing": 0.0,
    "train_resolution": None, "label_smoothing": 0.0, "in_memory": None,
}  # fmt: skip


class _Names:
    """Names the engine reports skipped training photos by (``Data.train_source.name``)."""

    def __init__(self, records: list[Any]):
        self.records = records

    def name(self, i: int) -> str:
        return str(self.records[i].path)


def box_scales(records: list[Any]) -> tuple[dict[str, float], float]:
    """Anchor scales and zoom-out sized to the training boxes: the smallest anchors at the 5th percentile of
    the boxes' size (side of the equal-area square over the image's long side), kept within 0.04-0.2 (SSD's
    own is 0.2), the largest at 1.1x the 95th, within 0.5-0.95 (SSD's 0.95); zoom-out shrinks photos at most
    until the small objects reach 2.5 % of the side (1.5-4x; SSD's 4x). SSD's fixed 0.2 left BCCD's platelets
    (5-9 % of the side) unmatched: their AP stayed at 0 (66 with these scales)."""
    sizes = np.concatenate([
        np.sqrt(np.clip((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]), 0, None))
        / max(r.width, r.height)
        for r in records if len(r.boxes)
    ] or [np.array([0.2, 0.95])])  # fmt: skip
    lo, hi = np.percentile(sizes, [5, 95])
    min_ratio = float(np.clip(round(lo, 3), 0.04, 0.2))
    max_ratio = float(np.clip(round(1.1 * hi, 3), 0.5, 0.95))
    return {"anchor_min_ratio": min_ratio, "anchor_max_ratio": max_ratio}, float(np.clip(lo / 0.025, 1.5, 4.0))


class DetectionTask(Task):
    """Boxes of ``classes`` in photos; SSD's loss (smooth-L1 boxes + hard-negative-mined classification)."""

    name = "detection"
    metric = "val_map50"
    metric_label = "val mAP@0.5"
    curves = (("val_map50", "mAP@0.5"), ("val_map50_07", "mAP@0.5 11-pt"))
    curve_axis = "mAP"

    def __init__(self) -> None:
        self.best: DetectionScores | None = None
        self.anchors: dict[str, float] = {}

    def build_data(self, cfg: TrainConfig, out: Path, dist: Dist, log: Log) -> Data:
        """The folder's own splits (VOC ``ImageSets/Main``), or a seeded hold-out recorded in ``split.json``."""
        for k, default in _CLASSIFICATION_ONLY.items():
            if getattr(cfg, k) not in (default, False if default is None else default):
                raise ParameterError(k, f"`{k}` is for classifiers; a detector ({cfg.model}) cannot use it: drop it")
        if cfg.loader == "gpu":
            raise ParameterError("loader", "`loader` gpu decodes classification batches; detectors read with pil")
        if cfg.data is None:
            raise ParameterError("data", f"{cfg.model} is a detector: pass `data` a VOC folder or a COCO json")
        split = open_detection(cfg.data, cfg.val_split, cfg.seed, read_split(out / "split.json"))
        if split.record is not None and dist.main:
            write_if_changed(out / "split.json", json.dumps(split.record, indent=1).encode())
        if dist.main:
            for path, reason in split.problems[:20]:
                log(f"warning: {path}: {reason} (skipped)")
            if len(split.problems) > 20:
                log(f"warning: ... and {len(split.problems) - 20} more annotation problems")
        self.anchors, zoom_out = box_scales(split.train)
        log(
            f"anchors sized to the training boxes: scales {self.anchors['anchor_min_ratio']:.3f}-"
            f"{self.anchors['anchor_max_ratio']:.3f} of the image side; zoom-out up to {zoom_out:.1f}x"
        )
        train_tf = detection_train_transform(cfg.resolution, cfg.mean, zoom_out=zoom_out)
        train = SeededView(DetectionDataset(split.train, train_tf), cfg.seed)
        val = DetectionDataset(split.val, detection_eval_transform(cfg.resolution))
        data = Data(split.classes, split.description, len(split.train), len(split.val), train, val)
        data.train_source = _Names(split.train)  # type: ignore[assignment]
        return data

    def loader_kind(self, cfg: TrainConfig, data: Data, dist: Dist) -> str:
        return "pil"

    def make_loaders(self, cfg: TrainConfig, data: Data, dist: Dist, kind: str, micro: int) -> Loaders:
        """Per-image box-aware augmentation in workers, batches of the same seeded, resumable order."""
        kw: dict[str, Any] = {"collate_fn": collate_detection, "pin_memory": dist.device.type == "cuda"}
        if cfg.workers:
            kw.update(num_workers=cfg.workers, worker_init_fn=_ignore_stop_signals, prefetch_factor=4)
        val_idx = list(range(dist.rank, data.n_val, dist.world))
        val = StopSafeLoader(data.val, batch_size=max(micro, 16), sampler=val_idx, **kw)

        def train(epoch: int, start_step: int):
            order = EpochOrder(data.n_train, cfg.batch_size, dist.rank, dist.world, cfg.seed, epoch, start_step)
            return iter(StopSafeLoader(data.train, batch_size=micro, sampler=order, **kw))

        return Loaders(kind, val, train)

    def build_model(self, cfg: TrainConfig, classes: list[str], log: Log, load_pretrained: bool) -> nn.Module:
        """The detector for ``classes``; ``pretrained`` is a classifier's weights (the backbone starts from
        them) or a detector's (all of it, the head too when the classes match)."""
        pretrained = cfg.pretrained if load_pretrained else None
        whole = bool(cfg.pretrained) and is_detector_meta(read_pretrained(cfg.pretrained)[1])  # read once
        anchors = {} if whole else self.anchors  # a detector's head means its own anchors
        model = create_model(
            cfg.model, num_classes=len(classes), resolution=cfg.resolution, pretrained=pretrained or False,
            **model_kwargs(cfg), **anchors,
        )  # fmt: skip
        if pretrained:
            if not whole:
                what = "its backbone; extra layers and head start from scratch"
            elif model.pretrained_cfg.get("reinitialised"):
                what = f"a detector of other classes: class head re-initialised for {len(classes)} classes"
            else:
                what = "the whole detector"
            log(f"loaded {pretrained} ({what})")
        if cfg.freeze_backbone:
            for name, p in model.named_parameters():
                p.requires_grad_(not name.startswith("backbone.body"))
        return model

    def to_device(self, x: torch.Tensor, y: list[dict[str, Any]], dist: Dist, step: int, micro_batch: int):
        """Images and each image's target dict (boxes, labels) on the device."""
        targets = [{k: v.to(dist.device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in y]
        return x.to(dist.device, non_blocking=True), targets

    def checkpoint_meta(self, model: nn.Module, classes: list[str]) -> dict[str, Any]:
        """Anchors and post-processing thresholds: what rebuilds the detector from its file."""
        return detector_metadata(model, classes)

    def loss(self, run: Run, x: torch.Tensor, y: list[dict[str, torch.Tensor]], micro_batch: int) -> torch.Tensor:
        """SSD's own loss: box regression plus classification over the hard-mined anchors."""
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in y]
        losses = run.model(list(x), targets)
        return sum(losses.values())

    def validate(self, run: Run, models: dict[str, nn.Module]) -> tuple[dict[str, Score], dict[str, Any]]:
        """VOC mAP@0.5 of each of ``models`` over all processes' shards, from one pass of the loader."""
        meters, bad = score_detections(models, run.loaders.val, run.data.classes, run.dist.device)
        if run.dist.world > 1:  # every process's matches, merged before the AP is computed
            for meter in meters.values():
                gathered: list[Any] = [None] * run.dist.world
                torch.distributed.all_gather_object(gathered, meter)
                for other in gathered[1:] if run.dist.main else []:
                    meter.merge(other)
        nbad = int(run.dist.all_reduce([float(len(bad))])[0])
        scores, local = {}, {}
        for k, meter in meters.items():
            s = meter.compute()
            local[k] = s
            scores[k] = Score(
                s.map50, {k2: v for k2, v in s.as_row().items() if v is not None},
                f"val mAP@0.5 {s.map50:6.2f}% (11-point {s.map50_07:6.2f}%)", nbad,
            )  # fmt: skip
        return scores, local

    def write_best(self, run: Run, local: DetectionScores) -> None:
        """``val_ap.csv``: the per-class AP of what best.safetensors holds."""
        self.best = local
        if run.dist.main:
            local.write_csv(run.out / "val_ap.csv")

    def report(self, run: Run) -> None:
        if self.best is not None:
            run.log(f"per-class AP@0.5 of the best weights ({run.out / 'val_ap.csv'}):\n{self.best.table()}")
