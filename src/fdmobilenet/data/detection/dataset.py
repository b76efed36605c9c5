"""Records to tensors: ``DetectionDataset`` (photo + boxes, labels shifted to 1..K with 0 background),
``collate_detection`` (stacks the good samples, reports the bad) and the box-aware train/eval transforms.

Apart from the readers because nothing here knows VOC from COCO, and the readers need neither torch's
datasets nor torchvision's transforms: records in, what a detector trains on out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..._errors import ParameterError
from ...preprocess import IMAGENET_MEAN
from ..images import BadImageError, load_image
from ._common import ImageAnnotation


class DetectionDataset(Dataset):
    """``(image, target, i, reason)`` per record, for ``collate_detection``.

    ``image`` float32 CHW in [0, 1] as the transform leaves it; ``target`` holds ``boxes`` (float32 [N, 4]
    xyxy pixels of the transformed image), ``labels`` (int64, 1..K: 0 is background), ``difficult`` (bool),
    ``orig_size`` ([h, w] of the annotated image, to map boxes back) and ``image_id`` (``i``). An image that
    cannot be decoded, or whose proportions contradict its annotation, gives ``(None, None, i, reason)``.
    A photo stored at another size than annotated but with the same proportions has its boxes scaled.
    ``draft_size``: JPEGs may be decoded at 1/2..1/8 scale with the shorter side still that large (as
    ``ImageDataset``), boxes following. All randomness is the global torch RNG's, so ``order.SeededView``
    makes it reproducible.
    """

    def __init__(self, records: Sequence[ImageAnnotation], transform: Callable, draft_size: int | None = None):
        self.records, self.transform, self.draft_size = list(records), transform, draft_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, dict[str, Any] | None, int, str | None]:
        rec = self.records[i]
        try:
            img = load_image(rec.path, self.draft_size)
        except BadImageError as e:
            return None, None, i, e.reason
        w, h = img.size
        sx, sy = w / rec.width, h / rec.height
        if abs(sx - sy) > 0.02 * max(sx, sy) + 2 / min(w, h):  # rounding of a resized or draft-decoded photo
            return (
                None,
                None,
                i,
                (
                    f"image is {w}x{h} but its annotation is for {rec.width}x{rec.height} "
                    "(EXIF orientation is not applied); fix the annotation or the photo"
                ),
            )
        boxes = torch.from_numpy(rec.boxes) * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(rec.labels) + 1,
            "difficult": torch.from_numpy(rec.difficult).clone(),
        }
        out, target = self.transform(img, target)
        target = {
            "boxes": target["boxes"].as_subclass(torch.Tensor).to(torch.float32),
            "labels": target["labels"].as_subclass(torch.Tensor),
            "difficult": target["difficult"].as_subclass(torch.Tensor),
            "orig_size": torch.tensor([rec.height, rec.width], dtype=torch.int64),
            "image_id": i,
        }
        return out.as_subclass(torch.Tensor), target, i, None


def collate_detection(
    batch: Sequence[tuple[torch.Tensor | None, dict[str, Any] | None, int, str | None]],
) -> tuple[torch.Tensor | None, list[dict[str, Any]] | None, torch.Tensor | None, list[tuple[int, str]]]:
    """``(images [B, 3, R, R] or None, targets, indices, [(index, reason), ...] of bad ones)``: the good
    samples stacked, as ``images.collate_skip_bad`` does (all bad: None for the first three)."""
    good = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    if not good:
        return None, None, None, bad
    return (
        torch.stack([b[0] for b in good]),
        [b[1] for b in good],
        torch.tensor([b[2] for b in good], dtype=torch.long),
        bad,
    )


class _ShrinkLongSide(v2.Transform):
    """Downscale (never up) so the longer side is at most ``limit``: zoom-out canvases of big photos
    (up to ``zoom_out``**2 times the pixels) stay bounded, and nothing is lost at the final resolution."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        s = self.limit / max(h, w)
        return {"size": [max(1, round(h * s)), max(1, round(w * s))] if s < 1 else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["size"] is None:
            return inpt
        return self._call_kernel(v2.functional.resize, inpt, params["size"])


class _IoUCrop(v2.RandomIoUCrop):
    """SSD's IoU crop, left out for images without boxes (it would only spin until it drew "keep") and
    images under 4 px a side (its crop sizes would round to zero)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        if min(h, w) < 4 or v2.get_bounding_boxes(flat_inputs).shape[0] == 0:
            return {}
        return super().make_params(flat_inputs)


def _labels_and_difficult(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """What SanitizeBoundingBoxes drops with each removed box: labels and difficult stay aligned."""
    target = inputs[1]
    return target["labels"], target["difficult"]


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ParameterError("resolution", f"`resolution` must be a whole number >= 1, got {resolution!r}")


def detection_train_transform(
    resolution: int, mean: Sequence[float] = IMAGENET_MEAN, zoom_out: float = 4.0
) -> Callable[[Any, dict], tuple[torch.Tensor, dict]]:
    """SSD's training augmentation, box-aware: photometric distortion, zoom-out onto a canvas of the
    ``mean`` colour (half the time, up to ``zoom_out`` x each side; 4 is SSD's value and helps small
    objects on VOC-like photos, 1 turns it off, 2 suits data whose objects are already small, such as
    BCCD's platelets), IoU crop, horizontal flip, resize to ``resolution`` square, then boxes clamped and
    those under a pixel dropped with their labels and difficult flags. Call as ``t(pil_image, target)``."""
    _check_resolution(resolution)
    if not (isinstance(zoom_out, (int, float)) and 1 <= zoom_out <= 8):
        raise ParameterError("zoom_out", f"`zoom_out` must be between 1 and 8, got {zoom_out!r}")
    fill = [round(255 * float(m)) for m in mean]
    steps: list[Any] = [_ShrinkLongSide(4 * resolution), v2.ToImage(), v2.RandomPhotometricDistort(p=0.5)]
    if zoom_out > 1:
        steps.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, float(zoom_out)), p=0.5))
    steps += [
        _IoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((resolution, resolution)),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(labels_getter=_labels_and_difficult),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)


def detection_eval_transform(resolution: int) -> Callable[[Any, dict], tuple[torch.Tensor, dict]]:
    """Resize to ``resolution`` square (boxes follow; none is dropped: scoring counts every one) and scale to [0, 1]."""
    _check_resolution(resolution)
    return v2.Compose([v2.ToImage(), v2.Resize((resolution, resolution)), v2.ToDtype(torch.float32, scale=True)])
