"""Weights on disk: safetensors with metadata, and conversion of the authors' checkpoints.

Nothing here unpickles code: safetensors holds only tensors, and the authors' legacy
``.pth.tar`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

META_KEY = "fdmobilenet"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Save tensors as safetensors with our metadata (model, classes, preprocessing) as JSON."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, st_save(tensors, metadata={"format": "pt", META_KEY: json.dumps(meta)}))


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a weights file: our safetensors, or a legacy PyTorch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except SafetensorError as st_err:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as pt_err:
            raise ValueError(
                f"{path} is neither a safetensors file ({st_err}) nor a PyTorch checkpoint "
                f"loadable without executing code ({type(pt_err).__name__}: {str(pt_err)[:200]})"
            ) from pt_err
    else:
        try:
            return tensors, json.loads(raw_meta.get(META_KEY, "{}"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: the '{META_KEY}' metadata is not valid JSON ({e})") from e
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    meta = {"source": str(path.name)}
    if isinstance(ckpt, dict) and isinstance(ckpt.get("name"), str):
        meta["source_name"] = ckpt["name"]
    return convert_state_dict(sd), meta


_OFFICIAL = [
    (re.compile(r"^features\.conv_0\.(.+)$"), r"stem.conv.\1"),
    (re.compile(r"^features\.norm_0\.(.+)$"), r"stem.bn.\1"),
    (re.compile(r"^features\.(dw|pw)_conv_(\d+)\.(.+)$"), r"blocks.\2.\1.conv.\3"),
    (re.compile(r"^features\.(dw|pw)_norm_(\d+)\.(.+)$"), r"blocks.\2.\1.bn.\3"),
]


def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the authors' parameter names (``features.dw_conv_3.weight``) onto ours (``blocks.3.dw.conv.weight``).

    Keys already in our naming pass through unchanged; a ``module.`` prefix (DataParallel) is dropped.
    """
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        for pattern, repl in _OFFICIAL:
            if pattern.match(key):
                key = pattern.sub(repl, key)
                break
        out[key] = value.float() if value.is_floating_point() else value
    return out


def infer_model_name(sd: dict[str, torch.Tensor]) -> str:
    """Guess the registered FD-MobileNet/MobileNet V1 name from block count and stem width."""
    if "stem.conv.weight" not in sd:
        raise ValueError("cannot infer the model from these weights; pass the model name explicitly")
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    family = {11: "fd_mobilenet", 13: "mobilenet_v1"}.get(n_blocks)
    tag = {8: "025", 16: "050", 24: "075", 32: "100"}.get(sd["stem.conv.weight"].shape[0])
    if family is None or tag is None:
        raise ValueError("cannot infer the model from these weights; pass the model name explicitly")
    return f"{family}_{tag}"


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError naming every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    # Pre-1.0 PyTorch checkpoints (the authors') have no BatchNorm step counters; they are unused in eval.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        arch = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
        parts = [f"weights in {source} do not fit {arch}:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"  {label} ({len(items)}): {', '.join(items[:8])}{more}")
        parts.append(
            "Pass the model name the weights were trained for (see the file's metadata or `fdmobilenet models`)."
        )
        raise ValueError("\n".join(parts))


def load_weights(model: nn.Module, path: str | os.PathLike, strict_classifier: bool = True) -> dict[str, Any]:
    """Load a weights file into ``model`` after checking every key and shape; return its metadata.

    With ``strict_classifier=False`` a classifier of another size is skipped (fine-tuning to a new
    label set), everything else must fit.
    """
    sd, meta = read_weights(path)
    if not strict_classifier and hasattr(model, "classifier"):
        own = model.state_dict()
        for k in ("classifier.weight", "classifier.bias"):
            if k in sd and k in own and sd[k].shape != own[k].shape:
                del sd[k]
        for k in ("classifier.weight", "classifier.bias"):
            sd.setdefault(k, own[k])
    if getattr(model, "features_only", False):
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=False)
    return meta


def convert(src: str | os.PathLike, dst: str | os.PathLike, model_name: str | None = None) -> dict[str, Any]:
    """Convert an authors' checkpoint to safetensors with metadata; returns the metadata written.

    The model is built and loaded once before writing, so a file that would not load is never written.
    """
    from .data import imagenet_classes
    from .models import create_model, default_cfg

    sd, src_meta = read_weights(src)
    name = model_name or infer_model_name(sd)
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 1000
    model = create_model(name, num_classes=num_classes)
    check_state_dict(model, sd, str(src))
    cfg = default_cfg(224)
    meta: dict[str, Any] = {
        "model": name,
        "num_classes": num_classes,
        "resolution": 224,
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "crop_pct": cfg["crop_pct"],
        "interpolation": cfg["interpolation"],
        "source": src_meta.get("source_name", Path(src).name),
    }
    if num_classes == 1000:
        synsets, names = imagenet_classes()
        meta["class_names"] = names
        meta["synsets"] = synsets
    model.load_state_dict(sd, strict=False)
    save_weights(model.state_dict(), dst, meta)
    return meta


def build_from_weights(
    path: str | os.PathLike, model_name: str | None = None, resolution: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a weights file was made for (name and class count from its metadata) and load it."""
    from .models import create_model

    sd, meta = read_weights(path)
    name = model_name or meta.get("model") or infer_model_name(sd)
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else meta.get("num_classes", 1000)
    kwargs = meta.get("model_kwargs", {})  # e.g. width= of a bare family name picked by a budget
    model = create_model(name, num_classes=num_classes, resolution=resolution or meta.get("resolution", 224), **kwargs)
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=False)
    model.eval()
    meta.setdefault("model", name)
    return model, meta
