"""What every network here shares: input checks and the pooled linear classifier head."""

from __future__ import annotations

import torch
from torch import nn

INIT_SCHEMES = ("pytorch", "authors")


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
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: pooled features, no classifier), got {num_classes}")
        self.num_classes = num_classes
        self.global_pool = "avg"
        if not self.features_only:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.classifier = _classifier(self.num_features, num_classes)

    def reset_parameters(self, scheme: str = "pytorch") -> None:
        """Initialise every layer: ``pytorch`` (the default) is each layer's own ``reset_parameters``; ``authors``
        is the authors' code (Kaiming-normal, fan-in for depthwise convs and fan-out for the others; classifier
        N(0, 0.01)). BN starts as the identity either way.

        Why not the authors': behind BatchNorm a conv's output ignores the scale of its weights, but its
        effective learning rate goes as lr / |w|^2. The authors' init starts the convs 1.4-2.5x larger than
        PyTorch's, so they learn 2-6x slower; a 120-epoch ImageNet run outgrows that, a 10-epoch run does not
        (FD-MobileNet 0.25x on Imagenette: 7-9 points lower, benchmarks/reference/results-yardstick.md).
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(INIT_SCHEMES)}, got {scheme!r}")
        if any(p.is_meta for p in self.parameters()):
            return  # shapes-only model (complexity counting): nothing to initialise
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                m.reset_parameters()
            if scheme != "authors":
                continue
            if isinstance(m, nn.Conv2d):
                mode = "fan_in" if m.groups > 1 and m.groups == m.in_channels else "fan_out"
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (fine-tuning to another label set); the backbone is kept.

        ``num_classes=0`` leaves no classifier: the model then returns pooled features (timm's convention).
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global_pool='avg' is supported (the paper's head), got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.classifier = _classifier(self.num_features, num_classes)
        if isinstance(self.classifier, nn.Linear):  # a new head on trained features starts near zero, so its
            nn.init.normal_(self.classifier.weight, 0, 0.01)  # first gradients do not scramble them
            nn.init.zeros_(self.classifier.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and dropout) a ``forward_features`` map; ``pre_logits=True`` stops before the classifier."""
        x = self.dropout(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_pyramid(x)
        return self.forward_head(self.forward_features(x))


def _classifier(num_features: int, num_classes: int) -> nn.Module:
    """A linear layer, or for ``num_classes=0`` an identity so the pooled features come out."""
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
