"""The backbones of ``compare``'s detectors: which classification weights file each (family, budget) starts from.

Budgets are *backbone* budgets, the paper's convention: each family's width is the one whose classifier
costs the budget at 224 px, whatever resolution the detectors then run at. Fairness needs every backbone
pretrained the same way (MobileNet V1 at 12 MFLOPs has no released ImageNet weights), so the backbones
come from one folder (``find_backbones``):

- ``DIR/backbones.json``: ``{"fd_mobilenet@12": "fd12.safetensors", ...}`` (paths relative to DIR), else
- ``DIR/<family>-<budget>M.safetensors`` (``fd_mobilenet-12M.safetensors``), else
- a classification ``compare`` folder: ``DIR/runs/<family>-<budget>M-w<width>-seed<s>/best.safetensors``
  (the lowest seed), so ``compare`` on ImageNet/Imagenette then ``compare --backbones`` that folder is the
  whole protocol.

Each file must be classification weights of the planned family and width (``model_kwargs.width`` or its
model name); a mismatch is refused before any training. Extra rows (``extra_rows``: a name and a file,
e.g. the authors' ImageNet weights) are placed at the budget their backbone costs at 224 px. After each
run ``compare_detection`` re-scores ``best.safetensors`` image by image (``val_detections.npz``) for the
paired bootstrap of mAP differences (``verdicts``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._errors import ParameterError
from ..complexity import profile
from ..models import FAMILIES, create_model, family_kwargs

BACKBONE_RESOLUTION = 224  # budgets are backbone MFLOPs at 224 px, the paper's convention
BACKBONES_JSON = "backbones.json"
WIDTH_TOLERANCE = 5e-4  # the planned width to 3 decimals
BUDGET_TOLERANCE = 0.05  # an extra row's backbone within 5 % of a budget joins that budget's column
# what "pretrained the same way" compares between backbones (metadata, or the run's config.json beside them)
SAME_WAY = ("data", "recipe", "epochs", "resolution", "num_classes")
_ROW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


@dataclass
class Backbone:
    """A classification weights file for a detector's backbone: its family, width, groups and how it was trained."""

    path: str
    family: str
    width: float
    groups: int | None
    info: dict[str, Any] = field(default_factory=dict)


def read_backbone(path: str | Path, param: str = "backbones") -> Backbone:
    """What ``path`` holds (family and width from its metadata or model name), refused unless classification."""
    from ..models._registry import lookup, model_task
    from ..models.pretrained import read_pretrained

    p = Path(path)
    try:
        _, meta, name = read_pretrained(p)
        family, fixed = lookup(name)
    except (OSError, ValueError, KeyError) as e:
        raise ParameterError(
            param, f"`{param}`: {p} is not a weights file this package reads ({_first_line(e)})"
        ) from None
    if model_task(name) != "classification" or family not in FAMILIES:
        raise ParameterError(param, f"`{param}`: {p} holds {name}, not a classifier's weights: give a backbone's")
    kwargs = {**fixed, **(meta.get("model_kwargs") or {})}
    width = float(kwargs.get("width", 1.0))
    groups = None
    if family == "shufflenet_v1":  # the model's default group count when the file does not name one
        groups = int(kwargs.get("groups", family_kwargs(family)["groups"]))
    info: dict[str, Any] = {"model": name, "source": meta.get("source"), "resolution": meta.get("resolution")}
    info["num_classes"] = meta.get("num_classes")
    if meta.get("val_top1") is not None:
        info["val_top1"] = meta["val_top1"]
    config = p.parent / "config.json"  # a training run's own record: data, recipe, epochs
    if config.is_file():
        try:
            cfg = json.loads(config.read_text())
        except (ValueError, UnicodeDecodeError):
            cfg = {}
        if isinstance(cfg, dict) and cfg.get("model") == name:
            info.update({k: cfg.get(k) for k in ("data", "recipe", "epochs")})
    if info.get("recipe") is None and isinstance(info["source"], str):
        m = re.fullmatch(r"fdmobilenet train \((.+)\)", info["source"])
        info["recipe"] = m[1] if m else None
    return Backbone(str(p), family, width, groups, info)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _check_fits(bb: Backbone, family: str, budget: float, width: float, groups: int | None, param: str) -> None:
    """Refuse a backbone of another family, width or group count than the plan's, in one line."""
    if bb.family != family:
        raise ParameterError(
            param, f"`{param}`: {bb.path} holds {bb.info['model']} ({bb.family}), not {family} ({budget:g} MFLOPs)"
        )
    if abs(bb.width - width) > WIDTH_TOLERANCE or (groups is not None and bb.groups != groups):
        g = f" g{bb.groups}" if bb.groups is not None else ""
        want = f" g{groups}" if groups is not None else ""
        raise ParameterError(
            param,
            f"`{param}`: {bb.path} is {family}{g} width {bb.width:g}, but the {budget:g} MFLOPs {family} backbone is"
            f"{want} width {width:g} (solved at {BACKBONE_RESOLUTION} px): give weights of that width"
            + (" and group count" if groups is not None else ""),
        )


def _json_entries(path: Path) -> dict[str, str]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ParameterError("backbones", f"`backbones`: {path} is not readable JSON ({_first_line(e)})") from None
    if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items()):
        raise ParameterError(
            "backbones", f'`backbones`: {path} must map "<family>@<budget>" to a weights file, e.g. "fd_mobilenet@12"'
        )
    return entries


def _json_file(entries: dict[str, str], root: Path, family: str, budget: float) -> Path | None:
    for key, file in entries.items():
        fam, _, b = key.partition("@")
        try:
            same = fam.strip() == family and math.isclose(float(b), budget)
        except ValueError:
            continue
        if same:
            return root / file
    return None


def _compare_run_file(root: Path, family: str, budget: float) -> Path | None:
    """``ROOT/runs/<family>-<budget>M-w*-seed<s>/best.safetensors`` of a classification compare, lowest seed."""
    found = []
    for run in (root / "runs").glob(f"{family}-{budget:g}M-w*-seed*"):
        m = re.fullmatch(rf"{re.escape(family)}-{re.escape(f'{budget:g}')}M-w[0-9.]+-seed(\d+)", run.name)
        if m and (run / "best.safetensors").is_file():
            found.append((int(m[1]), run / "best.safetensors"))
    return min(found)[1] if found else None


def find_backbones(
    backbones: str | Path, cells: list[tuple[str, float, float, int | None]]
) -> dict[tuple[str, float], Backbone]:
    """The weights file of each planned (family, budget, width, groups) cell in ``backbones`` (a folder, or a
    ``backbones.json``), each checked to be that family and width; a missing or mismatched one is refused."""
    root = Path(backbones)
    if not root.exists():
        raise ParameterError("backbones", f"`backbones` {root} does not exist; give the folder of backbone weights")
    entries, listing = None, root / BACKBONES_JSON
    if root.is_file():
        entries, listing, root = _json_entries(root), root, root.parent
    elif listing.is_file():
        entries = _json_entries(listing)
    out = {}
    for family, budget, width, groups in cells:
        if entries is not None:
            path = _json_file(entries, root, family, budget)
            if path is None:
                raise ParameterError(
                    "backbones",
                    f'`backbones`: {listing} has no "{family}@{budget:g}" entry; every family and budget needs one',
                )
        else:
            named = root / f"{family}-{budget:g}M.safetensors"
            path = named if named.is_file() else _compare_run_file(root, family, budget)
            if path is None:
                raise ParameterError(
                    "backbones",
                    f"`backbones`: no {family} weights for {budget:g} MFLOPs in {root}: expected {named.name}, a "
                    f"{BACKBONES_JSON}, or a compare run runs/{family}-{budget:g}M-w{width:g}-seed0/best.safetensors",
                )
        if not path.is_file():
            raise ParameterError("backbones", f"`backbones`: {path} ({family}@{budget:g}) does not exist")
        bb = read_backbone(path)
        _check_fits(bb, family, budget, width, groups, "backbones")
        out[(family, budget)] = bb
    return out


def backbone_macs(family: str, width: float, groups: int | None) -> tuple[int, int]:
    """(MACs, parameters) of the classifier of ``family`` at ``width`` at 224 px: what a budget counts."""
    kw = {"groups": groups} if groups is not None else {}
    with torch.device("meta"):  # shapes only
        model = create_model(family, width=width, resolution=BACKBONE_RESOLUTION, **kw)
    p = profile(model, BACKBONE_RESOLUTION)
    return p.macs, p.params


def parse_extra_rows(specs: list[str] | dict[str, str] | None) -> dict[str, str]:
    """``["authors=fd.safetensors", ...]`` (or a dict) -> {name: file}, names checked (they name rows and folders)."""
    if not specs:
        return {}
    pairs = list(specs.items()) if isinstance(specs, dict) else [tuple(s.partition("=")[::2]) for s in specs]
    out: dict[str, str] = {}
    for name, file in pairs:
        name, file = str(name).strip(), str(file).strip()
        if not _ROW_NAME.fullmatch(name) or not file:
            raise ParameterError(
                "extra_rows", f"`extra_rows` takes NAME=FILE (NAME: letters, digits, _ . -), got {name}={file}"
            )
        if name in out:
            raise ParameterError("extra_rows", f"`extra_rows`: {name} is given twice")
        out[name] = file
    return out


def place_extra_row(name: str, file: str, budgets: list[float]) -> tuple[float, Backbone, int]:
    """(budget, backbone, its MACs at 224 px) of an extra row: the budget its backbone costs, within 5 %."""
    if not Path(file).is_file():
        raise ParameterError("extra_rows", f"`extra_rows`: {file} ({name}) does not exist")
    bb = read_backbone(file, "extra_rows")
    macs, _ = backbone_macs(bb.family, bb.width, bb.groups)
    near = [b for b in budgets if abs(macs / 1e6 - b) <= BUDGET_TOLERANCE * b]
    if not near:
        raise ParameterError(
            "extra_rows",
            f"`extra_rows`: {name}'s backbone ({bb.family} width {bb.width:g}) costs {macs / 1e6:.1f} MFLOPs at "
            f"{BACKBONE_RESOLUTION} px, not within 5 % of a budget ({', '.join(f'{b:g}' for b in budgets)})",
        )
    return min(near, key=lambda b: abs(macs / 1e6 - b)), bb, macs


def check_loads(model: str, bb: Backbone, num_classes: int, resolution: int, param: str) -> None:
    """Load ``bb`` into the detector's backbone as training will (a file that does not fit fails now, not after
    hours of other runs)."""
    kw = {"groups": bb.groups} if bb.groups is not None else {}
    try:
        create_model(model, num_classes=num_classes, resolution=resolution, width=bb.width, pretrained=bb.path, **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ParameterError(param, f"`{param}`: {bb.path} does not load into {model}: {_first_line(e)}") from None


def differences(backbones: list[Backbone]) -> list[str]:
    """What the backbones were not trained alike in (``SAME_WAY``, where known for all): names of the fields."""
    out = []
    for k in SAME_WAY:
        values = [bb.info.get(k) for bb in backbones]
        if all(v is not None for v in values) and len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            out.append(k)
    return out
