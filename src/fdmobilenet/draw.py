"""Drawn previews of detections: ``draw_detections`` puts a detector's boxes and captions on a photo.

Beside prediction (``detect``), which is what draws, rather than with the data readers: drawing needs no
annotation file, and its one care is the same as ``predict``'s, class names that come from a model's file or a
user's data and so are untrusted text (``_label_text`` strips control and format characters and bounds them).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_LABEL_CHARS = 40
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]  # fmt: skip


def _label_text(name: str) -> str:
    """Untrusted class-name text made drawable: no control or format characters, bounded length."""
    text = "".join(c for c in _CONTROL.sub(" ", str(name)) if unicodedata.category(c)[0] != "C").strip()
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def draw_detections(
    image: Image.Image | torch.Tensor,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    scores: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    class_names: Sequence[str] = (),
) -> Image.Image:
    """The image with its boxes drawn and captioned ``name score``. ``labels`` are the model's 1..K
    (``class_names[label - 1]``; others are shown as numbers); ``image`` a PIL image or a CHW tensor
    (uint8, or float in [0, 1]); boxes xyxy in its pixels, clipped to it, non-finite ones left out."""
    from torchvision.utils import draw_bounding_boxes

    if isinstance(image, Image.Image):
        img = v2.functional.pil_to_tensor(image.convert("RGB"))
    else:
        img = image.detach().cpu()
        if img.dtype != torch.uint8:
            img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
    h, w = img.shape[1:]
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    sc = None if scores is None else torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    keep = torch.isfinite(b).all(1)
    b, lab, sc = b[keep], lab[keep], None if sc is None else sc[keep]
    x1, x2 = b[:, [0, 2]].min(1).values.clamp(0, w), b[:, [0, 2]].max(1).values.clamp(0, w)
    y1, y2 = b[:, [1, 3]].min(1).values.clamp(0, h), b[:, [1, 3]].max(1).values.clamp(0, h)
    b = torch.stack([x1, y1, x2, y2], 1)
    if len(b) == 0:  # draw_bounding_boxes would warn
        return v2.functional.to_pil_image(img)
    texts = []
    for k, y in enumerate(lab.tolist()):
        name = _label_text(class_names[y - 1]) if 1 <= y <= len(class_names) else f"class {y}"
        texts.append(name if sc is None else f"{name} {float(sc[k]):.2f}")
    colors = [_PALETTE[(y - 1) % len(_PALETTE)] for y in lab.tolist()]
    width = max(1, round(min(h, w) / 200))
    try:
        out = draw_bounding_boxes(img, b, labels=texts, colors=colors, width=width)
    except UnicodeEncodeError:  # Pillow's bitmap fallback font is Latin-1 only
        texts = [t.encode("ascii", "backslashreplace").decode() for t in texts]
        out = draw_bounding_boxes(img, b, labels=texts, colors=colors, width=width)
    return v2.functional.to_pil_image(out)
