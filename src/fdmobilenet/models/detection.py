"""SSDLite detectors on every classifier backbone here: torchvision's SSD (anchor matching, losses, box
decoding, NMS) around our networks, so detection compares backbones the way ImageNet accuracy does.

The layout is torchvision's ``ssdlite320_mobilenet_v3_large`` (the SSDLite of the MobileNetV2 paper):
the backbone's last maps at strides 16 and 32, four extra depthwise-separable blocks (1x1 reduce, 3x3
depthwise stride 2, 1x1 expand, BatchNorm + ReLU6) that halve the map each, so six levels (20, 10, 5,
3, 2, 1 at 320 px), and the SSDLite head (3x3 depthwise + 1x1 per level), six default boxes per
location. The backbone keeps the classifier's module names, so classification weights load by key.

Labels: ``num_classes`` is the number of object classes K, *without* background. The SSD inside has
K + 1 outputs with 0 the background, so targets' and predictions' ``labels`` are 1..K.

Images go in as float RGB tensors in [0, 1] (a list of (3, H, W), or a (N, 3, H, W) batch); the SSD's
transform resizes them to ``resolution`` x ``resolution`` and normalises with the backbone's mean/std;
eval-mode boxes come back in the input images' pixel coordinates (x1, y1, x2, y2).

Imports torchvision at load time, so ``pretrained`` and ``_factory`` import this module only when a
detector is built.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import Conv2dNormActivation

from ._builder import build_model, check_resolution, default_cfg
from ._registry import DETECTOR_FAMILIES, TORCHVISION_FAMILIES, is_model, lookup, model_task

if TYPE_CHECKING:
    from ..complexity import Profile

DEFAULT_RESOLUTION = 320  # SSDLite's size (torchvision's ssdlite320, the MobileNetV2 paper's detector)
DEFAULT_NUM_CLASSES = 20  # PASCAL VOC
ASPECT_RATIOS = (2, 3)  # per level: boxes of 1:1 (two scales), 2:1, 1:2, 3:1, 1:3 -> 6 per location
MIN_RATIO, MAX_RATIO = 0.2, 0.95  # box scales, as fractions of the image side, from the first level to the last
NUM_LEVELS = 6
# The extra blocks' channels relative to the stride-32 map's, capped at torchvision's ssdlite320 (512, 256,
# 256, 128): a 0.25x backbone gets a head in proportion rather than one that outweighs it.
EXTRA_RATIOS = (1.0, 0.5, 0.5, 0.25)
EXTRA_CAPS = (512, 256, 256, 128)
# For mAP on small data: keep nearly every candidate (score 0.001) and let AP's ranking decide.
POSTPROCESS_DEFAULTS: dict[str, float | int] = {
    "score_thresh": 0.001,
    "nms_thresh": 0.55,
    "detections_per_img": 200,
    "topk_candidates": 300,
}
BACKBONE_ARGS = ("backbone", "width", "groups")
# box scales: a data set's own objects may be far smaller than COCO's (BCCD's platelets are 5 % of the image
# side): ``train`` sizes them from the training boxes (train/detect.py) and the weights record them
ANCHOR_ARGS = ("anchor_min_ratio", "anchor_max_ratio")
DETECTOR_ARGS = (*BACKBONE_ARGS, *POSTPROCESS_DEFAULTS, *ANCHOR_ARGS)
# Written into a detector's weights metadata (``detector_metadata``): enough to rebuild it and run it.
META_KEYS = (
    "task", "num_classes", "resolution", "mean", "std", "interpolation", "backbone", "backbone_width",
    "model_kwargs", *POSTPROCESS_DEFAULTS, "anchor_aspect_ratios", "anchor_min_ratio", "anchor_max_ratio",
)  # fmt: skip
_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDLite settings for the new layers


def _round8(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


def _normal_init(module: nn.Module) -> None:
    """torchvision's SSDLite init of new layers: N(0, 0.03) convs, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.03)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _extra_block(cin: int, cout: int) -> nn.Sequential:
    """Halve the map: 1x1 to cout/2, 3x3 depthwise stride 2, 1x1 to cout, each BN + ReLU6."""
    mid = cout // 2
    act = nn.ReLU6
    return nn.Sequential(
        Conv2dNormActivation(cin, mid, 1, norm_layer=_NORM, activation_layer=act),
        Conv2dNormActivation(mid, mid, 3, stride=2, groups=mid, norm_layer=_NORM, activation_layer=act),
        Conv2dNormActivation(mid, cout, 1, norm_layer=_NORM, activation_layer=act),
    )


def _max_stride(module: nn.Module) -> int:
    """How much a layer downsamples: the largest conv/pool stride inside it (parallel branches count once)."""
    strides = [1]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            s = m.stride
            strides.append(s[0] if isinstance(s, tuple) else int(s))
    return max(strides)


class TorchvisionTrunk(nn.Module):
    """A torchvision classifier without its classifier, returning a stride-16 and the last (stride-32) map.

    The layers keep the classifier's names (``features.7``, ``stage3``), so the classifier's weights load
    by key; torchvision's networks have no ``features_only`` of their own. For the inverted-residual
    families the stride-16 map is the expansion (1x1) output of the first stride-32 block, as in the
    MobileNetV2 paper's SSDLite and torchvision's ``ssdlite320``: the block outputs there are too thin
    (24 channels at 0.25x) for the level that finds the smallest objects.
    """

    def __init__(self, net: nn.Module, family: str):
        super().__init__()
        if family == "shufflenet_v2":
            names = ["conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"]
            for n in names:
                self.add_module(n, getattr(net, n))
            s = net._stage_out_channels
            chans = [s[0], s[0], s[1], s[2], s[3], s[4]]
        else:  # mobilenet_v2, mobilenet_v3_*: one Sequential, each layer knows its out_channels
            self.features = net.features
            names = [f"features.{i}" for i in range(len(net.features))]
            chans = [layer.out_channels for layer in net.features]
        self._layers = [self.get_submodule(n) for n in names]  # plain list: registered above, not twice
        reduction, reductions = 1, []
        for layer in self._layers:
            reduction *= _max_stride(layer)
            reductions.append(reduction)
        if reductions[-1] != 32 or 16 not in reductions:
            raise ValueError(f"{family}: expected layers at strides 16 and 32, got {reductions}")
        c4 = max(i for i, r in enumerate(reductions) if r == 16)
        self._split: tuple[int, list[nn.Module]] | None = None  # (layer, its parts) when tapping inside a block
        tap, c4_chans = names[c4], chans[c4]
        nxt = self._layers[c4 + 1]
        attr = "block" if hasattr(nxt, "block") else "conv"  # torchvision's V3 / V2 InvertedResidual
        parts = getattr(nxt, attr, None)
        if isinstance(parts, nn.Sequential) and _is_expansion(parts[0]):
            # A stride-2 block has no residual connection, so running its parts in turn is the block itself.
            self._split = (c4 + 1, list(parts))
            tap, c4_chans = f"{names[c4 + 1]}.{attr}.0", parts[0].out_channels
        self._taps = {len(names) - 1} if self._split else {c4, len(names) - 1}
        self.taps = (tap, names[-1])
        self.out_channels = (c4_chans, chans[-1])

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self._layers):
            if self._split and i == self._split[0]:
                expand, *rest = self._split[1]
                x = expand(x)
                outs.append(x)
                for part in rest:
                    x = part(x)
            else:
                x = layer(x)
            if i in self._taps:
                outs.append(x)
        return outs


def _is_expansion(m: nn.Module) -> bool:
    """A 1x1 dense conv + norm + activation (torchvision's ``Conv2dNormActivation``) opening a block."""
    conv = m[0] if isinstance(m, nn.Sequential) and len(m) else None
    return isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1


def build_backbone(backbone: str, **kwargs: Any) -> tuple[nn.Module, tuple[str, str], tuple[int, int]]:
    """(body returning the stride-16 and stride-32 maps, their module names in it, their channels) of a
    registered classifier name, built untrained without its classifier."""
    family = lookup(backbone)[0]
    if family in TORCHVISION_FAMILIES:
        trunk = TorchvisionTrunk(build_model(backbone, **kwargs), family)
        return trunk, trunk.taps, trunk.out_channels
    body = build_model(backbone, features_only=True, out_indices=(2, 3), **kwargs)
    info = body.feature_info
    assert [f["reduction"] for f in info] == [16, 32], info
    return body, (info[0]["module"], info[1]["module"]), (info[0]["num_chs"], info[1]["num_chs"])


class SSDLiteBackbone(nn.Module):
    """The classifier body (``body``) and four extra blocks (``extras``): six maps, strides 16 to 512."""

    def __init__(self, body: nn.Module, taps: tuple[str, str], channels: tuple[int, int]):
        super().__init__()
        self.body = body
        self.taps = taps
        extra = [min(cap, _round8(channels[1] * r)) for r, cap in zip(EXTRA_RATIOS, EXTRA_CAPS, strict=True)]
        cins = [channels[1], *extra[:-1]]
        self.extras = nn.ModuleList(_extra_block(i, o) for i, o in zip(cins, extra, strict=True))
        _normal_init(self.extras)
        self.out_channels = [*channels, *extra]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = list(self.body(x))
        x = feats[-1]
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return OrderedDict((str(i), f) for i, f in enumerate(feats))


class SSDLite(SSD):
    """torchvision's ``SSD`` with an ``SSDLiteHead`` on an ``SSDLiteBackbone``; ``num_classes`` is K
    object classes (the SSD inside has K + 1, label 0 background).

    Train mode: ``model(images, targets)`` -> {"bbox_regression", "classification"} losses, targets a list
    of {"boxes": (M, 4) float x1y1x2y2 in input pixels, "labels": (M,) int64 in 1..K}. Eval mode:
    ``model(images)`` -> one {"boxes", "scores", "labels"} per image, boxes in the input's pixels.
    Train with at least 2 images a batch: the last levels are 1x1, where BatchNorm needs more than one value.
    """

    def __init__(
        self,
        backbone: SSDLiteBackbone,
        num_classes: int,
        resolution: int,
        mean: Sequence[float],
        std: Sequence[float],
        anchor_min_ratio: float = MIN_RATIO,
        anchor_max_ratio: float = MAX_RATIO,
        **postprocess: Any,
    ):
        if not 0 < float(anchor_min_ratio) < float(anchor_max_ratio) <= 1:
            raise ValueError(
                f"anchor_min_ratio {anchor_min_ratio!r} and anchor_max_ratio {anchor_max_ratio!r} must satisfy "
                "0 < min < max <= 1 (fractions of the image side)"
            )
        anchors = DefaultBoxGenerator(
            [list(ASPECT_RATIOS)] * NUM_LEVELS, min_ratio=float(anchor_min_ratio), max_ratio=float(anchor_max_ratio)
        )
        head = SSDLiteHead(list(backbone.out_channels), anchors.num_anchors_per_location(), num_classes + 1, _NORM)
        settings = {**POSTPROCESS_DEFAULTS, **postprocess}
        super().__init__(
            backbone,
            anchors,
            (resolution, resolution),
            num_classes + 1,
            image_mean=[float(v) for v in mean],
            image_std=[float(v) for v in std],
            head=head,
            **settings,
        )
        self.num_classes = num_classes  # object classes, without background

    def forward(  # type: ignore[override]
        self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """SSD's forward on float images in [0, 1]; a (N, 3, H, W) batch is taken as N images."""
        if isinstance(images, Tensor):
            images = [images] if images.dim() == 3 else list(images.unbind(0))
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
                raise ValueError(
                    f"images must be float RGB tensors (3, H, W) in [0, 1], got {img.dtype} {tuple(img.shape)}"
                    " (uint8 images: divide by 255)"
                )
        if self.training and targets:
            self._check_labels(targets)
        return super().forward(images, targets)

    def _check_labels(self, targets: list[dict[str, Tensor]]) -> None:
        """Label 0 would silently train as background and K + 1 crash inside cross-entropy: say so instead."""
        labels = torch.cat([t["labels"].reshape(-1) for t in targets])
        if labels.numel():
            lo, hi = (int(v) for v in torch.aminmax(labels))
            if lo < 1 or hi > self.num_classes:
                raise ValueError(
                    f"target labels must be in 1..{self.num_classes} (num_classes={self.num_classes} object "
                    f"classes; 0 is the background the SSD adds), got {lo}..{hi}"
                )

    def forward_network(self, x: Tensor) -> dict[str, Tensor]:
        """The network alone on a normalised, resized batch: {"bbox_regression": (N, A, 4), "cls_logits":
        (N, A, K + 1)} over all A default boxes; what an exporter traces (decoding and NMS stay outside)."""
        return self.head(list(self.backbone(x).values()))

    def profile_forward(self, x: Tensor, keep: Callable[[Tensor], None]) -> dict[str, Tensor]:
        """``complexity.profile``'s hook: ``forward_network``, reporting each pyramid level to ``keep`` as it
        is made (it stays alive until the head has read it)."""
        body = self.backbone.body
        tapped = [body.get_submodule(t) for t in self.backbone.taps] + list(self.backbone.extras)
        hooks = [m.register_forward_hook(lambda m, i, o: keep(o)) for m in tapped]
        try:
            return self.forward_network(x)
        finally:
            for h in hooks:
                h.remove()

    def set_preprocess(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The normalisation the backbone's weights were trained with (the SSD's transform and the cfg)."""
        self.transform.image_mean = [float(v) for v in mean]
        self.transform.image_std = [float(v) for v in std]
        self.pretrained_cfg.update(mean=tuple(self.transform.image_mean), std=tuple(self.transform.image_std))


def resolve_detector_kwargs(name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(backbone name, backbone keyword arguments, post-processing settings) of a detector name and its
    keyword arguments; refuses what the name fixes or does not take, with the name to use instead."""
    family, fixed = lookup(name)
    if family not in DETECTOR_FAMILIES:
        raise ValueError(f"{name!r} is a classifier, not a detector; use 'ssdlite_{name}'")
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"{name!r} fixes {', '.join(sorted(clash))}; use 'ssdlite' with backbone= to choose it")
    unknown = set(kwargs) - set(DETECTOR_ARGS)
    if unknown:
        takes = sorted(set(DETECTOR_ARGS) - set(fixed))
        raise ValueError(f"{name!r} does not take {', '.join(sorted(unknown))} (it takes {', '.join(takes)})")
    backbone = fixed.get("backbone", kwargs.get("backbone"))
    if backbone is None:
        raise ValueError(
            f"{name!r} needs backbone=, a classifier family or name: e.g. backbone='fd_mobilenet', width=0.5, "
            "or a registered detector such as 'ssdlite_fd_mobilenet_050'"
        )
    if not isinstance(backbone, str) or not is_model(backbone) or model_task(backbone) != "classification":
        raise ValueError(f"backbone must be a classifier name from `fdmobilenet models`, got {backbone!r}")
    bb_family, bb_fixed = lookup(backbone)
    bb_kwargs = {k: kwargs[k] for k in ("width", "groups") if kwargs.get(k) is not None}
    for k in bb_kwargs:
        if k in bb_fixed:
            raise ValueError(
                f"{name!r} fixes {k} through its backbone {backbone!r}; use 'ssdlite_{bb_family}' with {k}= "
                f"(or 'ssdlite' with backbone={bb_family!r})"
            )
        if k == "groups" and bb_family != "shufflenet_v1":
            raise ValueError(f"groups= is for shufflenet_v1 backbones, not {backbone!r}")
    post = {k: kwargs[k] for k in (*POSTPROCESS_DEFAULTS, *ANCHOR_ARGS) if k in kwargs}
    return backbone, bb_kwargs, post


def build_detector(
    name: str, num_classes: int = DEFAULT_NUM_CLASSES, resolution: int = DEFAULT_RESOLUTION, **kwargs: Any
) -> SSDLite:
    """An untrained SSDLite detector of a registered ``ssdlite*`` name with its ``pretrained_cfg``.

    ``num_classes`` counts object classes (no background: labels are 1..K). Keyword arguments:
    ``backbone`` (for bare ``ssdlite``), ``width``/``groups`` (for a bare-family backbone), and the
    post-processing settings ``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``;
    the anchor scales ``anchor_min_ratio``/``anchor_max_ratio`` (first and last level, fractions of the side).
    """
    backbone, bb_kwargs, post = resolve_detector_kwargs(name, kwargs)
    check_resolution(resolution)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be the number of object classes (>= 1, no background), got {num_classes!r}")
    body, taps, channels = build_backbone(backbone, **bb_kwargs)
    pre = default_cfg(resolution)
    model = SSDLite(SSDLiteBackbone(body, taps, channels), num_classes, resolution, pre["mean"], pre["std"], **post)
    bb_fixed = lookup(backbone)[1]
    model.pretrained_cfg = {
        "architecture": name,
        "task": "detection",
        "num_classes": num_classes,
        "resolution": resolution,
        "input_size": (3, resolution, resolution),
        "mean": tuple(pre["mean"]),
        "std": tuple(pre["std"]),
        "interpolation": "bilinear",  # the SSD transform's resize
        "backbone": backbone,
        "backbone_width": float(bb_fixed.get("width", bb_kwargs.get("width", 1.0))),
        "model_kwargs": {k: kwargs[k] for k in BACKBONE_ARGS if kwargs.get(k) is not None},
        **{k: getattr(model, k) for k in POSTPROCESS_DEFAULTS},
        "anchor_aspect_ratios": [list(ASPECT_RATIOS)] * NUM_LEVELS,
        "anchor_min_ratio": float(post.get("anchor_min_ratio", MIN_RATIO)),
        "anchor_max_ratio": float(post.get("anchor_max_ratio", MAX_RATIO)),
    }
    model.default_cfg = model.pretrained_cfg  # older timm name
    return model


def detector_metadata(model: SSDLite, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The metadata to save a detector's weights with (``weights.save_weights``): ``create_model`` and
    ``build_from_weights`` rebuild the model from it. ``class_names`` are the K object classes, label 1 first."""
    cfg = model.pretrained_cfg
    meta: dict[str, Any] = {"model": cfg["architecture"]}
    for k in META_KEYS:
        v = cfg[k]
        meta[k] = list(v) if isinstance(v, tuple) else v
    if class_names is not None:
        if len(class_names) != model.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {model.num_classes} classes")
        meta["class_names"] = [str(c) for c in class_names]
    return meta


def macs_by_part(p: Profile) -> dict[str, int]:
    """A detector profile's MACs split into ``backbone`` (the classifier body), ``extras`` and ``head``."""
    parts = {"backbone": "backbone.body.", "extras": "backbone.extras.", "head": "head."}
    out = {k: sum(layer.macs for layer in p.layers if layer.name.startswith(pre)) for k, pre in parts.items()}
    out["total"] = p.macs
    return out
