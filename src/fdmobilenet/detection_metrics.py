"""Detection metrics as papers report them: PASCAL VOC AP at IoU 0.5 per class (the 11-point VOC2007 mean
the FD-MobileNet paper quotes, and the all-point area VOC2010+ uses) and, optionally, COCO mAP@[.5:.95]
through pycocotools (the ``detection`` extra).

``DetectionMeter`` takes the per-image dicts torchvision detection models return (``boxes`` xyxy pixels,
``scores``, ``labels`` 1..K; 0 is the background and never a class here) and take as targets (``boxes``,
``labels``, optional ``difficult``), numpy or torch, so an evaluation loop streams images without keeping
them; ``compute`` gives a ``DetectionScores``. The VOC part needs numpy only: each image's detections are
matched as they arrive and only (score, outcome) pairs are kept; boxes are kept only for COCO.
Class names come from files, so everything shown or written is escaped as ``classreport`` does.
``DetectionMeter.outcomes`` hands the matched outcomes to ``detection_outcomes.ImageOutcomes`` (mAP over
resamples of the images); the COCO numbers come from ``detection_coco`` (pycocotools).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._errors import ParameterError
from ._utils import atomic_write_bytes, require
from .classreport import csv_cell, printable
from .detection_coco import DETECTION_HINT, coco_eval
from .detection_outcomes import ImageOutcomes

VOC_IOU = 0.5
# metrics.jsonl keys, after ``as_row``'s prefix (``val_``); the COCO ones only when COCO was computed.
VOC_KEYS = ("map50", "map50_07")
COCO_KEYS = ("map", "map50_coco", "map75_coco", "map_small", "map_medium", "map_large")
_COCO_FIELDS = ("coco_map", "coco_map50", "coco_map75", "coco_map_small", "coco_map_medium", "coco_map_large")
_TP, _FP, _IGNORED = 1, 0, -1


class ClassAP(NamedTuple):
    name: str
    ap: float  # all-point VOC AP at IoU 0.5, percent; NaN when the class has no (non-difficult) ground truth
    ap_07: float  # 11-point VOC2007 AP, percent; NaN likewise
    n_gt: int  # non-difficult ground-truth boxes: recall's denominator
    n_det: int  # detections predicted as this class (all scores)


@dataclass
class DetectionScores:
    """VOC mAP50 (all-point and 11-point, percent) over the classes with ground truth; the COCO numbers
    (percent) are None when not computed or undefined (e.g. ``coco_map_small`` without small objects)."""

    map50: float
    map50_07: float
    per_class: list[ClassAP]
    n_images: int
    coco_map: float | None = None  # AP@[.5:.95], 100 detections per image and class
    coco_map50: float | None = None  # 101-point interpolation, COCO matching: close to, not equal to, map50
    coco_map75: float | None = None
    coco_map_small: float | None = None  # area < 32^2 pixels
    coco_map_medium: float | None = None
    coco_map_large: float | None = None  # area > 96^2 pixels

    @property
    def n_classes_with_gt(self) -> int:
        return sum(c.n_gt > 0 for c in self.per_class)

    def as_row(self, prefix: str = "val_") -> dict[str, float | None]:
        """The metrics.jsonl fields (percent, 4 decimals; None where undefined, never NaN, which JSON lacks):
        ``val_map50`` (all-point), ``val_map50_07`` (11-point) and, when COCO was computed, ``val_map``
        (AP@[.5:.95]), ``val_map50_coco``, ``val_map75_coco``, ``val_map_small/medium/large``."""
        row = {prefix + k: _round(v) for k, v in zip(VOC_KEYS, (self.map50, self.map50_07))}
        if self.coco_map is not None:
            row.update({prefix + k: _round(getattr(self, f)) for k, f in zip(COCO_KEYS, _COCO_FIELDS)})
        return row

    def table(self) -> str:
        """Per-class AP (all-point and 11-point), GT and detection counts in class order, then the means."""
        names = [printable(c.name) for c in self.per_class]
        width = min(max([len(n) for n in names] + [5]), 40)
        lines = [f"{'class':<{width}}  AP50(all)  AP50(07)      GT    dets"]
        for name, c in zip(names, self.per_class):
            name = name if len(name) <= width else name[: width - 1] + "~"
            ap, ap07 = (f"{c.ap:9.2f}", f"{c.ap_07:8.2f}") if c.n_gt else (f"{'-':>9}", f"{'-':>8}")
            lines.append(f"{name:<{width}}  {ap}  {ap07}  {c.n_gt:6d}  {c.n_det:6d}")
        k, with_gt = len(self.per_class), self.n_classes_with_gt
        if with_gt < k:
            lines.append(f"({k - with_gt} of the {k} classes have no ground truth here: AP undefined, left out of mAP)")
        if with_gt:
            lines.append(
                f"mAP50 {self.map50:.2f} (all-point, VOC2010+)  {self.map50_07:.2f} (11-point, VOC2007)  "
                f"over {with_gt} classes, {self.n_images} images"
            )
        else:
            lines.append(f"no ground truth in the {self.n_images} images: mAP undefined")
        if self.coco_map is not None:
            lines.append(
                f"COCO mAP@[.5:.95] {_fmt(self.coco_map)}  AP50 {_fmt(self.coco_map50)}  AP75 {_fmt(self.coco_map75)}"
                f"  small/medium/large {_fmt(self.coco_map_small)}/{_fmt(self.coco_map_medium)}/"
                f"{_fmt(self.coco_map_large)}"
            )
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> None:
        """``label,class,ap50,ap50_07,n_gt,n_det`` per class (AP in percent, empty where undefined), atomically;
        class names escaped so no cell starts a spreadsheet formula."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["label", "class", "ap50", "ap50_07", "n_gt", "n_det"])
        for i, c in enumerate(self.per_class, start=1):
            w.writerow([i, csv_cell(c.name), _cell(c.ap), _cell(c.ap_07), c.n_gt, c.n_det])
        atomic_write_bytes(path, buf.getvalue().encode())


def _round(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 4)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _cell(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


def box_iou(a: Any, b: Any) -> np.ndarray:
    """[M, N] IoU of xyxy boxes as continuous coordinates: area (x2 - x1) * (y2 - y1), no VOC "+1 pixel".
    Our boxes are already continuous (converted from VOC's 1-based inclusive corners), so the plain formula
    is the right one. Degenerate boxes have area 0 and IoU 0."""
    # The VOC devkit counts inclusive integer pixels, adding 1 to widths and heights: that nudges IoUs of
    # small boxes near 0.5 across the threshold, so its AP can differ from ours by a little.
    a, b = _boxes(a, "boxes"), _boxes(b, "boxes")
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def voc_ap(recall: Any, precision: Any, eleven_point: bool = False) -> float:
    """AP (a fraction) of a ranked list's recall/precision after each detection, in rank order.

    All-point (VOC2010+): the area under the precision envelope, env(r) = the best precision at any recall
    >= r, i.e. the sum over recall steps of the step times env at its new recall. 11-point (VOC2007 devkit):
    the mean over r = 0, 0.1, ..., 1 of env(r), 0 beyond the highest recall reached."""
    r = np.asarray(recall, dtype=np.float64).reshape(-1)
    p = np.asarray(precision, dtype=np.float64).reshape(-1)
    if r.shape != p.shape:
        raise ParameterError("precision", f"`recall` and `precision` differ in length ({r.size} vs {p.size})")
    if r.size == 0:
        return 0.0
    env = np.maximum.accumulate(p[::-1])[::-1]  # env[i]: the best precision from rank i on
    if eleven_point:
        # k / 10, not np.arange(0, 1.1, 0.1): 3 * 0.1 > 0.3 would drop a recall of exactly 0.3
        return float(np.mean([env[r >= k / 10].max(initial=0.0) for k in range(11)]))
    steps = np.diff(r, prepend=0.0)  # > 0 only where a true positive raises recall
    return float(np.sum(steps * env))


def _array(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, wherever it lives; torch itself is never imported here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _boxes(x: Any, param: str) -> np.ndarray:
    a = _array(x, np.float64)
    if a.size == 0:
        return a.reshape(0, 4)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ParameterError(param, f"`{param}` boxes must be [N, 4] xyxy, not shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ParameterError(param, f"`{param}` boxes hold NaN or infinite coordinates")
    return a


def _labels(x: Any, n: int, k: int, param: str) -> np.ndarray:
    a = _array(x, np.float64).reshape(-1)
    if a.size != n:
        raise ParameterError(param, f"`{param}` has {n} boxes but {a.size} labels")
    if a.size and (not np.array_equal(a, np.round(a)) or a.min() < 1 or a.max() > k):
        raise ParameterError(param, f"`{param}` labels must be integers in 1..{k} (0 is the background)")
    return a.astype(np.int64)


def _match(boxes: np.ndarray, gt: np.ndarray, difficult: np.ndarray, thr: float) -> np.ndarray:
    """Outcome per detection (given in descending score order) of one class in one image, by the VOC devkit
    rule: each detection is judged against its best-overlapping ground truth of any kind; IoU >= ``thr`` with
    a difficult box: ignored (neither TP nor FP, duplicates included); with an unclaimed box: TP, claiming
    it; with a claimed one: FP (a duplicate), even if another box would do (COCO moves on to the next best).
    Below ``thr``: FP. (>= as the MATLAB devkit and COCO; some Python ports use >.)"""
    out = np.full(len(boxes), _FP, dtype=np.int8)
    if len(gt) == 0 or len(boxes) == 0:
        return out
    iou = box_iou(boxes, gt)
    best = iou.argmax(axis=1)
    claimed = np.zeros(len(gt), dtype=bool)
    for i, g in enumerate(best):
        if iou[i, g] < thr:
            continue
        if difficult[g]:
            out[i] = _IGNORED
        elif not claimed[g]:
            claimed[g] = True
            out[i] = _TP
    return out


class DetectionMeter:
    """Accumulates detections and ground truth image by image; ``compute`` gives the VOC APs (and COCO's
    with ``coco=True``, which keeps every box until then and needs pycocotools, checked here, not at the
    end of a long evaluation). ``class_names[i]`` names label ``i + 1``: the K object classes, no background."""

    def __init__(self, class_names: Sequence[str], coco: bool = False):
        names = [str(n) for n in class_names]
        if not names:
            raise ParameterError("class_names", "`class_names` is empty: give the names of labels 1..K")
        if names[0].strip().lower() in ("__background__", "background"):
            raise ParameterError(
                "class_names", "`class_names` starts with the background: give the K object classes for labels 1..K"
            )
        if coco:
            require("pycocotools.cocoeval", "COCO mAP", DETECTION_HINT)
        self.class_names, self.coco = names, coco
        self.reset()

    def reset(self) -> None:
        """Forget every image (a new epoch's evaluation)."""
        self.n_images = 0
        self._n_gt = np.zeros(len(self.class_names) + 1, dtype=np.int64)  # non-difficult, by label
        self._gt_per_image: list[np.ndarray] = []  # per image: its non-difficult boxes by label (``outcomes``)
        self._labels: list[np.ndarray] = []  # per image: each detection's label, score and outcome
        self._scores: list[np.ndarray] = []
        self._outcomes: list[np.ndarray] = []
        self._images: list[tuple[np.ndarray, ...]] = []  # COCO only: the boxes themselves

    def merge(self, other: DetectionMeter) -> None:
        """Add another meter's images (another process's shard of the same evaluation)."""
        if other.class_names != self.class_names:
            raise ParameterError("other", "`other` counts other classes; merge meters of the same evaluation")
        self.n_images += other.n_images
        self._n_gt += other._n_gt
        self._gt_per_image += other._gt_per_image
        self._labels += other._labels
        self._scores += other._scores
        self._outcomes += other._outcomes
        self._images += other._images

    def update(self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add a batch: ``preds[i]`` has ``boxes`` [M, 4] xyxy, ``scores`` [M], ``labels`` [M] in 1..K;
        ``targets[i]`` has ``boxes`` [N, 4], ``labels`` [N] and optionally ``difficult`` [N] (else
        ``iscrowd``, else none). Boxes in the same pixel frame, numpy or torch, any device."""
        if len(preds) != len(targets):
            raise ParameterError("preds", f"{len(preds)} `preds` for {len(targets)} `targets`: give one per image")
        for pred, target in zip(preds, targets):
            self._add(pred, target)

    def _add(self, pred: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        k = len(self.class_names)
        needs = ((pred, "preds", ("boxes", "scores", "labels")), (target, "targets", ("boxes", "labels")))
        for d, param, keys in needs:
            missing = [key for key in keys if key not in d]
            if missing:
                raise ParameterError(param, f"each of `{param}` needs {', '.join(keys)} (missing {', '.join(missing)})")
        boxes = _boxes(pred["boxes"], "preds")
        scores = _array(pred["scores"], np.float64).reshape(-1)
        if scores.size != len(boxes) or not np.isfinite(scores).all():
            raise ParameterError("preds", f"`preds` needs one finite score per box ({len(boxes)} boxes)")
        labels = _labels(pred["labels"], len(boxes), k, "preds")
        gt = _boxes(target["boxes"], "targets")
        gt_labels = _labels(target["labels"], len(gt), k, "targets")
        flag = target.get("difficult", target.get("iscrowd"))
        difficult = np.zeros(len(gt), dtype=bool) if flag is None else _array(flag, bool).reshape(-1)
        if difficult.size != len(gt):
            raise ParameterError("targets", f"`targets` has {len(gt)} boxes but {difficult.size} difficult flags")

        order = np.lexsort((-scores, labels))  # by class, best score first; stable, like COCO's mergesort
        outcomes = np.empty(len(order), dtype=np.int8)
        for c in np.unique(labels):
            at = order[labels[order] == c]
            g = gt_labels == c
            outcomes[labels[order] == c] = _match(boxes[at], gt[g], difficult[g], VOC_IOU)
        self._labels.append(labels[order])
        self._scores.append(scores[order])
        self._outcomes.append(outcomes)
        gt_counts = np.bincount(gt_labels[~difficult], minlength=k + 1)
        self._n_gt += gt_counts
        self._gt_per_image.append(gt_counts[1:].astype(np.int32))
        if self.coco:
            self._images.append((boxes, scores, labels, gt, gt_labels, difficult))
        self.n_images += 1

    def compute(self) -> DetectionScores:
        """VOC AP per class (NaN without ground truth) and the mean over the classes that have some; COCO's
        summary when asked for."""
        if self.n_images == 0:
            raise ValueError("no images were added to the DetectionMeter: nothing to score")
        labels, scores, outcomes = (np.concatenate(x) for x in (self._labels, self._scores, self._outcomes))
        per_class = []
        for c, name in enumerate(self.class_names, start=1):
            n_gt, mine = int(self._n_gt[c]), labels == c
            ap = ap07 = math.nan
            if n_gt:
                # images in arrival order, each best first; a stable sort keeps that order among equal scores
                ranked = outcomes[mine][np.argsort(-scores[mine], kind="stable")]
                ranked = ranked[ranked != _IGNORED]
                tp = np.cumsum(ranked == _TP)
                recall, precision = tp / n_gt, tp / np.arange(1, len(ranked) + 1)
                ap, ap07 = 100 * voc_ap(recall, precision), 100 * voc_ap(recall, precision, eleven_point=True)
            per_class.append(ClassAP(name, ap, ap07, n_gt, int(mine.sum())))
        defined = [c for c in per_class if c.n_gt]
        mean = lambda xs: float(np.mean(xs)) if xs else math.nan
        result = DetectionScores(
            mean([c.ap for c in defined]), mean([c.ap_07 for c in defined]), per_class, self.n_images
        )
        if self.coco:
            stats = coco_eval(self._images, len(self.class_names)).stats
            for i, f in enumerate(_COCO_FIELDS):
                setattr(result, f, None if stats[i] < 0 else 100 * float(stats[i]))
        return result

    def outcomes(self) -> ImageOutcomes:
        """Every image's detections as VOC matching judged them, in arrival order, for ``ImageOutcomes.map50``
        over any weighting of the images (a bootstrap over images recomputes mAP without the model)."""
        if self.n_images == 0:
            raise ValueError("no images were added to the DetectionMeter: no outcomes")
        image = np.concatenate([np.full(len(x), i, dtype=np.int32) for i, x in enumerate(self._labels)])
        labels, scores, outcomes = (np.concatenate(x) for x in (self._labels, self._scores, self._outcomes))
        kept = outcomes != _IGNORED  # neither TP nor FP: they never move precision or recall
        return ImageOutcomes(
            np.stack(self._gt_per_image), image[kept], labels[kept].astype(np.int32), scores[kept],
            outcomes[kept] == _TP,
        )  # fmt: skip


def detection_scores(
    preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], class_names: Sequence[str],
    coco: bool = False,
) -> DetectionScores:  # fmt: skip
    """``DetectionMeter`` in one call, for predictions already in memory."""
    meter = DetectionMeter(class_names, coco=coco)
    meter.update(preds, targets)
    return meter.compute()
