"""Running an exported detector file (``deploy.detector`` writes them) with the PyTorch SSDLite's contract:
a list of float CHW images in [0, 1] -> one ``{"boxes", "scores", "labels"}`` per image. Kept apart from the
export (the traced graph, its NMS op, the writers) because opening a file needs none of that: ``OnnxDetector``
reads NMS's results off the graph's outputs or, like ``PteDetector``, runs torchvision's post-processing
(``postprocess_detections``) on the raw ones, with the settings the file's metadata carries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import boxes as box_ops

from .._errors import ParameterError

SETTINGS = ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates")


# --- post-processing outside the graph: torchvision's SSD, step for step ---------------------------------


def postprocess_detections(
    bbox_regression: Tensor, cls_logits: Tensor, anchors: Tensor, meta: dict[str, Any]
) -> list[dict[str, Tensor]]:
    """torchvision's ``SSD.postprocess_detections`` on raw outputs with the settings in ``meta``: per image,
    decode, clip to the R x R input, per class the scores above ``score_thresh`` (best ``topk_candidates``),
    per-class NMS, the best ``detections_per_img``. Boxes in input pixels."""
    r = int(meta["resolution"])
    coder = BoxCoder(weights=tuple(meta["box_coder_weights"]), bbox_xform_clip=float(meta["bbox_xform_clip"]))
    score_thresh, nms_thresh = float(meta["score_thresh"]), float(meta["nms_thresh"])
    topk, keep_n = int(meta["topk_candidates"]), int(meta["detections_per_img"])
    pred_scores = F.softmax(cls_logits, dim=-1)
    out = []
    for reg, scores in zip(bbox_regression, pred_scores):
        boxes = box_ops.clip_boxes_to_image(coder.decode_single(reg, anchors), (r, r))
        all_boxes, all_scores, all_labels = [], [], []
        for label in range(1, scores.shape[-1]):
            score = scores[:, label]
            keep = score > score_thresh
            score, box = score[keep], boxes[keep]
            score, idx = score.topk(min(topk, score.numel()))
            all_boxes.append(box[idx])
            all_scores.append(score)
            all_labels.append(torch.full_like(score, label, dtype=torch.int64))
        b, s, lab = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        keep = box_ops.batched_nms(b, s, lab, nms_thresh)[:keep_n]
        out.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
    return out


# --- runners ----------------------------------------------------------------------------------------------


def _as_images(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(images, Tensor):
        images = [images] if images.dim() == 3 else list(images.unbind(0))
    for img in images:
        if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            what = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"images must be float RGB tensors (3, H, W) in [0, 1], got {what} (uint8: divide by 255)")
    return list(images)


class ExportedDetector:
    """An exported detector with the PyTorch SSDLite's contract: ``model(images)`` on a list of float (3, H, W)
    images in [0, 1] (or an (N, 3, H, W) batch) -> per image ``{"boxes", "scores", "labels"}``, boxes xyxy in
    the image's pixels. Images not at R x R are resized as the SSD's transform does (bilinear) and their
    boxes scaled back. Subclasses provide ``run(x)``: detections of a float32 (N, 3, R, R) array."""

    meta: dict[str, Any]
    path: Path
    kind = "exported"

    def _check_meta(self, meta: dict[str, Any]) -> None:
        missing = [k for k in ("resolution", "num_classes", *SETTINGS) if k not in meta]
        if meta.get("task") != "detection" or missing:
            raise ValueError(f"{self.path}: not a detector exported by fdmobilenet (metadata lacks {missing})")
        self.meta = meta
        self.resolution = int(meta["resolution"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [str(i) for i in range(1, int(self.meta["num_classes"]) + 1)])

    def eval(self):
        return self

    def to(self, device: str | torch.device = "cpu"):
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.kind} detectors run on the CPU here, not {device}")
        return self

    def transform(self) -> Callable[[Any], Tensor]:
        """PIL image -> float (3, R, R) in [0, 1] (the detection eval transform)."""
        from ..data.detection import detection_eval_transform

        tf = detection_eval_transform(self.resolution)
        return lambda im: tf(im, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})[0]

    def run(self, x: np.ndarray) -> list[dict[str, Tensor]]:
        raise NotImplementedError

    def __call__(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        images = _as_images(images)
        if not images:
            return []
        r = self.resolution
        sizes = [tuple(img.shape[-2:]) for img in images]
        x = torch.stack(
            [
                img if s == (r, r) else F.interpolate(img[None], size=(r, r), mode="bilinear", align_corners=False)[0]
                for img, s in zip(images, sizes)
            ]
        )
        dets = self.run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32))
        for d, (h, w) in zip(dets, sizes):
            if (h, w) != (r, r):  # torchvision's resize_boxes: back to the image's own pixels
                d["boxes"] = d["boxes"] * torch.tensor([w / r, h / r, w / r, h / r], dtype=d["boxes"].dtype)
        return dets

    def runner(self, batch: int = 1) -> Callable[[], Any]:
        """A zero-argument call detecting on ``batch`` fixed images, post-processing included: what bench times."""
        x = np.random.default_rng(0).random((batch, 3, self.resolution, self.resolution), dtype=np.float32)
        return lambda: self.run(x)


def _graph_detections(boxes, scores, labels, counts) -> list[dict[str, Tensor]]:
    out = []
    for b, s, lab, n in zip(boxes, scores, labels, counts):
        n = int(n)
        out.append(
            {
                "boxes": torch.from_numpy(np.array(b[:n], np.float32)),
                "scores": torch.from_numpy(np.array(s[:n], np.float32)),
                "labels": torch.from_numpy(np.array(lab[:n], np.int64)),
            }
        )
    return out


class OnnxDetector(ExportedDetector):
    """An exported ONNX detector on ONNX Runtime: NMS in the graph, or (``postprocess: none``) in Python.
    ``loaded``: the ``OnnxClassifier`` that ``open_exported`` already opened the file with (its session)."""

    kind = "ONNX"

    def __init__(self, path: str | os.PathLike, backend: str = "ort", threads: int | None = None, loaded=None):
        if backend != "ort":
            raise ParameterError("backend", "exported detectors run on ONNX Runtime here: use `backend` ort")
        if loaded is None:
            from .runtime import OnnxClassifier

            loaded = OnnxClassifier(path, backend, threads)
        self.path, self.session = Path(path), loaded.session
        self._check_meta(loaded.meta)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.mode = self.meta.get("postprocess", "graph")

    def run_raw(self, x: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs on a float32 (N, 3, R, R) array in [0, 1]."""
        return self.session.run(self.output_names, {self.input_name: x})

    def run(self, x: np.ndarray) -> list[dict[str, Tensor]]:
        out = self.run_raw(x)
        if self.mode == "graph":
            return _graph_detections(*out)
        reg, logits, anchors = (torch.from_numpy(o) for o in out)
        return postprocess_detections(reg, logits, anchors, self.meta)


class PteDetector(ExportedDetector):
    """A detector ``.pte`` (the network on XNNPACK, batch 1, one image at a time) with the post-processing in
    Python. ``loaded``: the ``PteClassifier`` that ``open_exported`` already opened the file with."""

    kind = ".pte"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, loaded=None):
        if loaded is None:
            from .executorch import PteClassifier

            loaded = PteClassifier(path, threads)
        self.path, self._forward = Path(path), loaded._forward
        self._check_meta(loaded.meta)
        self.mode = "none"

    def run_raw(self, x: np.ndarray) -> list[Tensor]:
        outs = [self._forward.execute([torch.from_numpy(x[i : i + 1])]) for i in range(len(x))]
        return [torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs]), outs[0][2]]

    def run(self, x: np.ndarray) -> list[dict[str, Tensor]]:
        return postprocess_detections(*self.run_raw(x), self.meta)
