"""TorchScript and ``torch.export`` (pt2) files: BatchNorm folded, metadata as the extra file ``fdmobilenet.json``."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import torch
from torch import nn

from .._utils import atomic_write_bytes
from .fold import fold_batchnorm
from .metadata import export_metadata

_META_FILE = "fdmobilenet.json"


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224
) -> dict[str, Any]:
    """A traced TorchScript module (BatchNorm folded) with the metadata as the extra file ``fdmobilenet.json``."""
    folded = fold_batchnorm(model)
    full_meta = export_metadata(meta, resolution, model)
    with torch.no_grad():
        traced = torch.jit.trace(folded, torch.randn(2, 3, resolution, resolution))
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={_META_FILE: json.dumps(full_meta)})
    atomic_write_bytes(path, buf.getvalue())
    return full_meta


def export_pt2(
    model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224
) -> dict[str, Any]:
    """A ``torch.export`` program (BatchNorm folded, dynamic batch) saved with ``torch.export.save``."""
    folded = fold_batchnorm(model)
    full_meta = export_metadata(meta, resolution, model)
    batch = torch.export.Dim("batch", min=1, max=65536)
    ep = torch.export.export(folded, (torch.randn(2, 3, resolution, resolution),), dynamic_shapes={"x": {0: batch}})
    buf = io.BytesIO()
    torch.export.save(ep, buf, extra_files={_META_FILE: json.dumps(full_meta)})
    atomic_write_bytes(path, buf.getvalue())
    return full_meta


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The TorchScript module and its stored metadata (empty for a file not written by ``export``)."""
    extra = {_META_FILE: ""}
    module = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    return module, json.loads(extra[_META_FILE] or "{}")


def load_pt2(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The pt2 program as a callable module, and its stored metadata."""
    extra = {_META_FILE: ""}
    ep = torch.export.load(str(path), extra_files=extra)
    return ep.module(), json.loads(extra[_META_FILE] or "{}")
