"""Does INT8 hold outside the photos it was calibrated on? Agreement with fp32, measured without labels.

INT8 calibrated (or fine-tuned) on photos of a few classes can keep top-1 on those classes and still
change the answer on everything else. The fp32 model is the reference: on photos of *other* classes this
measures how often the INT8 model names the same class (top-1 agreement) and how far its class
distribution moves (KL(fp32 || int8), nats, mean over photos). No labels are needed, so any photos do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def _logits(model: Callable[[torch.Tensor], Any], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.fx.GraphModule):
        model = model.eval()  # exported graphs refuse .eval(); they carry eval semantics already
    out = [torch.as_tensor(np.asarray(model(x[i : i + batch_size]))).float() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def _scores(ref: torch.Tensor, out: torch.Tensor) -> dict[str, Any]:
    n = len(ref)
    if n == 0:
        return {"n": 0, "agreement": math.nan, "kl": math.nan}
    log_p, log_q = F.log_softmax(ref, 1), F.log_softmax(out, 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return {
        "n": n,
        "agreement": round(100.0 * float((ref.argmax(1) == out.argmax(1)).float().mean()), 3),
        "kl": round(float(kl.mean()), 5),
    }


def int8_fidelity(
    fp32_model: Callable[[torch.Tensor], Any],
    int8_model: Callable[[torch.Tensor], Any],
    photos: torch.Tensor | Mapping[str, torch.Tensor],
    batch_size: int = 64,
) -> dict[str, Any]:
    """Top-1 agreement (%) and KL(fp32 || int8) of ``int8_model`` against ``fp32_model`` on ``photos``.

    Both models are callables on a preprocessed NCHW float batch returning logits (a ``torch.nn.Module``,
    an ``OnnxClassifier``, a ``PteClassifier``, a converted PT2E graph). ``photos`` is one tensor or a
    mapping ``{group name: tensor}`` (e.g. ``{"flowers": ..., "cifar": ...}``).

    Returns ``{"n", "agreement", "kl", "groups": {name: {"n", "agreement", "kl"}}}``: the totals pool every
    photo (a group of 300 weighs six times one of 50); a single tensor is the group ``"photos"``.
    Agreement is NaN for no photos. ``kl`` is in nats, averaged over photos; 0 means the same softmax.
    """
    groups = {"photos": photos} if isinstance(photos, torch.Tensor) else dict(photos)
    refs, outs, per = [], [], {}
    for name, x in groups.items():
        if x.ndim != 4:
            raise ValueError(f"photos {name!r}: expected an N x C x H x W batch, got shape {tuple(x.shape)}")
        ref, out = _logits(fp32_model, x, batch_size), _logits(int8_model, x, batch_size)
        if len(x) and ref.shape != out.shape:
            raise ValueError(f"photos {name!r}: fp32 logits {tuple(ref.shape)} but int8 logits {tuple(out.shape)}")
        per[name] = _scores(ref, out)
        refs.append(ref)
        outs.append(out)
    total = _scores(torch.cat(refs), torch.cat(outs)) if any(len(r) for r in refs) else _scores(*[torch.empty(0)] * 2)
    return {**total, "groups": per}


def fidelity_table(result: Mapping[str, Any], title: str = "INT8 vs fp32") -> str:
    """A few lines for a terminal: the pooled figures, then one row per group (``int8_fidelity``'s dict)."""
    lines = [f"{title}: agreement {result['agreement']:.1f} %, KL {result['kl']:.4f} on {result['n']} photos"]
    groups = result.get("groups", {})
    if len(groups) > 1 or (groups and next(iter(groups)) != "photos"):
        width = max(len(k) for k in groups)
        lines += [
            f"  {name:<{width}}  {g['n']:>5} photos  agreement {g['agreement']:5.1f} %  KL {g['kl']:.4f}"
            for name, g in groups.items()
        ]
    return "\n".join(lines)


def altered_photos(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Copies of preprocessed photos pushed away from what they show, for when no photos of other classes
    are at hand: each one blurred (down to 1/7 of the side and back up, like an upsampled thumbnail),
    zoomed into (a random quarter of it, enlarged) or blended half and half with another photo, in turn.

    They are *not* photos of other classes: they probe how INT8 behaves off the calibration photos' look,
    and agreement on them is a hint, not the figure on other classes (benchmarks/int8/fidelity.md compares
    the two). Works on normalized tensors: every alteration is linear in the pixels.
    """
    n, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            small = F.interpolate(x[i : i + 1], size=(max(1, h // 7), max(1, w // 7)), mode="bilinear", antialias=True)
            out.append(F.interpolate(small, size=(h, w), mode="bilinear")[0])
        elif kind == 1:
            ch, cw = max(1, h // 2), max(1, w // 2)
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            crop = x[i : i + 1, :, top : top + ch, left : left + cw]
            out.append(F.interpolate(crop, size=(h, w), mode="bilinear")[0])
        else:
            other = (i + 1 + int(torch.randint(0, max(1, n - 1), (1,), generator=g))) % n
            out.append(0.5 * (x[i] + x[other]))
    return torch.stack(out) if out else x[:0]
