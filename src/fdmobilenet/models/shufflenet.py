"""ShuffleNet V1 (arXiv 1707.01083), FD-MobileNet's main competitor in the paper.

Also a settings table (stage output channels per group count, units per stage) read by one
class, following the paper's Table 1 and the FD-MobileNet authors' implementation: no ReLU after
the depthwise conv, the stride-2 unit concatenates a 3x3 average-pooled shortcut, and the first
pointwise conv of stage 2 is not grouped (its input has only 24 channels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import ClassifierNet, check_input

# Output channels of stages 2, 3, 4 at scale 1x, per group count (paper, Table 1).
SHUFFLENET_STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
SHUFFLENET_STAGE_UNITS = (4, 8, 4)
STEM_CHANNELS = 24
MIN_STEM_CHANNELS = 12


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(x / multiple + 0.5) * multiple)


@dataclass(frozen=True)
class ShuffleConfig:
    """One ShuffleNet V1: group count, scale factor (the paper's "ShuffleNet s x"), classes."""

    groups: int = 3
    width: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.0

    def channels(self) -> tuple[int, list[int]]:
        """Stem and stage channels after the scale factor.

        Stage widths are rounded to a multiple of 4*groups so the bottleneck (output/4) splits
        evenly into groups; at the paper's settings this is exact. The stem scales too (24*s, at
        least 12, rounded up to the group count), as in both the ShuffleNet and the FD-MobileNet
        authors' code: that reproduces the paper's 140 / 38 / 13 MFLOPs for g=3 at 1x / 0.5x /
        0.25x, where a fixed 24-channel stem would give 137 / 43 / 18.
        """
        g = self.groups
        stem = -(-max(MIN_STEM_CHANNELS, int(STEM_CHANNELS * self.width)) // g) * g
        stages, prev = [], stem
        for c in SHUFFLENET_STAGE_CHANNELS[g]:
            # A stride-2 unit concatenates its input, so each stage must be wider than the last.
            prev = max(_round_to(c * self.width, 4 * g), (prev // (4 * g) + 1) * 4 * g)
            stages.append(prev)
        return stem, stages


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across groups so the next group conv sees every group."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """1x1 group conv + shuffle + 3x3 depthwise + 1x1 group conv, with an identity or pooled shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_grouped: bool = True):
        super().__init__()
        self.stride = stride
        self.groups = groups if first_grouped else 1
        mid = cout // 4
        branch_out = cout - cin if stride == 2 else cout
        self.compress = nn.Conv2d(cin, mid, 1, groups=self.groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.depthwise = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.expand = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.compress(x)))
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        y = self.bn3(self.expand(self.bn2(self.depthwise(y))))
        if self.stride == 2:
            return self.relu(torch.cat((y, self.shortcut(x)), 1))
        return self.relu(y + x)


class ShuffleNetV1(ClassifierNet):
    """Stem conv + max-pool, three stages of shuffle units, global pool, linear classifier."""

    def __init__(self, cfg: ShuffleConfig, features_only: bool = False, out_indices: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        if cfg.groups not in SHUFFLENET_STAGE_CHANNELS:
            raise ValueError(f"groups must be one of {sorted(SHUFFLENET_STAGE_CHANNELS)}, got {cfg.groups}")
        if cfg.width <= 0:
            raise ValueError(f"width must be > 0, got {cfg.width}")
        self.cfg = cfg
        stem, stage_chans = cfg.channels()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(3, stem, 3, 2, 1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(stem))
        self.stem.add_module("relu", nn.ReLU(inplace=True))
        self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        self.feature_info = [{"num_chs": stem, "reduction": 4, "module": "stem"}]
        stages, cin = [], stem
        for i, (cout, units) in enumerate(zip(stage_chans, SHUFFLENET_STAGE_UNITS)):
            stage = [ShuffleUnit(cin, cout, 2, cfg.groups, first_grouped=i > 0)]
            stage += [ShuffleUnit(cout, cout, 1, cfg.groups) for _ in range(units - 1)]
            stages.append(nn.Sequential(*stage))
            self.feature_info.append({"num_chs": cout, "reduction": 8 * 2**i, "module": f"stages.{i}"})
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.min_size = 32
        self.features_only = features_only
        self._out_indices = set(out_indices) if features_only else {0, 1, 2, 3}
        if features_only:
            self.feature_info = [self.feature_info[i] for i in out_indices]
        self._init_head(cfg.num_classes, cfg.dropout)
        self.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.min_size)
        return self.stages(self.stem(x))

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.min_size)
        x = self.stem(x)
        outs = [x] if 0 in self._out_indices else []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i + 1 in self._out_indices:
                outs.append(x)
        return outs
