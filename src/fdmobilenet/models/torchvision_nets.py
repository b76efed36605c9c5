"""The alternatives people weigh against FD-MobileNet at 10-150 MFLOPs: torchvision's MobileNetV2,
MobileNetV3-Small/Large and ShuffleNetV2, at any width, so ``compare``, ``bench`` and ``profile`` can
match them to a budget like the paper's families. Architecture and initialisation are torchvision's
(``torchvision.models``); no pretrained weights are involved.
"""

from __future__ import annotations

from torch import nn

from ._registry import TORCHVISION_FAMILIES

# ShuffleNetV2 stage 2-4 channels at 1.0x; other widths scale them (multiples of 4, so each unit can split
# its channels in two). torchvision's own 0.5x table (48/96/192) is narrower than 0.5 x these.
SHUFFLENET_V2_CHANNELS = (116, 232, 464)


def build_torchvision(
    family: str,
    width: float = 1.0,
    num_classes: int = 1000,
    dropout: float = 0.0,
    features_only: bool = False,
    out_indices: tuple[int, ...] = (0, 1, 2, 3),
) -> nn.Module:
    """A torchvision network of ``family`` at width multiplier ``width``."""
    if features_only:
        raise ValueError(f"{family} comes from torchvision, which has no features_only; use an fdmobilenet family")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0: pooled features, no classifier), got {num_classes}")
    model = _build(family, width, num_classes or 1000, dropout)
    if num_classes == 0:  # timm's convention: the last linear layer becomes an identity, features come out
        if family == "shufflenet_v2":
            model.fc = nn.Identity()
        else:
            model.classifier[-1] = nn.Identity()
    model.num_classes = num_classes
    return model


def _build(family: str, width: float, num_classes: int, dropout: float) -> nn.Module:
    from torchvision import models as tvm  # here, not at import: torchvision takes seconds to import

    if family == "mobilenet_v2":
        model: nn.Module = tvm.mobilenet_v2(num_classes=num_classes, width_mult=width, dropout=dropout)
    elif family in ("mobilenet_v3_small", "mobilenet_v3_large"):
        model = getattr(tvm, family)(num_classes=num_classes, width_mult=width, dropout=dropout)
    elif family == "shufflenet_v2":
        if dropout:
            raise ValueError("shufflenet_v2 (torchvision) has no dropout; pass dropout=0")
        chans = [max(8, int(round(c * width / 4)) * 4) for c in SHUFFLENET_V2_CHANNELS]
        model = tvm.ShuffleNetV2([4, 8, 4], [24, *chans, 2048 if width >= 2 else 1024], num_classes=num_classes)
    else:
        raise ValueError(f"unknown torchvision family {family!r}; choose from {', '.join(TORCHVISION_FAMILIES)}")
    return model
