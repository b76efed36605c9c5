"""What every network here shares: input checks and the pooled linear classifier head."""

from __future__ import annotations

import torch
from torch import nn


def check_input(x: torch.Tensor, min_size: int) -> None:
    """Fail early, with the fix, on input that is not an RGB batch or too small to downsample 32x."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch of RGB images shaped (N, 3, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"input {tuple(x.shape[-2:])} is smaller than {min_size} px: the network downsamples "
            f"{min_size}x, so each side must be at least {min_size} (224 is the standard size)"
        )


class ClassifierNet(nn.Module):
    """Global average pool + dropout + linear head over ``forward_features``, or, with
    ``features_only``, the list of feature maps of ``forward_pyramid`` (timm's convention)."""

    num_features: int
    features_only: bool

    def _init_head(self, num_classes: int, dropout: float) -> None:
        self.num_classes = num_classes
        if not self.features_only:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(self.num_features, num_classes)

    def reset_parameters(self) -> None:
        """Kaiming init as in the authors' code (fan-in for depthwise, fan-out otherwise); BN to identity."""
        if any(p.is_meta for p in self.parameters()):
            return  # shapes-only model (complexity counting): nothing to initialise
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                mode = "fan_in" if m.groups > 1 and m.groups == m.in_channels else "fan_out"
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (fine-tuning to another label set); the backbone is kept."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_pyramid(x)
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))
