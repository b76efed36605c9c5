"""The metadata every export carries, so a runtime can preprocess and label images without PyTorch.

ONNX stores it as string key/value pairs (``metadata_props``, which ONNX Runtime reads alone);
TorchScript and pt2 store the same dict as a JSON extra file. The preprocessing keys come from
``Preprocess``, the one description of them shared with weights files and checkpoints.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

from .. import __version__
from .._utils import require
from ..complexity import profile
from ..preprocess import Preprocess, imagenet_classes

# Keys of the ONNX metadata whose values are JSON (the rest are plain strings).
_JSON_KEYS = {"num_classes", "class_names", "mean", "std", "crop_pct", "input_size", "resolution", "macs"}
_JSON_KEYS |= {"calibration", "opset", "quantization"}
# detectors (deploy.detector): post-processing settings, anchors, box coder, output names
_JSON_KEYS |= {"score_thresh", "nms_thresh", "detections_per_img", "topk_candidates", "num_anchors", "outputs"}
_JSON_KEYS |= {"anchor_aspect_ratios", "anchor_min_ratio", "anchor_max_ratio", "box_coder_weights", "bbox_xform_clip"}
# The order the preprocessing keys have always had in exported files (kept, so files stay byte-identical).
_PREPROCESS_ORDER = ("mean", "std", "crop_pct", "interpolation", "resolution")


def export_metadata(meta: dict[str, Any], resolution: int, model: nn.Module) -> dict[str, Any]:
    """What a runtime needs to preprocess and label images without the PyTorch package: stored in the file."""
    num_classes = int(meta.get("num_classes") or model.classifier.out_features)
    names = meta.get("class_names")
    if names is None and num_classes == 1000:
        names = imagenet_classes()[1]
    preprocess = Preprocess.from_meta(meta, resolution).to_meta()
    return {
        "model": str(meta["model"]),
        "num_classes": num_classes,
        "class_names": list(names) if names is not None else [str(i) for i in range(num_classes)],
        **{k: preprocess[k] for k in _PREPROCESS_ORDER},
        "input_size": [3, int(resolution), int(resolution)],
        "macs": profile(model, resolution).macs,
        "precision": "fp32",
        "producer": f"fdmobilenet {__version__}",
    }


INTEGER_PRECISIONS = ("int8", "a16w8")  # quantized files: INT8 weights, INT8 or 16-bit activations


def complete_metadata(meta: dict[str, Any], input_shape: list, num_classes: int | None) -> dict[str, Any]:
    """Fill what a foreign ONNX file (not from `fdmobilenet export`) lacks: ImageNet preprocessing defaults."""
    meta = dict(meta)
    if not meta.get("resolution"):
        meta["resolution"] = input_shape[-1] if input_shape and isinstance(input_shape[-1], int) else 224
    defaults = Preprocess(resolution=meta["resolution"]).to_meta()
    for key in ("mean", "std", "crop_pct"):
        meta.setdefault(key, defaults[key])
    meta.setdefault("model", meta.get("model") or "onnx")
    meta.setdefault("precision", "unknown")
    if "class_names" not in meta:
        if num_classes == 1000:
            meta["class_names"] = imagenet_classes()[1]
        elif num_classes:
            meta["class_names"] = [str(i) for i in range(num_classes)]
    return meta


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata values are strings: JSON for the structured keys, ``str`` for the rest."""
    return {k: json.dumps(v) if k in _JSON_KEYS else str(v) for k, v in meta.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of ``encode_metadata``; unknown keys stay strings."""
    out: dict[str, Any] = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v) if k in _JSON_KEYS else v
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The fdmobilenet metadata stored in an ONNX file (empty for a foreign file)."""
    onnx = require("onnx", "reading ONNX metadata")
    m = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in m.metadata_props})


def set_onnx_metadata(model_proto: Any, meta: dict[str, Any]) -> None:
    """Replace an ONNX ModelProto's metadata with ``meta`` and describe the file in its doc string."""
    del model_proto.metadata_props[:]
    for k, v in encode_metadata(meta).items():
        p = model_proto.metadata_props.add()
        p.key, p.value = k, v
    model_proto.doc_string = f"{meta.get('model')} ({meta.get('precision')}), exported by {meta.get('producer')}"
