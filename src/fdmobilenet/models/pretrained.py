"""Weights that know their model: the authors' checkpoints converted, the released ones cached, and
models built from a weights file.

The file formats live in ``weights.py`` and downloads in ``hub.py``; this module adds what needs an
architecture (``_builder.py``): which model a state dict belongs to (derived from the settings tables),
each family's key map (its ``pretrained_filter_fn``) and the metadata written with converted weights.
Detectors (``detection.py``, imported only when one is built) load either a classifier's weights into
their backbone or a whole detector's weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._outputs import check_output
from .._utils import remove_orphan_temps
from ..preprocess import Preprocess, imagenet_classes
from ..weights import check_state_dict, read_weights, save_weights
from ._builder import build_model, pretrained_filter_fn
from ._registry import WIDTHS, is_model, model_task
from ._releases import RELEASES
from .hub import converted_path, fetch_release
from .mobilenet import infer_table_and_width

_NAMED = {w: tag for tag, w in WIDTHS.items() if tag in ("025", "050", "075", "100")}


def infer_model_name(sd: dict[str, torch.Tensor]) -> str:
    """The registered FD-MobileNet/MobileNet V1 name of a state dict (ours or the authors')."""
    family, width = infer_table_and_width(sd, _NAMED)
    return f"{family}_{_NAMED[width]}"


def _filtered(sd: dict[str, torch.Tensor], name: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in our key names, model name): the name given, else inferred from the weights. An
    unregistered name keeps the keys as they are; building it fails later with the list of names."""
    name = name or infer_model_name(sd)
    return (pretrained_filter_fn(name)(sd) if is_model(name) else sd), name


def read_pretrained(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(state dict in our key names, metadata, model name) of a weights file of any supported kind."""
    sd, meta = read_weights(path)
    sd, name = _filtered(sd, meta.get("model"))
    return sd, meta, name


def convert_authors_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, model_name: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Convert an authors' ``.pth.tar`` checkpoint (or any state-dict file) to our safetensors with metadata;
    returns the metadata written.

    The model is built and loaded once before writing, so a file that would not load is never written. An
    existing ``dst`` is replaced only when fdmobilenet wrote it (weights with our metadata), or with
    ``overwrite``; a link, folder or device never (``_outputs``): checked before ``src`` is read.
    """
    if Path(dst).exists() and Path(src).exists() and Path(dst).samefile(src):
        raise ValueError(f"{dst} is the input file itself: converting in place would replace the original; "
                         "give another output file")  # fmt: skip
    check_output(dst, "dst", overwrite)
    remove_orphan_temps(Path(dst).parent, Path(dst).name)  # of a killed convert to the same file
    sd, src_meta = read_weights(src)
    sd, name = _filtered(sd, model_name)
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 1000
    model = build_model(name, num_classes=num_classes)
    check_state_dict(model, sd, str(src))
    meta: dict[str, Any] = {
        "model": name,
        "num_classes": num_classes,
        **Preprocess(224).to_meta(),
        "source": src_meta.get("source_name", Path(src).name),
    }
    if num_classes == 1000:
        synsets, names = imagenet_classes()
        meta["class_names"] = names
        meta["synsets"] = synsets
    model.load_state_dict(sd, strict=False)
    save_weights(model.state_dict(), dst, meta)
    return meta


def fits(build: Callable[[], nn.Module], sd: dict[str, torch.Tensor], source: str) -> None:
    """Check ``sd`` against the model ``build`` makes, built on the meta device (nothing allocated): metadata
    that disagrees with the tensors present (a width or class count the file does not hold) is refused before
    a real model of that size is built."""
    with torch.device("meta"):
        probe = build()
    check_state_dict(probe, sd, source)


def released_weights(name: str, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The converted safetensors of ``name``'s released weights, fetched (``hub.py``) and converted on first use."""
    converted = converted_path(name, root)
    if not converted.is_file():
        convert_authors_checkpoint(fetch_release(name, root, progress), converted, name)
    return converted


def pretrained_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """What ``pretrained=True`` loads: ``$FDM_WEIGHTS/<name>.safetensors`` when set (offline use), else the
    released file via the cache."""
    d = os.environ.get("FDM_WEIGHTS")
    if d:
        return Path(d) / f"{name}.safetensors"
    if name not in RELEASES:
        raise ValueError(
            f"no released weights for {name!r} (the authors released {', '.join(RELEASES)}); "
            "pass pretrained=PATH to a weights file, or set $FDM_WEIGHTS to a folder of <name>.safetensors"
        )
    return released_weights(name, cache)


def build_from_weights(
    path: str | os.PathLike, model_name: str | None = None, resolution: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a weights file was made for (name and class count from its metadata) and load it.

    A detector's file (metadata ``task: detection`` or a detector ``model``) rebuilds the detector:
    ``model``, ``model_kwargs``, ``num_classes``, ``resolution`` and the post-processing settings.
    """
    sd, meta = read_weights(path)
    Preprocess.from_meta(meta, resolution, source=str(path))  # absurd metadata is refused before anything is built
    if is_detector_meta(meta) or (model_name and is_model(model_name) and model_task(model_name) == "detection"):
        return _detector_from_weights(sd, meta, str(path), model_name, resolution)
    sd, inferred = _filtered(sd, meta.get("model"))
    name = model_name or inferred
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else meta.get("num_classes", 1000)
    kwargs = meta.get("model_kwargs", {})  # e.g. width= of a bare family name picked by a budget
    res = resolution or meta.get("resolution", 224)
    fits(lambda: build_model(name, num_classes=num_classes, resolution=res, **kwargs), sd, str(path))
    model = build_model(name, num_classes=num_classes, resolution=res, **kwargs)
    model.load_state_dict(sd, strict=False)
    model.eval()
    meta.setdefault("model", name)
    return model, meta


# --- detectors -----------------------------------------------------------------------------------------

CLASSIFIER_HEAD_PREFIXES = ("classifier.", "fc.")  # dropped when classification weights feed a detector
DETECTOR_CLASS_HEAD = "head.classification_head."  # what depends on the class count
POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates")
ANCHOR_KEYS = ("anchor_aspect_ratios", "anchor_min_ratio", "anchor_max_ratio")
ANCHOR_SCALES = ("anchor_min_ratio", "anchor_max_ratio")  # rebuild arguments; the aspect ratios are fixed


def is_detector_meta(meta: dict[str, Any]) -> bool:
    """Whether a weights file's (or an exported file's) metadata describes a detector rather than a classifier:
    the one answer every command asks (``eval``/``predict``, checkpoints, the deploy pipeline)."""
    name = meta.get("model")
    by_name = isinstance(name, str) and is_model(name) and model_task(name) == "detection"
    return meta.get("task") == "detection" or by_name


def detector_num_classes(sd: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
    """K object classes of a detector's weights: the metadata's, else read off the first level's class head."""
    if "num_classes" in meta:
        return int(meta["num_classes"])
    bias = sd.get(f"{DETECTOR_CLASS_HEAD}module_list.0.1.bias")
    if bias is None:
        raise ValueError("detector weights without num_classes in their metadata or a class head to read it from")
    from .detection import ASPECT_RATIOS  # here: torchvision loads only for detectors

    return bias.shape[0] // (2 + 2 * len(ASPECT_RATIOS)) - 1


def _detector_from_weights(
    sd: dict[str, torch.Tensor], meta: dict[str, Any], source: str, model_name: str | None, resolution: int | None
) -> tuple[nn.Module, dict[str, Any]]:
    from .detection import DEFAULT_RESOLUTION, build_detector  # here: torchvision loads only for detectors

    name = model_name or meta.get("model")
    if not isinstance(name, str):
        raise ValueError(f"{source}: detector weights without a 'model' in their metadata; pass the model name")
    kwargs = {**meta.get("model_kwargs", {}), **{k: meta[k] for k in (*POSTPROCESS_KEYS, *ANCHOR_SCALES) if k in meta}}
    res = resolution or int(meta.get("resolution", DEFAULT_RESOLUTION))
    k = detector_num_classes(sd, meta)
    with torch.device("meta"):  # what the metadata asks for, checked against the tensors before it is allocated
        probe = build_detector(name, num_classes=k, resolution=res, **kwargs)
    own = probe.state_dict()
    odd = [n for n in own if n.startswith(DETECTOR_CLASS_HEAD) and n in sd and sd[n].shape != own[n].shape]
    if odd and model_name is None:
        raise ValueError(
            f"{source}: num_classes {k} in the metadata does not fit the class head it holds ({odd[0]}: "
            f"{tuple(sd[odd[0]].shape)}, not {tuple(own[odd[0]].shape)}); the file is damaged or altered"
        )
    load_detector_weights(probe, sd, meta, source, check_only=True)
    model = build_detector(name, num_classes=k, resolution=res, **kwargs)
    load_detector_weights(model, sd, meta, source)
    model.eval()
    meta.setdefault("model", name)
    return model, meta


def load_detector_weights(
    model: nn.Module, sd: dict[str, torch.Tensor], meta: dict[str, Any], source: str, check_only: bool = False
) -> None:
    """A whole detector's weights into ``model``. With another class count the class head keeps its fresh
    initialisation (recorded as ``pretrained_cfg["reinitialised"]``); everything else must fit. ``check_only``:
    the checks alone (``model`` built on the meta device)."""
    own = model.state_dict()
    cls_keys = [k for k in own if k.startswith(DETECTOR_CLASS_HEAD)]
    sd = dict(sd)
    reinit = any(k in sd and sd[k].shape != own[k].shape for k in cls_keys)
    if reinit:
        sd.update({k: own[k] for k in cls_keys})
    cfg = model.pretrained_cfg
    try:
        check_state_dict(model, sd, source)
    except ValueError as e:
        held = meta.get("model", "another detector")
        kw = "".join(f", {k}={v!r}" for k, v in meta.get("model_kwargs", {}).items())
        raise ValueError(
            f"pretrained={source}: these detector weights ({held}) do not fit {cfg['architecture']}; build their "
            f"own model: create_model({held!r}{kw}, pretrained=...) or build_from_weights(...).\n{e}"
        ) from None
    for k in ANCHOR_KEYS:  # the head's outputs mean these boxes: other anchors would decode nonsense
        if k in meta and json.loads(json.dumps(meta[k])) != json.loads(json.dumps(cfg[k])):
            raise ValueError(
                f"pretrained={source}: trained with {k}={meta[k]}, this version builds {cfg[k]}; "
                "use the fdmobilenet version that wrote the file"
            )
    if check_only:
        return
    model.load_state_dict(sd, strict=False)
    p = Preprocess.from_meta(meta, cfg["resolution"], source=source)
    model.set_preprocess(p.mean, p.std)
    if reinit:
        cfg["reinitialised"] = [DETECTOR_CLASS_HEAD.rstrip(".")]
    elif "class_names" in meta:
        cfg["class_names"] = list(meta["class_names"])


def load_backbone_weights(model: nn.Module, sd: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
    """A classifier's weights (ours or the authors', as ``read_weights`` gives them) into a detector's
    backbone; the classifier layer is dropped and the normalisation they were trained with is adopted."""
    cfg = model.pretrained_cfg
    backbone = cfg["backbone"]
    sd = pretrained_filter_fn(backbone)(sd)  # the authors' key names -> ours
    sd = {k: v for k, v in sd.items() if not k.startswith(CLASSIFIER_HEAD_PREFIXES)}
    body = model.backbone.body
    try:
        check_state_dict(body, sd, source)
    except ValueError as e:
        held = meta.get("model")
        hint = f" or the detector whose backbone they are ('ssdlite_{held}')" if isinstance(held, str) else ""
        raise ValueError(
            f"pretrained={source}: these classification weights{f' ({held})' if held else ''} do not fit the "
            f"backbone {backbone!r} of {cfg['architecture']!r}; pass weights of {backbone}{hint}.\n{e}"
        ) from None
    body.load_state_dict(sd, strict=False)
    p = Preprocess.from_meta(meta, cfg["resolution"], source=source)
    model.set_preprocess(p.mean, p.std)
