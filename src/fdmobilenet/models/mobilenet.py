"""FD-MobileNet and MobileNet V1: one network class, two settings tables.

The whole idea of FD-MobileNet (arXiv 1802.03750) is that it *is* MobileNet V1 with other
channel and stride arrays: it reaches 32x downsampling after 12 layers instead of 26, so the
expensive early layers run on small feature maps. Keeping both families as tables read by one
class makes that difference the only difference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .common import ClassifierNet, check_input

# (output channels, stride) of each depthwise-separable block, at width 1.0.
FD_MOBILENET_TABLE: tuple[tuple[int, int], ...] = (
    (64, 2), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 1),
)  # fmt: skip
MOBILENET_V1_TABLE: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
STEM_CHANNELS = 32
TABLES = {"fd_mobilenet": FD_MOBILENET_TABLE, "mobilenet_v1": MOBILENET_V1_TABLE}

# The authors' parameter names (``features.dw_conv_3.weight``) onto ours (``blocks.3.dw.conv.weight``).
AUTHORS_KEY_MAP = (
    (re.compile(r"^features\.conv_0\.(.+)$"), r"stem.conv.\1"),
    (re.compile(r"^features\.norm_0\.(.+)$"), r"stem.bn.\1"),
    (re.compile(r"^features\.(dw|pw)_conv_(\d+)\.(.+)$"), r"blocks.\2.\1.conv.\3"),
    (re.compile(r"^features\.(dw|pw)_norm_(\d+)\.(.+)$"), r"blocks.\2.\1.bn.\3"),
)


@dataclass(frozen=True)
class DSConfig:
    """What one depthwise-separable network is: a table, a width and a class count."""

    table: tuple[tuple[int, int], ...]
    width: float = 1.0
    num_classes: int = 1000
    stem_channels: int = STEM_CHANNELS
    dropout: float = 0.0

    def channels(self) -> tuple[int, list[int]]:
        """Stem and block channels after the width multiplier.

        ``int(c * width)`` (truncation, not rounding to 8) is the authors' rule; their released
        weights only fit with it.
        """
        stem = max(1, int(self.stem_channels * self.width))
        return stem, [max(1, int(c * self.width)) for c, _ in self.table]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU: the only layer type of the MobileNet family."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (carries the stride) + 1x1 pointwise conv, each with BN and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = ConvBNReLU(cin, cin, 3, stride, groups=cin)
        self.pw = ConvBNReLU(cin, cout, 1)


class DepthwiseSeparableNet(ClassifierNet):
    """Stem conv + a table of depthwise-separable blocks + global pool + linear classifier."""

    def __init__(self, cfg: DSConfig, features_only: bool = False, out_indices: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        if cfg.width <= 0:
            raise ValueError(f"width must be > 0, got {cfg.width}")
        self.cfg = cfg
        stem, chans = cfg.channels()
        self.stem = ConvBNReLU(3, stem, 3, 2)
        blocks, cin, reduction = [], stem, 2
        self.feature_info: list[dict] = []
        for i, ((_, stride), cout) in enumerate(zip(cfg.table, chans)):
            blocks.append(DepthwiseSeparable(cin, cout, stride))
            reduction *= stride
            # The last block at each stride is the feature map a detector would tap.
            is_last_at_stride = i + 1 == len(cfg.table) or cfg.table[i + 1][1] != 1
            if is_last_at_stride and reduction >= 4:
                self.feature_info.append({"num_chs": cout, "reduction": reduction, "module": f"blocks.{i}"})
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.min_size = reduction
        self.features_only = features_only
        if features_only:
            self.feature_info = [self.feature_info[i] for i in out_indices]
        self._taps = {int(f["module"].split(".")[1]) for f in self.feature_info}
        self._init_head(cfg.num_classes, cfg.dropout)
        self.reset_parameters()

    @staticmethod
    def checkpoint_filter_fn(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Read by ``weights.load_weights``: the authors' files load into this class directly."""
        return checkpoint_filter_fn(sd)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling (N, num_features, H/32, W/32)."""
        check_input(x, self.min_size)
        return self.blocks(self.stem(x))

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at the strides listed in ``feature_info`` (4, 8, 16, 32 by default)."""
        check_input(x, self.min_size)
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                outs.append(x)
        return outs


def checkpoint_filter_fn(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' checkpoint keys renamed to ours (timm's name for this hook); our keys pass unchanged."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in AUTHORS_KEY_MAP:
            if pattern.match(key):
                key = pattern.sub(repl, key)
                break
        out[key] = value
    return out


def infer_table_and_width(sd: dict[str, torch.Tensor], widths: Iterable[float]) -> tuple[str, float]:
    """(family, width) of a depthwise-separable state dict: the block count picks the table, the stem
    width the multiplier (among ``widths``). Derived from the tables, so a new table needs no edit here."""
    sd = checkpoint_filter_fn(sd)
    if "stem.conv.weight" in sd:
        n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        stem = sd["stem.conv.weight"].shape[0]
        for family, table in TABLES.items():
            for w in widths:
                if len(table) == n_blocks and DSConfig(table, w).channels()[0] == stem:
                    return family, w
    raise ValueError("cannot infer the model from these weights; pass the model name explicitly")
