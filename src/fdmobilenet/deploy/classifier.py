"""What every exported-file runner shares: the model interface ``evaluate``/``predict`` call on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..preprocess import Preprocess


class ExportedClassifier:
    """Mixin for runners of exported files (``OnnxClassifier``, ``PteClassifier``): CPU-only, preprocessing
    and class names from the file's metadata (``self.meta``)."""

    meta: dict[str, Any]
    kind = "exported"  # how the error for another device names these files

    def eval(self):  # evaluate()/predict() call model.eval().to(device)
        return self

    def to(self, device: str | torch.device = "cpu"):
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.kind} models run on the CPU here, not {device}")
        return self

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """The preprocessing stored with the export (resize to R/crop_pct, center crop R, normalise)."""
        return Preprocess.from_meta(self.meta).transform()
