"""Weights on disk: safetensors with metadata, the authors' legacy files, and strict loading.

Nothing here unpickles code: safetensors holds only tensors, and the authors' legacy
``.pth.tar`` files are read with ``torch.load(weights_only=True)``. This module knows no
architecture: a model class maps foreign key names itself (``checkpoint_filter_fn``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from . import _schema
from ._utils import atomic_write_bytes

META_KEY = "fdmobilenet"


def save_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Save tensors as safetensors with our metadata (model, classes, preprocessing) as JSON."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, st_save(tensors, metadata={"format": "pt", META_KEY: json.dumps(meta)}))


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a weights file: our safetensors, or a legacy PyTorch checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a weights file (.safetensors or .pth.tar)")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except SafetensorError as st_err:
        _check_zip_records(path)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as pt_err:
            raise ValueError(
                f"{path} is neither a safetensors file ({_schema.printable(str(st_err))[:120]}) nor a PyTorch "
                f"checkpoint loadable without executing code ({_load_failure(pt_err)})"
            ) from pt_err
    else:
        meta = _schema.parse_json(raw_meta.get(META_KEY, "{}"), f"{path}: the '{META_KEY}' metadata")
        return tensors, _schema.weights_meta(meta, path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    meta = {"source": str(path.name)}
    if isinstance(ckpt, dict) and isinstance(ckpt.get("name"), str):
        meta["source_name"] = ckpt["name"]
    return _legacy_tensors(sd), meta


def _check_zip_records(path: Path) -> None:
    """Refuse a zip-format checkpoint with compressed records before torch reads it: ``torch.save`` stores
    every record uncompressed, and a deflated one inflates to whatever it claims (2.4 MB -> 2.9 GB)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"{path}: a damaged zip archive ({_schema.printable(str(e))[:120]})") from None
    if packed:
        raise ValueError(
            f"{path}: record {_schema.excerpt(packed[0].filename, 60)} is compressed ({packed[0].file_size:,} bytes "
            "inflated); torch.save never writes that, so the file was not made by PyTorch: refused"
        )


def _load_failure(e: Exception) -> str:
    """Why torch.load refused, in one short line (its own text is a page of advice ending mid-sentence)."""
    said = str(e)
    if "weights_only" in said or "Weights only load failed" in said:
        return ("it holds Python objects besides tensors, and unpickling them could run code: refused; convert it "
                "only where you trust where it came from")  # fmt: skip
    first = _schema.printable(said.strip().splitlines()[0] if said.strip() else "")
    return f"{type(e).__name__}: {first[:160]}"


def _legacy_tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DataParallel ``module.`` prefix and make floating tensors fp32; names are left to the model
    (its ``checkpoint_filter_fn`` maps the authors' keys)."""
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in sd.items()}


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
    _check_values(own, sd, source)
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


def _check_values(own: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], source: str) -> None:
    """Refuse tensors a model would load silently but never work with: integers where it has floats
    (tampered or quantized elsewhere), and NaN/inf (a damaged file or a diverged run)."""
    for k, v in sd.items():
        if k not in own or not own[k].is_floating_point():
            continue
        if not v.is_floating_point():
            raise ValueError(f"{source}: {k} is {str(v.dtype).removeprefix('torch.')}, not floating point; the file "
                             "was altered or converted elsewhere: use the original weights")  # fmt: skip
        if not torch.isfinite(v).all():
            raise ValueError(f"{source}: {k} holds NaN/inf values (a damaged file, or a run that diverged); "
                             "use another checkpoint")  # fmt: skip


def load_weights(model: nn.Module, path: str | os.PathLike, strict_classifier: bool = True) -> dict[str, Any]:
    """Load a weights file into ``model`` after checking every key and shape; return its metadata.

    With ``strict_classifier=False`` a classifier of another size (or none, ``num_classes=0``) is
    skipped: fine-tuning to a new label set, feature extraction. Everything else must fit.
    """
    sd, meta = read_weights(path)
    if hasattr(model, "checkpoint_filter_fn"):
        sd = model.checkpoint_filter_fn(sd)
    if not strict_classifier and hasattr(model, "classifier"):
        own = model.state_dict()
        for k in ("classifier.weight", "classifier.bias"):
            if k in sd and (k not in own or sd[k].shape != own[k].shape):
                del sd[k]  # another label set, or no classifier at all (num_classes=0)
            if k in own:
                sd.setdefault(k, own[k])
    if getattr(model, "features_only", False):
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=False)
    return meta
