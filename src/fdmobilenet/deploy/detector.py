"""Detectors (SSDLite) as deployment files: the traced graph, its post-processing, and runners.

An exported detector takes what the PyTorch one takes, a float32 RGB batch (N, 3, R, R) in [0, 1] at its
square input size (the normalisation is inside the graph), in one of two forms:

* ``postprocess="graph"`` (the default): box decoding, per-class top-k, per-class NMS (ONNX's
  ``NonMaxSuppression``) and the best ``detections_per_img`` are in the graph. Outputs ``boxes``
  (N, D, 4) xyxy in input pixels, ``scores`` (N, D), ``labels`` (N, D) int64 in 1..K and ``num_detections``
  (N,): the first ``num_detections[i]`` rows of image i are its detections, best first; the rest are zeros.
* ``postprocess="none"``: the network alone, outputs ``bbox_regression`` (N, A, 4), ``cls_logits``
  (N, A, K + 1) and ``anchors`` (A, 4, the default boxes in input pixels); ``postprocess_detections`` here
  decodes and runs torchvision's NMS exactly as the PyTorch SSD does. ``.pte`` files are always this form
  (ExecuTorch has no NMS kernel): the network is lowered to XNNPACK, the post-processing runs in Python.

The thresholds, anchor settings and box-coder weights travel in the file's metadata with the class names,
so ``ExportedDetector`` (``OnnxDetector``, ``PteDetector``; in ``detector_runner``, re-exported here) is a
detector with the PyTorch contract: a list of float CHW images in [0, 1] -> one ``{"boxes", "scores",
"labels"}`` per image.

Imports torch and torchvision (torchvision's NMS, and the custom op the ONNX NMS is traced through);
``pipeline`` imports this module only to export detectors, ``detector_runner`` to open their files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

from .._errors import ParameterError
from .._utils import atomic_write_bytes, require
from .detector_runner import (
    SETTINGS,
    ExportedDetector,
    OnnxDetector,
    PteDetector,
    postprocess_detections,  # noqa: F401 (re-exported: the runners moved to detector_runner)
)
from .fold import fold_batchnorm
from .metadata import export_metadata, set_onnx_metadata
from .verify import DetectionAgreement, check_detection_agreement, measure_detection_agreement

POSTPROCESS_MODES = ("graph", "none")
GRAPH_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
RAW_OUTPUTS = ("bbox_regression", "cls_logits", "anchors")
INPUT_NAME = "images"
ANCHOR_KEYS = ("anchor_aspect_ratios", "anchor_min_ratio", "anchor_max_ratio")
_FILL = -1.0  # the score of a candidate that is out (below every softmax score; thresholds are >= 0)


# --- the NMS the ONNX graph runs: a custom op, eager via torchvision, exported as NonMaxSuppression ---


@torch.library.custom_op("fdmobilenet::multiclass_nms", mutates_args=())
def multiclass_nms(
    boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
) -> Tensor:
    """ONNX ``NonMaxSuppression``: boxes (N, A, 4), scores (N, K, A) -> (M, 3) int64 rows (image, class, box):
    per image and class, the boxes scoring above ``score_threshold``, greedy NMS (IoU > ``iou_threshold``
    suppressed), at most ``max_per_class``. Eager through torchvision's ``nms``."""
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            idx = torch.nonzero(s > score_threshold).flatten()
            keep = idx[box_ops.nms(boxes[b, idx], s[idx], iou_threshold)[:max_per_class]]
            rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
    return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64)


@multiclass_nms.register_fake
def _(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float, score_threshold: float) -> Tensor:
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n, 3), dtype=torch.int64)


def _nms_translation():
    """``multiclass_nms`` in ONNX: one ``NonMaxSuppression`` node (corner boxes; IoU is the same for xyxy)."""
    from onnxscript import opset18 as op

    def nms(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        return op.NonMaxSuppression(
            boxes,
            scores,
            op.Constant(value_ints=[max_per_class]),
            op.Constant(value_floats=[iou_threshold]),
            op.Constant(value_floats=[score_threshold]),
            center_point_box=0,
        )

    return {torch.ops.fdmobilenet.multiclass_nms.default: nms}


# --- the traced module ---------------------------------------------------------------------------------


def default_boxes(model: nn.Module, resolution: int) -> Tensor:
    """The SSD's anchors at ``resolution`` (A, 4), xyxy in input pixels: what its ``anchor_generator`` makes."""
    x = torch.zeros(1, 3, resolution, resolution)
    with torch.no_grad():
        feats = list(model.backbone(x).values())
        return model.anchor_generator(ImageList(x, [(resolution, resolution)]), feats)[0].clone()


class _Clamp6(nn.Module):
    """ReLU6 as ``clamp(0, 6)``, the same values: ``hardtanh`` is decomposed op by op with symbolic shapes when
    exported (a third of a detector's export time), ``clamp`` is a core op that goes through as it is."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, 0.0, 6.0)


def _relu6_as_clamp(module: nn.Module) -> nn.Module:
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.ReLU6:
                setattr(parent, name, _Clamp6())
    return module


class DetectorGraph(nn.Module):
    """What is exported: normalise, the network (BatchNorm folded), and with ``postprocess`` the decoding and
    NMS, on a (N, 3, R, R) batch in [0, 1]. Outputs: ``GRAPH_OUTPUTS`` or ``RAW_OUTPUTS`` (module docstring)."""

    def __init__(self, model: nn.Module, resolution: int, postprocess: bool):
        super().__init__()
        folded = _relu6_as_clamp(fold_batchnorm(model))
        self.backbone, self.head = folded.backbone, folded.head
        self.register_buffer("mean", torch.tensor(model.transform.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.transform.image_std).view(1, 3, 1, 1))
        self.register_buffer("default_boxes", default_boxes(model, resolution))
        self.resolution, self.postprocess = int(resolution), postprocess
        self.box_coder = model.box_coder
        self.score_thresh, self.nms_thresh = float(model.score_thresh), float(model.nms_thresh)
        self.num_classes = int(model.num_classes)
        num_anchors = self.default_boxes.shape[0]
        self.topk = min(int(model.topk_candidates), num_anchors)
        self.detections = min(int(model.detections_per_img), num_anchors * self.num_classes)

    def network(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(list(self.backbone((x - self.mean) / self.std).values()))
        return out["bbox_regression"], out["cls_logits"]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        reg, logits = self.network(x)
        if not self.postprocess:
            return reg, logits, self.default_boxes.clone()
        n, a = reg.shape[0], self.default_boxes.shape[0]
        boxes = self.box_coder.decode_single(reg.reshape(-1, 4), self.default_boxes.repeat(n, 1)).reshape(n, a, 4)
        boxes = boxes.clamp(min=0.0, max=float(self.resolution))
        scores = F.softmax(logits, dim=-1)[:, :, 1:].transpose(1, 2)  # (N, K, A), background dropped
        # per class, the topk_candidates best anchors (torchvision: threshold, then top-k: the same set)
        top, idx = scores.topk(self.topk, dim=2)
        cand = torch.full_like(scores, _FILL).scatter(2, idx, top)
        sel = torch.ops.fdmobilenet.multiclass_nms(boxes, cand, self.detections, self.nms_thresh, self.score_thresh)
        b, c, i = sel[:, 0], sel[:, 1], sel[:, 2]
        kept = torch.full_like(scores, _FILL).index_put((b, c, i), cand[b, c, i])
        best, flat = kept.reshape(n, -1).topk(self.detections, dim=1)  # the best D of every class, in order
        valid = best >= 0
        labels = torch.where(valid, flat // a + 1, torch.zeros_like(flat))
        out = boxes.gather(1, (flat % a).unsqueeze(-1).expand(-1, -1, 4))
        out = torch.where(valid.unsqueeze(-1), out, torch.zeros_like(out))
        return out, torch.where(valid, best, torch.zeros_like(best)), labels, valid.sum(1)


# --- metadata --------------------------------------------------------------------------------------------


def detector_export_metadata(meta: dict[str, Any], resolution: int, model: nn.Module, mode: str) -> dict[str, Any]:
    """The classifier export metadata (preprocessing, classes, MACs) plus what running the detector needs."""
    k = int(model.num_classes)
    names = meta.get("class_names") or [str(i) for i in range(1, k + 1)]  # label i is names[i - 1]
    full = export_metadata({**meta, "num_classes": k, "class_names": names}, resolution, model)
    full.pop("crop_pct", None)  # a detector resizes to R x R, no crop
    full.update(
        task="detection",
        postprocess=mode,
        input=f"float32 RGB (N, 3, {resolution}, {resolution}) in [0, 1]; normalised inside the graph",
        outputs=list(GRAPH_OUTPUTS if mode == "graph" else RAW_OUTPUTS),
        **{k: getattr(model, k) for k in SETTINGS},
        num_anchors=int(default_boxes(model, resolution).shape[0]),
        **{k: meta[k] for k in ANCHOR_KEYS if k in meta},
        box_coder_weights=list(model.box_coder.weights),
        bbox_xform_clip=float(model.box_coder.bbox_xform_clip),
    )
    return full


def check_mode(mode: str) -> None:
    if mode not in POSTPROCESS_MODES:
        raise ParameterError("postprocess", f"`postprocess` must be graph or none, got {mode!r}")


# --- export ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_logger(name: str):
    """onnx_ir warns about what is fine here (an initializer that is an output: the anchors)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_detector_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    meta: dict[str, Any],
    resolution: int,
    mode: str = "graph",
    opset: int = 18,
) -> dict[str, Any]:
    """Write a detector as ONNX (dynamic batch) with NMS in the graph (``mode="graph"``) or raw outputs."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch.onnx's exporter)")
    check_mode(mode)
    if opset != 18:
        raise ParameterError("opset", "`opset`: detectors are exported at opset 18 only (NonMaxSuppression, TopK)")
    graph = DetectorGraph(model, resolution, mode == "graph").eval()
    names = GRAPH_OUTPUTS if mode == "graph" else RAW_OUTPUTS
    batch = torch.export.Dim("batch", min=1, max=1024)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), _quiet_logger("onnx_ir"), torch.no_grad():
            prog = torch.onnx.export(
                graph,
                (torch.rand(2, 3, resolution, resolution),),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(names),
                opset_version=18,
                dynamic_shapes={"x": {0: batch}},
                custom_translation_table=_nms_translation() if mode == "graph" else None,
                external_data=False,
                optimize=True,
            )
    except Exception:
        sys.stderr.write(log.getvalue())
        raise
    proto = prog.model_proto
    full = detector_export_metadata(meta, resolution, model, mode)
    full["opset"] = 18
    set_onnx_metadata(proto, full)
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return full


def export_detector_pte(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int) -> dict:
    """An fp32 ``.pte`` of the network (normalisation included, batch 1) lowered to XNNPACK; the decoding and
    NMS stay in Python (``PteDetector``): ExecuTorch has no NMS kernel."""
    from .executorch import lower_to_pte

    graph = DetectorGraph(model, resolution, postprocess=False).eval()
    full = detector_export_metadata(meta, resolution, model, "none")
    with torch.no_grad():
        program = torch.export.export(graph, (torch.rand(1, 3, resolution, resolution),))
    lower_to_pte(program, path, full)
    return full


# --- the export check --------------------------------------------------------------------------------------


def detection_images(paths: Sequence[Path], resolution: int) -> Tensor:
    """Photos as a detector's input: (N, 3, R, R) float in [0, 1] (the detection eval transform; unreadable
    ones skipped)."""
    from ..data.detection import detection_eval_transform
    from ..data.images import BadImageError, load_image

    tf = detection_eval_transform(resolution)
    out = []
    for p in paths:
        with contextlib.suppress(BadImageError, OSError, ValueError):
            out.append(tf(load_image(p), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})[0])
    return torch.stack(out) if out else torch.zeros(0, 3, resolution, resolution)


def export_detector(
    model: nn.Module, meta: dict[str, Any], out: Path, fmt: str, res: int, c: Any
) -> tuple[str, str, dict[str, Any], DetectionAgreement]:
    """``export_weights`` for a detector: the file (fp32 .onnx or .pte) checked against PyTorch on 2 random
    images and ``c.verify_size`` photos of ``c.verify_data``; (path, format, metadata, agreement)."""
    if c.int8:
        raise ParameterError("int8", "`int8` is not available for detectors yet; export them in fp32 (drop `int8`)")
    if fmt not in ("onnx", "executorch"):
        raise ParameterError("output", f"`output`: detectors export to .onnx or .pte, not {fmt}")
    mode = c.postprocess or ("graph" if fmt == "onnx" else "none")
    if fmt == "executorch" and mode == "graph":
        raise ParameterError(
            "postprocess", "`postprocess` graph: a .pte keeps NMS in Python (ExecuTorch has no NMS kernel); use none"
        )
    from .samples import image_paths

    images = torch.rand(2, 3, res, res, generator=torch.Generator().manual_seed(0))
    if c.verify_data:
        images = torch.cat([images, detection_images(image_paths(c.verify_data, c.verify_size, seed=1), res)])
    if fmt == "onnx":
        written = export_detector_onnx(model, out, meta, res, mode, c.opset)
        runner: ExportedDetector = OnnxDetector(out)
    else:
        written = export_detector_pte(model, out, meta, res)
        runner = PteDetector(out)
    agreement = measure_detection_agreement(model, runner, images)
    check_detection_agreement(agreement, str(out))
    return str(out), f"{fmt}-fp32", written, agreement
