"""Detectors on photos: ``score_detections`` is the one scoring loop (a training run's validation, ``eval`` and
``compare``'s re-scoring all feed their batches through it), ``evaluate_detector`` scores one detector on
annotated photos (VOC and COCO mAP), ``detect`` finds the boxes in any photos, in their own pixels, for
``predict`` and drawn previews.

A detector here is any module that takes a list of float CHW images in [0, 1] at its square input size
and returns torchvision's per-image ``{"boxes", "scores", "labels"}`` (labels 1..K): the PyTorch SSDLite
and the exported files (``deploy.pipeline``) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ._progress import Progress
from .data.detection import DetectionDataset, ImageAnnotation, collate_detection, detection_eval_transform
from .data.images import load_image
from .detection_metrics import DetectionMeter, DetectionScores
from .draw import draw_detections

Detector = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


@dataclass
class DetectionEval:
    """What ``evaluate_detector`` found: the scores, the photos that could not be read, and drawn previews."""

    scores: DetectionScores
    bad: list[tuple[str, str]] = field(default_factory=list)
    drawn: list[Path] = field(default_factory=list)


Batch = tuple[torch.Tensor | None, list[dict[str, torch.Tensor]], torch.Tensor, list[tuple[int, str]]]
OnBatch = Callable[[str, list[int], list[dict[str, torch.Tensor]]], None]


@torch.no_grad()
def score_detections(
    models: dict[str, Detector],
    batches: Iterable[Batch],
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    coco: bool = False,
    on_batch: OnBatch | None = None,
) -> tuple[dict[str, DetectionMeter], list[tuple[int, str]]]:
    """Feed every batch (images, targets, indices, unreadable ``(index, reason)``; ``collate_detection``'s) to each
    of ``models`` and its ``DetectionMeter``; the images go to ``device`` once for all models. ``on_batch(name,
    indices, predictions)`` sees each model's CPU predictions. Returns the meters and the unreadable images."""
    device = torch.device(device)
    for m in models.values():
        if isinstance(m, torch.nn.Module):
            m.eval()
    meters = {k: DetectionMeter(class_names, coco=coco) for k in models}
    bad: list[tuple[int, str]] = []
    for x, y, idx, skipped in batches:
        bad += skipped
        if x is None:
            continue
        images = list(x.to(device))
        for name, m in models.items():
            preds = [{k: v.cpu() for k, v in p.items()} for p in m(images)]
            meters[name].update(preds, y)
            if on_batch is not None:
                on_batch(name, idx.tolist(), preds)
    return meters, bad


@torch.no_grad()
def evaluate_detector(
    model: Detector,
    records: Sequence[ImageAnnotation],
    class_names: Sequence[str],
    resolution: int,
    batch_size: int = 16,
    workers: int = 0,
    device: torch.device | str = "cpu",
    coco: bool = False,
    draw_dir: Path | None = None,
    draw_n: int = 0,
    min_score: float = 0.3,
    progress: bool = True,
) -> DetectionEval:
    """VOC mAP@0.5 (all-point and 11-point; COCO mAP@[.5:.95] with ``coco``) of ``model`` on ``records``.

    Boxes are compared at the model's input size: IoU does not change when both axes are scaled, so the
    scores are those of the original pixels. ``draw_n`` photos go to ``draw_dir`` with the boxes above
    ``min_score`` drawn (a quick look at what the numbers mean).
    """
    ds = DetectionDataset(list(records), detection_eval_transform(resolution))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_detection)
    drawn: list[Path] = []

    def preview(_: str, idx: list[int], preds: list[dict[str, torch.Tensor]]) -> None:
        for i, p in zip(idx, preds):
            if len(drawn) < draw_n and draw_dir is not None:
                drawn.append(_draw(records[i].path, p, resolution, class_names, min_score, draw_dir))

    bar = Progress(len(loader), "evaluating", "batch", enabled=progress)
    meters, bad = score_detections({"model": model}, _counted(loader, bar), class_names, device, coco, preview)
    bar.close()
    return DetectionEval(meters["model"].compute(), [(str(records[i].path), r) for i, r in bad], drawn)


def _counted(batches: Iterable[Batch], bar: Progress) -> Iterator[Batch]:
    for batch in batches:
        yield batch
        bar.update(1)


@dataclass
class Detections:
    """The boxes found in one photo, in its own pixels (xyxy), best first; or why it could not be read."""

    path: str
    boxes: np.ndarray  # [N, 4] float32
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N], 1..K
    names: list[str]
    size: tuple[int, int] = (0, 0)  # (width, height)
    error: str | None = None


@torch.no_grad()
def detect(
    model: Detector,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    resolution: int,
    min_score: float = 0.3,
    device: torch.device | str = "cpu",
) -> Iterator[Detections]:
    """The boxes scoring at least ``min_score`` in each photo (an unreadable one yields its error, never stops
    the others)."""
    device = torch.device(device)
    if isinstance(model, torch.nn.Module):
        model.eval()
    tf = detection_eval_transform(resolution)
    for path in paths:
        try:
            im = load_image(path)
        except (OSError, ValueError) as e:
            yield Detections(str(path), *_empty(), [], error=str(e))
            continue
        w, h = im.size
        x, _ = tf(im, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
        p = model([x.to(device)])[0]
        keep = p["scores"].cpu() >= min_score
        boxes = p["boxes"].cpu()[keep] * torch.tensor([w / resolution, h / resolution] * 2)
        labels = p["labels"].cpu()[keep].numpy()
        yield Detections(
            str(path), boxes.numpy().astype(np.float32), p["scores"].cpu()[keep].numpy(), labels,
            [_name(class_names, int(c)) for c in labels], (w, h),
        )  # fmt: skip


def draw(d: Detections, class_names: Sequence[str]) -> Any:
    """``d``'s photo with its boxes, names and scores drawn (a PIL image)."""
    return draw_detections(load_image(d.path), d.boxes, d.labels, d.scores, class_names)


def _draw(
    path: Path, p: dict[str, torch.Tensor], resolution: int, class_names: Sequence[str], min_score: float, out: Path
) -> Path:
    im = load_image(path)
    keep = p["scores"] >= min_score
    boxes = p["boxes"][keep] * torch.tensor([im.size[0] / resolution, im.size[1] / resolution] * 2)
    dst = out / f"{Path(path).stem}.jpg"
    draw_detections(im, boxes, p["labels"][keep], p["scores"][keep], class_names).save(dst, quality=90)
    return dst


def _name(class_names: Sequence[str], label: int) -> str:
    return str(class_names[label - 1]) if 1 <= label <= len(class_names) else str(label)


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
