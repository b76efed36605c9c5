"""One description of how a model wants its images, used everywhere: weights metadata, training
checkpoints, export metadata, the ONNX runtime, evaluation and timm's ``pretrained_cfg``.

It is the torchvision ``Weights.meta`` idea: the numbers travel with the weights, so nobody
re-types the ImageNet mean or the 256/224 crop ratio, and a file trained on other data says so.

The two transforms live here, as in torchvision's ``references/classification/presets.py``:
``Preprocess.transform`` is the evaluation preset (resize, center crop, normalise) and
``train_transform`` the training one (random-resized crop, flip, optional RandAugment or TrivialAugment,
normalise, optional random erasing) that ``train`` and ``quantize``'s fine-tuning share.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from ._errors import ParameterError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # 224/256: the authors' (and torchvision's) evaluation crop
META_KEYS = ("resolution", "mean", "std", "crop_pct", "interpolation")
MAX_ASPECT = 4.0  # longer sides beyond 4x the shorter are cut before resizing (a 20000x1 PNG is 141 bytes)
MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096  # what a weights or ONNX file may ask for (100000 ran out of memory)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def cap_aspect(img: Any, max_aspect: float = MAX_ASPECT) -> Any:
    """A PIL image with its longer side centre-cut to at most ``max_aspect`` x the shorter: what any later
    resize allocates is then bounded by the output size, whatever the file's proportions."""
    w, h = img.size
    cw, ch = min(w, max(1, int(h * max_aspect))), min(h, max(1, int(w * max_aspect)))
    if (cw, ch) == (w, h):
        return img
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def bounded_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(width, height) after ``cap_aspect`` and a shorter-side resize to ``short`` (torchvision's rounding)."""
    w, h = min(w, max(1, int(h * MAX_ASPECT))), min(h, max(1, int(w * MAX_ASPECT)))
    return (short, int(short * h / w)) if w <= h else (int(short * w / h), short)


class _BoundedResize:
    """torchvision's ``Resize(short)`` after ``cap_aspect``: identical on ordinary photos."""

    def __init__(self, short: int, interpolation: str):
        from torchvision import transforms as T

        self.resize = T.Resize(short, interpolation=T.InterpolationMode(interpolation))

    def __call__(self, img: Any) -> Any:
        return self.resize(cap_aspect(img))

    def __repr__(self) -> str:
        return f"Bounded{self.resize!r}"


def _check_meta(p: Preprocess) -> None:
    """Refuse what no real model file holds, before anything is allocated from it."""
    r = p.resolution
    if not MIN_RESOLUTION <= r <= MAX_RESOLUTION:
        raise ValueError(f"resolution {r} is outside {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    if not 0 < p.crop_pct <= 1:
        raise ValueError(f"crop_pct {p.crop_pct} is outside (0, 1]")
    for key, v in (("mean", p.mean), ("std", p.std)):
        if len(v) != 3 or not all(math.isfinite(x) for x in v) or (key == "std" and min(v) <= 0):
            raise ValueError(f"{key} {list(v)} is not 3 finite numbers{' > 0' if key == 'std' else ''}")
    if p.interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {p.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")


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
    def from_meta(cls, meta: Mapping[str, Any], resolution: int | None = None, source: str = "") -> Preprocess:
        """Read and check the preprocessing keys of a metadata dict (missing ones: ImageNet defaults).

        ``resolution`` overrides the file's (a model can be evaluated at another size). A ValueError
        names ``source`` (the file) and the key when a value is absurd (``resolution: 100000``).
        """
        where = f"{source}: " if source else ""
        fix = "; the file is damaged or not from fdmobilenet: re-export it" + (", or pass `resolution`" * (not source))
        try:
            p = cls(
                resolution=_whole(resolution or meta.get("resolution") or 224),
                crop_pct=float(meta.get("crop_pct", DEFAULT_CROP_PCT)),
                mean=tuple(float(v) for v in meta.get("mean", IMAGENET_MEAN)),
                std=tuple(float(v) for v in meta.get("std", IMAGENET_STD)),
                interpolation=str(meta.get("interpolation", "bilinear")),
            )
            _check_meta(p)
        except (TypeError, ValueError) as e:
            msg = f"{where}preprocessing metadata: {e}{fix}"
            raise (ValueError(msg) if source else ParameterError("resolution", msg)) from None
        return p

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

    def crop(self) -> Callable[[Any], Any]:
        """PIL image -> the PIL image the network sees before ``ToTensor``: resized and center-cropped. The
        in-memory validation split stores these, so training's val top-1 is eval's to the last photo."""
        from torchvision import transforms as T

        return T.Compose([_BoundedResize(self.resize, self.interpolation), T.CenterCrop(self.resolution)])

    def transform(self) -> Callable[[Any], Any]:
        """PIL image -> normalised tensor, exactly the authors' test transform at these settings."""
        from torchvision import transforms as T

        return T.Compose([self.crop(), T.ToTensor(), T.Normalize(self.mean, self.std)])


def train_transform(
    resolution: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: bool = True,
    auto_augment: str = "none",
    ra_magnitude: int = 9,
    random_erasing: float = 0.0,
) -> Callable[[Any], Any]:
    """PIL image -> augmented, normalised tensor: torchvision's ``ClassificationPresetTrain``.

    One RandomResizedCrop draw, then (with ``hflip``) one flip draw per image: resumed runs replay this
    order exactly, so keep it. ``auto_augment`` (``randaugment``: 2 ops at ``ra_magnitude``;
    ``trivialaugment``) runs on the PIL crop and ``random_erasing`` (its probability) on the normalised
    tensor, as in the presets; both draw after the crop and flip, so with them off nothing changes.
    """
    from torchvision import transforms as T

    tf = [T.RandomResizedCrop(resolution, scale=tuple(crop_scale), antialias=True)]
    if hflip:
        tf.append(T.RandomHorizontalFlip())
    policy = auto_augment_policy(auto_augment, ra_magnitude)
    tf += [policy] if policy else []
    tf += [T.ToTensor(), T.Normalize(mean, std)]
    if random_erasing:
        from torchvision.transforms import v2

        tf.append(v2.RandomErasing(random_erasing))
    return T.Compose(tf)


def auto_augment_policy(name: str, ra_magnitude: int = 9) -> Callable[[Any], Any] | None:
    """torchvision's v2 ``RandAugment(2, ra_magnitude)`` or ``TrivialAugmentWide()`` for ``name``, bilinear as in
    its classification presets (PIL images and uint8 tensors alike); None for ``none``."""
    if name == "none":
        return None
    from torchvision.transforms import InterpolationMode, v2

    bilinear = InterpolationMode.BILINEAR
    if name == "randaugment":
        return v2.RandAugment(num_ops=2, magnitude=ra_magnitude, interpolation=bilinear)
    if name == "trivialaugment":
        return v2.TrivialAugmentWide(interpolation=bilinear)
    raise ParameterError("auto_augment", f"`auto_augment` must be none, randaugment or trivialaugment, got {name!r}")


def _whole(v: Any) -> int:
    """An integer from metadata (JSON may give 224 or 224.0); anything else is a ValueError naming it."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v != int(v):
        raise ValueError(f"resolution {v!r} is not a whole number")
    return int(v)


@functools.cache
def imagenet_classes() -> tuple[list[str], list[str]]:
    """Synset ids and readable names of the 1000 ImageNet-1k classes, in the standard order."""
    text = resources.files("fdmobilenet").joinpath("imagenet_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    return [r[1] for r in rows], [r[2] for r in rows]


@functools.cache
def imagenet_label_names() -> list[str]:
    """The 1000 readable names made unique ('crane' and 'maillot' appear twice in ImageNet-1k: those two
    carry their synset), so a subset of ImageNet classes can be named, stored and matched by name alone."""
    synsets, names = imagenet_classes()
    twice = {n for n in names if names.count(n) > 1}
    return [f"{n} ({s})" if n in twice else n for s, n in zip(synsets, names)]


def imagenet_rows(classes: Sequence[str]) -> list[int] | None:
    """The ImageNet-1k class index of each of ``classes`` when every one is an ImageNet class name
    (a synset-folder subset such as Imagenette), else None: what lets fine-tuning start a 10-way head
    from the matching rows of a 1000-way classifier."""
    index = {n: i for i, n in enumerate(imagenet_label_names())}
    index.update({n: i for i, n in enumerate(imagenet_classes()[1]) if n not in index})
    rows = [index.get(c) for c in classes]
    return None if not classes or None in rows else rows  # type: ignore[return-value]
