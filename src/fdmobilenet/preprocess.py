"""One description of how a model wants its images, used everywhere: weights metadata, training
checkpoints, export metadata, the ONNX runtime, evaluation and timm's ``pretrained_cfg``.

It is the torchvision ``Weights.meta`` idea: the numbers travel with the weights, so nobody
re-types the ImageNet mean or the 256/224 crop ratio, and a file trained on other data says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # 224/256: the authors' (and torchvision's) evaluation crop
META_KEYS = ("resolution", "mean", "std", "crop_pct", "interpolation")


@dataclass(frozen=True)
class Preprocess:
    """Evaluation preprocessing: shorter side to ``resolution / crop_pct``, center crop, normalise."""

    resolution: int = 224
    crop_pct: float = DEFAULT_CROP_PCT
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    @property
    def resize(self) -> int:
        """Shorter side before the center crop (256 for 224 px at 0.875)."""
        return int(self.resolution / self.crop_pct)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], resolution: int | None = None) -> Preprocess:
        """Read the preprocessing keys of a metadata dict (missing ones: ImageNet defaults).

        ``resolution`` overrides the file's (a model can be evaluated at another size).
        """
        return cls(
            resolution=int(resolution or meta.get("resolution") or 224),
            crop_pct=float(meta.get("crop_pct", DEFAULT_CROP_PCT)),
            mean=tuple(float(v) for v in meta.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in meta.get("std", IMAGENET_STD)),
            interpolation=str(meta.get("interpolation", "bilinear")),
        )

    def with_resolution(self, resolution: int) -> Preprocess:
        return replace(self, resolution=int(resolution))

    def to_meta(self) -> dict[str, Any]:
        """The metadata keys (JSON-friendly lists) written into weights, checkpoints and exports."""
        return {
            "resolution": int(self.resolution),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "crop_pct": float(self.crop_pct),
            "interpolation": str(self.interpolation),
        }

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` preprocessing keys (what ``resolve_data_config`` reads)."""
        return {
            "input_size": (3, self.resolution, self.resolution),
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }

    def transform(self) -> Callable[[Any], Any]:
        """PIL image -> normalised tensor, exactly the authors' test transform at these settings."""
        from torchvision import transforms as T

        return T.Compose(
            [
                T.Resize(self.resize, interpolation=T.InterpolationMode(self.interpolation)),
                T.CenterCrop(self.resolution),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )


@functools.cache
def imagenet_classes() -> tuple[list[str], list[str]]:
    """Synset ids and readable names of the 1000 ImageNet-1k classes, in the standard order."""
    text = resources.files("fdmobilenet").joinpath("imagenet_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    return [r[1] for r in rows], [r[2] for r in rows]
