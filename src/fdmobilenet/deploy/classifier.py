"""What every exported-file runner shares: the model interface ``evaluate``/``predict`` call on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..preprocess import Preprocess
from .metadata import complete_metadata


class ExportedClassifier:
    """Mixin for runners of exported files (``OnnxClassifier``, ``PteClassifier``): CPU-only, preprocessing
    and class names from the file's metadata (``self.meta``)."""

    meta: dict[str, Any]
    path: Path
    kind = "exported"  # how the error for another device names these files

    def _set_meta(self, stored: dict[str, Any], input_shape: list, num_classes: int | None) -> None:
        """The file's metadata completed with defaults (a foreign file has none) and checked before any
        resize: absurd values (``resolution: 100000``) are refused here, naming the file."""
        self.meta = complete_metadata(stored, input_shape, num_classes)
        Preprocess.from_meta(self.meta, source=str(self.path))

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
