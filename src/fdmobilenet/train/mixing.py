"""MixUp and CutMix of a training micro-batch (torchvision's ``transforms.v2``), seeded per micro-batch.

The v2 transforms draw from torch's global CPU generator, which exact resume restores from the
checkpoint and which the rest of the step also draws from. Each call therefore runs inside
``torch.random.fork_rng`` with the CPU generator seeded from (seed, global step, micro-batch, rank):
the global state is left as it was, and a resumed run draws the same mixes as an uninterrupted one.
"""

from __future__ import annotations

import torch

from .._utils import mix

_SALT = 0x6D6978  # "mix": keeps these seeds apart from the data order's and the augmentation's


class BatchMix:
    """``(images, labels) -> (mixed images, soft targets)``: MixUp, CutMix, or one of the two chosen per
    micro-batch with equal odds (torchvision's references), for ``CrossEntropyLoss`` with probability targets
    (label smoothing stays the criterion's, as in those references)."""

    def __init__(self, mixup: float, cutmix: float, num_classes: int, seed: int = 0):
        from torchvision.transforms import v2

        if mixup <= 0 and cutmix <= 0:
            raise ValueError("BatchMix needs mixup > 0 or cutmix > 0")
        parts = [cls(alpha=a, num_classes=num_classes) for cls, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a > 0]
        self.transform = parts[0] if len(parts) == 1 else v2.RandomChoice(parts)
        self.seed = seed

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, step: int, micro: int = 0, rank: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix micro-batch ``micro`` of optimizer step ``step`` in process ``rank``; the global RNGs are untouched."""
        # the transforms draw on the CPU only (Beta samples, box corners, the choice): fork and seed that generator
        # alone; torch.manual_seed would also reseed the CUDA generators, which fork_rng(devices=[]) does not restore
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix(self.seed, _SALT, step, micro, rank))
            return self.transform(x, y)
