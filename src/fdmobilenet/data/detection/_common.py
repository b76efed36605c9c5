"""What every detection reader shares: the constants, the record types (``ImageAnnotation``, ``AnnotationSet``,
``DetectionSplit``, ``Problem``) and the checks that turn parsed boxes into records (``_finish``).

Kept apart from the readers so that VOC and COCO reading, which have nothing else in common, hold to one box
convention (see the package docstring), one clipping rule and one way of reporting what was left out.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import MAX_IMAGE_PIXELS

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

MAX_XML_BYTES = 4 << 20  # a VOC file is ~1 KB per object; 4 MiB is thousands of objects
MAX_COCO_JSON_BYTES = 1 << 30  # COCO's own instances_train2017.json is 448 MB
EDGE_TOLERANCE_PX = 4  # boxes this far past the image edge are clipped without a word (off-by-one tools)
VOC_LIST_NAMES = ("train", "val", "trainval", "test")

LAYOUT_HELP = (
    "expected a PASCAL VOC folder (Annotations/, JPEGImages/, optionally ImageSets/Main/<list>.txt), "
    "a VOCdevkit folder holding one VOC* folder, a COCO instances_*.json file, "
    "or a folder with annotations/instances_*.json"
)

Problem = tuple[str, str]  # (file, reason): what was left out and why


@dataclass
class ImageAnnotation:
    """One photo's boxes. ``boxes`` float32 [N, 4] xyxy pixels (see the module docstring), ``labels`` int64
    [N] class indices 0..K-1, ``difficult`` bool [N] (VOC's flag, or COCO's ``iscrowd``: both are ignored
    when scoring); ``name`` is the VOC image id or COCO file name, what a split record lists."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    name: str


@dataclass
class AnnotationSet:
    """The records read from one source, the class names their labels index, and what was left out."""

    records: list[ImageAnnotation]
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)
    description: str = ""


@dataclass
class DetectionSplit:
    """Training data: ``train``/``val`` records, ``classes``, ``lists`` (which list fed each part, e.g.
    ``{"train": "train", "val": "val"}``), ``record`` (the seeded hold-out, for ``split.json``; None when
    the data brings its own validation list) and every problem met while reading."""

    train: list[ImageAnnotation]
    val: list[ImageAnnotation]
    classes: list[str]
    description: str
    record: dict | None
    lists: dict[str, str]
    problems: list[Problem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers


class _Skip(Exception):
    """A file or object that is left out; the message is the problem's reason."""


def _number(text: str | None, what: str) -> float:
    """A finite number from annotation text. Decimals are accepted (labelling tools write them) and kept."""
    if text is None or not text.strip():
        raise _Skip(f"{what} is missing")
    try:
        v = float(text)
    except ValueError:
        raise _Skip(f"{what} {_quote(text)} is not a number") from None
    if not math.isfinite(v):
        raise _Skip(f"{what} {_quote(text)} is not a finite number")
    return v


def _quote(text: str, limit: int = 40) -> str:
    """Untrusted text for a message: one line, bounded, quoted."""
    text = "".join(c if c.isprintable() else "?" for c in str(text).strip())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _fmt(v: float) -> str:
    return f"{v:g}"


def _check_box(box: Sequence[float], width: int, height: int, shown: str) -> tuple[list[float], str | None]:
    """The box clipped to the image and a problem reason (None: fine). Boxes within ``EDGE_TOLERANCE_PX`` of
    the image are clipped quietly; further out but still overlapping it they are clipped and reported (the
    object is there, its box is sloppy); entirely outside or of zero size they raise ``_Skip``."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise _Skip(f"zero-size box {shown}")
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        raise _Skip(f"box {shown} is outside the {width}x{height} image")
    over = max(-x1, -y1, x2 - width, y2 - height)
    clipped = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    if over > EDGE_TOLERANCE_PX:
        return clipped, f"box {shown} extends {_fmt(over)} px outside the {width}x{height} image; clipped to it"
    return clipped, None


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise _Skip(f"{what} is {size:,} bytes, over the {limit:,}-byte limit")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header alone, for annotations that do not state it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Skip(f"the annotation gives no image size and the image is unreadable ({type(e).__name__})") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise _Skip(f"image {w}x{h} is over the {MAX_IMAGE_PIXELS:,}-pixel limit")
    return w, h


def _plain_name(name: str) -> bool:
    """A file name with no folder part: ids and names from annotation files must not reach outside their folder."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _relative_name(name: str) -> bool:
    """A relative path that stays inside its folder (COCO file names may have sub-folders)."""
    parts = name.replace("\\", "/").split("/")
    return (
        bool(name)
        and "\0" not in name
        and not name.startswith(("/", "\\"))
        and ":" not in parts[0]
        and all(p not in ("", ".", "..") for p in parts)
    )


def _infer_classes(names: set[str]) -> list[str]:
    """VOC's 20 classes in their standard order when every name is one of them (so VOC and VOC-named
    subsets agree on label indices), else the names found, sorted."""
    if names and names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)


def _finish(
    raw: list[tuple[Path, int, int, str, list[tuple[str, list[float], bool, str]], str]],
    classes: Sequence[str] | None,
    problems: list[Problem],
) -> tuple[list[ImageAnnotation], list[str]]:
    """Records from parsed entries ``(image, w, h, name, [(class, xyxy, difficult, shown), ...], file)``:
    decide the classes, then check every box against them and its image."""
    if classes is None:
        classes = _infer_classes({c for *_, objs, _ in raw for c, *_ in objs})
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    records = []
    for path, w, h, name, objs, src in raw:
        boxes, labels, difficult = [], [], []
        for cls, box, diff, shown in objs:
            if cls not in index:
                problems.append((src, f"{shown}: unknown class {_quote(cls)} (the classes are {_list(classes)})"))
                continue
            try:
                clipped, note = _check_box(box, w, h, _box_text(box))
            except _Skip as e:
                problems.append((src, f"{shown}: {e}"))
                continue
            if note:
                problems.append((src, f"{shown}: {note}"))
            boxes.append(clipped)
            labels.append(index[cls])
            difficult.append(diff)
        records.append(
            ImageAnnotation(
                path,
                w,
                h,
                np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64),
                np.asarray(difficult, dtype=bool),
                name,
            )
        )
    return records, classes


def _box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(_fmt(v) for v in box) + "]"


def _list(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "") if names else "none"


def _limit(name: str) -> int:
    """``MAX_XML_BYTES`` or ``MAX_COCO_JSON_BYTES`` as the package holds it when a file is read: the names
    in ``fdmobilenet.data.detection`` are the settings to change (as when it was one module), so the
    readers look them up there at call time instead of binding this module's values at import."""
    return getattr(importlib.import_module(__package__), name)
