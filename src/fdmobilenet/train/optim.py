"""The network being trained, its optimizer and its learning-rate schedule.

The learning rate is a pure function of the optimizer step (``lr_at``), so a checkpoint only needs
the step to continue the schedule exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .._errors import ParameterError
from ..complexity import profile
from ..models import create_model
from ..preprocess import imagenet_rows
from ..weights import load_weights, read_weights
from .config import WARMUP_MAX_FRACTION, TrainConfig


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The architecture settings beyond the name (written to the weights, so they rebuild the model)."""
    return {k: v for k, v in (("width", cfg.width), ("groups", cfg.groups)) if v is not None}


def step_memory(cfg: TrainConfig, num_classes: int, batch: int) -> tuple[int, int]:
    """(bytes of weights, gradients and optimizer/EMA state; bytes of the activations a forward pass of
    ``batch`` images keeps for backward): a lower bound, measured on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = create_model(cfg.model, num_classes=num_classes, resolution=cfg.resolution, **model_kwargs(cfg))
    prof = profile(model, cfg.resolution)
    copies = 3 + (cfg.ema_decay > 0)  # weights, gradients, momentum (+ EMA)
    return prof.params * 4 * copies, sum(math.prod(layer.out_shape) for layer in prof.layers) * 4 * batch


def available_memory(device: torch.device) -> int:
    """Bytes free for a run on ``device``: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(cfg: TrainConfig, num_classes: int, batch: int, device: torch.device) -> None:
    """Refuse a run whose first step cannot fit (``resolution=100000``, ``width=1000`` were killed by
    the kernel's OOM killer), with the estimate and what to change."""
    state, acts = step_memory(cfg, num_classes, batch)
    free = available_memory(device)
    if state + acts > free:
        gib = 2**30
        raise ParameterError(
            "batch_size",
            f"`resolution` {cfg.resolution}, `width` {cfg.width or 'of ' + cfg.model}: one training step needs at "
            f"least {(state + acts) / gib:,.1f} GiB ({state / gib:,.1f} GiB weights and optimizer state, "
            f"{acts / gib:,.1f} GiB activations of {batch} images) but {device.type} has {free / gib:,.1f} GiB "
            "available; lower `resolution`, `width` or `batch_size`",
        )


def build_model(
    cfg: TrainConfig, classes: list[str], log: Callable[..., None], load_pretrained: bool = True
) -> nn.Module:
    """``cfg.model`` for ``classes``, from ``cfg.pretrained`` weights unless a checkpoint will replace them.

    The pretrained classifier is kept only when it was trained on the same classes.
    """
    kw = model_kwargs(cfg)
    if cfg.dropout:
        kw["dropout"] = cfg.dropout
    model = create_model(cfg.model, num_classes=len(classes), resolution=cfg.resolution, **kw)
    if cfg.pretrained and load_pretrained:
        sd, meta = read_weights(cfg.pretrained)  # the classifier's key is the same in the authors' files
        same_head = sd.get("classifier.weight", torch.empty(0)).shape[:1] == (len(classes),)
        same_names = meta.get("class_names") in (None, classes)
        load_weights(model, cfg.pretrained, strict_classifier=False)
        rows = imagenet_rows(classes) if sd.get("classifier.weight", torch.empty(0)).shape[:1] == (1000,) else None
        if same_head and same_names:
            log(f"loaded {cfg.pretrained} (classifier included)")
        elif rows is not None and hasattr(model, "get_classifier"):
            _head_from_rows(model, sd, rows)
            log(f"loaded {cfg.pretrained}; classifier from its rows of the {len(classes)} ImageNet classes present")
        else:
            model.reset_classifier(len(classes))
            log(f"loaded {cfg.pretrained}; classifier re-initialised for {len(classes)} classes")
    if cfg.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
    return model


def _head_from_rows(model: nn.Module, sd: dict[str, torch.Tensor], rows: list[int]) -> None:
    """Start a head of a few ImageNet classes from those classes' rows of a 1000-way classifier: the
    fine-tuned model predicts them from the first step instead of from a random head."""
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.copy_(sd["classifier.weight"][rows].reshape(head.weight.shape))
        if head.bias is not None and "classifier.bias" in sd:
            head.bias.copy_(sd["classifier.bias"][rows])


@dataclass
class Parts:
    """What training updates, and what a checkpoint saves besides the counters."""

    model: nn.Module  # the raw model (not DDP-wrapped or compiled)
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def build_parts(
    cfg: TrainConfig, model: nn.Module, device: torch.device, channels_last: bool, lr: float, amp: str
) -> Parts:
    """``model`` (the task's, initialised from the global RNG) on ``device``, its EMA, the optimizer and the scaler."""
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ema = None
    if cfg.ema_decay > 0:
        avg = ema_warmup_avg_fn(cfg.ema_decay) if cfg.ema_warmup else get_ema_multi_avg_fn(cfg.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=avg, use_buffers=True)
    optimizer = build_optimizer(cfg, model, lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return Parts(model, ema, optimizer, scaler)


def ema_warmup_avg_fn(decay: float) -> Callable[..., None]:
    """EMA update whose decay ramps as min(decay, (1 + n) / (10 + n)) with the update count n (timm's
    warm-up): at 0.9998 a fixed decay leaves a 200-step run's average ~96 % initialisation."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(ema_params[0]):  # one call per dtype group; lerp takes floats only
            torch._foreach_lerp_(ema_params, params, 1 - d)
        else:  # integer buffers (BatchNorm's step counter), as torch's own EMA does
            for e, p in zip(ema_params, params):
                e.copy_(e * d + p * (1 - d))

    return update


def set_train_mode(model: nn.Module, freeze_backbone: bool) -> None:
    """``model.train()``, except that a frozen backbone's BatchNorm keeps its (pretrained) statistics."""
    model.train()
    if freeze_backbone:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def build_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD over the trainable parameters; without ``wd_bn_bias``, 1-d tensors get no weight decay."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not cfg.wd_bn_bias:
        groups = [
            {"params": [p for _, p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for _, p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def peak_lr(cfg: TrainConfig) -> float:
    """``lr`` scaled linearly from ``lr_base_batch`` to the global batch (Goyal et al., 2017)."""
    if cfg.batch_size is None:
        raise ValueError("the batch size is chosen from the data (config.for_data) before the lr is known")
    return cfg.lr * cfg.batch_size / cfg.lr_base_batch


def warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """``warmup_epochs`` in steps, capped at a tenth of the run: 5 warm-up epochs suit 300, not 10."""
    return round(min(cfg.warmup_epochs, WARMUP_MAX_FRACTION * cfg.epochs) * steps_per_epoch)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then step or cosine decay.

    Step milestones are fractions of the run, so the paper's 30/60/90 of 120 epochs also decay a 5-epoch run.
    """
    peak = peak_lr(cfg)
    warm = warmup_steps(cfg, steps_per_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        if cfg.lr_step_epochs:
            return peak * cfg.lr_gamma ** (step // (cfg.lr_step_epochs * steps_per_epoch))
        return peak * cfg.lr_gamma ** sum(step >= round(m * total) for m in cfg.lr_milestones)
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
