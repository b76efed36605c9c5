"""Is the exported file the model it came from? Its logits against PyTorch's, on random and real inputs;
a detector's detections after NMS (and its raw outputs, where the file has them) against PyTorch's.

A deployment format that silently changes the predictions is worse than none, so ``export``
reports success only after this check; an fp32 export must match within float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class Agreement:
    """How closely a deployed model reproduces the PyTorch logits."""

    max_abs_diff_random: float
    max_abs_diff_real: float | None = None
    top1_agreement_real: float | None = None  # percent of real images with the same top-1 class
    n_real: int = 0
    logit_scale: float = 0.0  # largest |logit| seen, to judge the differences against

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    def __str__(self) -> str:
        s = f"max |logit diff| {self.max_abs_diff_random:.2e} on random input"
        if self.n_real:
            s += (
                f", {self.max_abs_diff_real:.2e} on {self.n_real} real images "
                f"(top-1 agreement {self.top1_agreement_real:.1f}%)"
            )
        else:
            s += "; no real images checked (pass `verify_data` DIR)"
        return s + f"; logits up to {self.logit_scale:.1f}"


def float_tolerance(logit_scale: float) -> float:
    """Largest logit difference an fp32 export may show: reordered float sums plus folded BatchNorm."""
    return 1e-4 + 2e-5 * logit_scale


@torch.no_grad()
def measure_agreement(
    reference: nn.Module,
    deployed: Callable[[torch.Tensor], Any],
    real: torch.Tensor | None,
    seed: int = 0,
    resolution: int = 224,
) -> Agreement:
    """Logits of ``deployed`` (any callable on an NCHW float tensor) against ``reference``."""
    reference = reference.eval()
    g = torch.Generator().manual_seed(seed)
    rnd = torch.randn(3, 3, resolution, resolution, generator=g)  # batch 3: the exports were traced at 2
    ref, out = reference(rnd), torch.as_tensor(np.asarray(deployed(rnd)))
    res = Agreement(float((ref - out).abs().max()), logit_scale=float(ref.abs().max()))
    if real is not None and len(real):
        ref, out = reference(real), torch.as_tensor(np.asarray(deployed(real)))
        res.max_abs_diff_real = float((ref - out).abs().max())
        res.top1_agreement_real = 100.0 * float((ref.argmax(1) == out.argmax(1)).float().mean())
        res.n_real = len(real)
        res.logit_scale = max(res.logit_scale, float(ref.abs().max()))
    return res


def check_float_agreement(a: Agreement, what: str) -> None:
    """Raise if an fp32 export's logits differ from PyTorch's beyond float rounding."""
    tol = float_tolerance(a.logit_scale)
    worst = max(a.max_abs_diff_random, a.max_abs_diff_real or 0.0)
    if not np.isfinite(worst) or worst > tol:
        raise ValueError(
            f"{what} disagrees with the PyTorch model: max |logit diff| {worst:.3g} > tolerance {tol:.3g}. "
            "The file was written but should not be used; please report this with the model name and versions."
        )


# --- detectors ----------------------------------------------------------------------------------------------


@dataclass
class DetectionAgreement:
    """How closely an exported detector reproduces the PyTorch one, after NMS: every PyTorch detection scoring
    at least ``min_score`` must be found in the export (same label, IoU >= 0.99, score within 1e-3)."""

    n_images: int
    n_reference: int  # PyTorch detections scoring >= min_score
    matched: int
    max_score_diff: float  # over the matched detections
    max_box_diff: float  # pixels, over the matched detections
    max_raw_diff: float | None = None  # raw outputs (bbox_regression, cls_logits) where the file has them
    raw_scale: float = 0.0
    min_score: float = 0.05

    @property
    def agreement(self) -> float:
        return 100.0 * self.matched / self.n_reference if self.n_reference else 100.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        return {**d, "detection_agreement": round(self.agreement, 2)}

    def __str__(self) -> str:
        s = (
            f"{self.matched}/{self.n_reference} PyTorch detections (score >= {self.min_score}) found on "
            f"{self.n_images} images, max |score diff| {self.max_score_diff:.1e}, max |box diff| "
            f"{self.max_box_diff:.2e} px"
        )
        if self.max_raw_diff is not None:
            s += f"; raw outputs max |diff| {self.max_raw_diff:.1e} (values up to {self.raw_scale:.3g})"
        return s


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a, b) if len(a) and len(b) else torch.zeros(len(a), len(b))


@torch.no_grad()
def measure_detection_agreement(
    model: nn.Module, exported: Any, images: torch.Tensor, min_score: float = 0.05
) -> DetectionAgreement:
    """Detections (and raw outputs, where the file has them) of an exported detector (``deploy.detector``'s
    ``ExportedDetector``) against the PyTorch ``model`` on ``images`` ((N, 3, R, R) in [0, 1])."""
    model = model.eval()
    ref = model(list(images))
    got = exported(list(images))
    limit = int(exported.meta["detections_per_img"]) - 10  # the last places may swap on rounding: not compared
    n_ref = matched = 0
    score_diff = box_diff = 0.0
    for r, g in zip(ref, got):
        sel = (r["scores"] >= min_score).nonzero().flatten()
        sel = sel[sel < limit]
        n_ref += len(sel)
        iou = _iou(r["boxes"][sel], g["boxes"])
        for j, k in enumerate(sel.tolist()):
            ok = (
                ((g["labels"] == r["labels"][k]) & (iou[j] >= 0.99) & ((g["scores"] - r["scores"][k]).abs() <= 1e-3))
                .nonzero()
                .flatten()
            )
            if len(ok):
                m = ok[0]
                matched += 1
                score_diff = max(score_diff, float((g["scores"][m] - r["scores"][k]).abs()))
                box_diff = max(box_diff, float((g["boxes"][m] - r["boxes"][k]).abs().max()))
    res = DetectionAgreement(len(images), n_ref, matched, score_diff, box_diff, min_score=min_score)
    if exported.mode == "none":
        x = images.numpy().astype(np.float32)
        raw = exported.run_raw(x)
        norm = (images - torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)) / torch.tensor(
            model.transform.image_std
        ).view(1, 3, 1, 1)
        want = model.forward_network(norm)
        pairs = [(want["bbox_regression"], raw[0]), (want["cls_logits"], raw[1])]
        res.max_raw_diff = max(float((w - torch.as_tensor(np.asarray(g))).abs().max()) for w, g in pairs)
        res.raw_scale = max(float(w.abs().max()) for w, _ in pairs)
    return res


def check_detection_agreement(a: DetectionAgreement, what: str) -> None:
    """Raise if an fp32 detector export loses PyTorch detections or its raw outputs differ beyond rounding."""
    problems = []
    if a.matched < a.n_reference:
        problems.append(f"only {a.matched} of {a.n_reference} PyTorch detections found")
    raw = a.max_raw_diff
    if raw is not None and not (math.isfinite(raw) and raw <= float_tolerance(a.raw_scale)):
        problems.append(f"raw outputs differ by {a.max_raw_diff:.3g}")
    if problems:
        raise ValueError(
            f"{what} disagrees with the PyTorch detector: {'; '.join(problems)}. The file was written but should "
            "not be used; please report this with the model name and versions."
        )
