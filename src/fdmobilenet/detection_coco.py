"""COCO mAP@[.5:.95] through pycocotools, apart from ``detection_metrics``'s VOC AP, which needs numpy only:
pycocotools is the optional ``detection`` extra, loaded here when a ``DetectionMeter(coco=True)`` is scored.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._utils import require

DETECTION_HINT = 'pip install "fdmobilenet[detection]"'


def coco_eval(
    images: Sequence[tuple[np.ndarray, ...]], n_classes: int, iou_thrs: Sequence[float] | None = None,
    max_dets: int | None = None,
) -> Any:  # fmt: skip
    """pycocotools' COCOeval, evaluated, accumulated and summarised (its printing swallowed), over
    ``images`` (boxes, scores, labels, gt boxes, gt labels, difficult). Difficult boxes become ``iscrowd``,
    COCO's ignore regions: never a miss, and detections on them neither TP nor FP (COCO measures their
    overlap as intersection over the detection's area). ``iou_thrs`` / ``max_dets`` override COCO's
    defaults (tests compare its AP50 with ours); ids start at 1 since COCOeval reads 0 as "unmatched"."""
    cocoeval = require("pycocotools.cocoeval", "COCO mAP", DETECTION_HINT)
    coco_mod = require("pycocotools.coco", "COCO mAP", DETECTION_HINT)

    def xywh(b: np.ndarray) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    imgs = [{"id": i} for i in range(1, len(images) + 1)]
    cats = [{"id": c, "name": str(c)} for c in range(1, n_classes + 1)]
    gts, dts = [], []
    for img_id, (boxes, scores, labels, gt, gt_labels, difficult) in enumerate(images, start=1):
        for b, c, d in zip(gt, gt_labels, difficult):
            box = xywh(b)
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": int(c), "bbox": box,
                        "area": box[2] * box[3], "iscrowd": int(d)})  # fmt: skip
        for b, s, c in zip(boxes, scores, labels):
            box = xywh(b)
            dts.append({"id": len(dts) + 1, "image_id": img_id, "category_id": int(c), "bbox": box,
                        "area": box[2] * box[3], "score": float(s), "iscrowd": 0})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = coco_mod.COCO(), coco_mod.COCO()  # built in memory, not via loadRes (fails on no dets)
        coco_gt.dataset = {"images": imgs, "categories": cats, "annotations": gts}
        coco_dt.dataset = {"images": imgs, "categories": cats, "annotations": dts}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = cocoeval.COCOeval(coco_gt, coco_dt, "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        if max_dets is not None:
            ev.params.maxDets = [max_dets] * 3
        ev.evaluate()
        ev.accumulate()
        if iou_thrs is None and max_dets is None:
            ev.summarize()
    return ev
