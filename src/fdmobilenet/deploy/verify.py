"""Is the exported file the model it came from? Its logits against PyTorch's, on random and real inputs.

A deployment format that silently changes the predictions is worse than none, so ``export``
reports success only after this check; an fp32 export must match within float rounding.
"""

from __future__ import annotations

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
