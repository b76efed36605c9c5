"""Knowledge distillation: a fixed teacher's predictions as a second target (Hinton et al., 2015).

``load_teacher`` builds the teacher from a weights file of this package, a registered name with cached
released weights, or ``timm:NAME`` / ``torchvision:NAME`` with weights already in the local cache (it
never downloads: a run must not depend on a network), then aligns its outputs with the run's classes
and its input with the run's normalisation. ``distill_loss`` is the loss. ``check_recorded`` keeps a
resumed run on the teacher it started with (its sha256 is recorded in ``OUT/teacher.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ParameterError, ParameterPathError
from .._utils import require, write_if_changed
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, imagenet_classes, imagenet_label_names, imagenet_rows

RECORD = "teacher.json"
_FORMS = (
    "a weights file (.safetensors, e.g. a run's best.safetensors), a registered model name with cached released "
    "weights, timm:NAME or torchvision:NAME"
)


class Teacher(nn.Module):
    """A frozen network in eval mode whose ``forward`` takes the student's batch (renormalised to the
    teacher's mean/std when they differ) and returns logits over the student's classes only."""

    def __init__(
        self,
        net: nn.Module,
        rows: list[int] | None,
        scale: Sequence[float],
        shift: Sequence[float],
        spec: str,
        path: Path,
    ):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.rows = rows  # for the log; ``index`` is the same on the device
        self.register_buffer("index", torch.tensor(rows or [], dtype=torch.long), persistent=False)
        self.renormalise = any(abs(s - 1) > 1e-6 for s in scale) or any(abs(b) > 1e-6 for b in shift)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.spec, self.path = spec, path
        self.sha256 = _sha256(path)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Always eval: the teacher's BatchNorm statistics and dropout are fixed."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.renormalise:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        logits = self.net(x)
        return logits.index_select(1, self.index) if self.rows is not None else logits


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    criterion: nn.Module,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """``(1 - w) * criterion(student, target) + w * T² * KL(softmax(teacher / T) || softmax(student / T))``:
    T² keeps the soft term's gradients on the scale of the hard one's as T changes (Hinton et al.)."""
    s, t = student.float(), teacher.float()
    hard = criterion(s, target)
    if weight == 0:
        return hard
    kl = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1), reduction="batchmean",
                  log_target=True)  # fmt: skip
    return (1 - weight) * hard + weight * temperature**2 * kl


def load_teacher(
    spec: str,
    classes: Sequence[str],
    device: torch.device | str = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_last: bool = False,
) -> Teacher:
    """The teacher ``spec`` names, predicting ``classes``, for inputs normalised with ``mean``/``std``.

    Built inside ``fork_rng``: its construction draws no number from the global generators, so a run with
    a teacher initialises its student (and resumes) exactly as it would without one.
    """
    with torch.random.fork_rng(devices=[]):
        net, info = _build(spec)
    rows = class_rows(spec, info["class_names"], info["num_classes"], list(classes))
    t_mean, t_std = info["mean"], info["std"]
    # student input x = (raw - mean) / std; the teacher wants (raw - t_mean) / t_std = x * std / t_std + shift
    scale = [s / ts for s, ts in zip(std, t_std)]
    shift = [(m - tm) / ts for m, tm, ts in zip(mean, t_mean, t_std)]
    teacher = Teacher(net, rows, scale, shift, spec, info["path"]).to(device)
    return teacher.to(memory_format=torch.channels_last) if channels_last else teacher


def class_rows(spec: str, names: list[str] | None, num_classes: int, classes: list[str]) -> list[int] | None:
    """Which of the teacher's outputs are the run's classes: all of them (None) when its class names are the
    run's, the ImageNet rows when it is a 1000-class ImageNet model and the run's classes are ImageNet names;
    otherwise a ParameterError saying why."""
    if names is not None and list(names) == classes and num_classes == len(classes):
        return None
    imagenet = num_classes == 1000 and (names is None or list(names) in (imagenet_classes()[1], imagenet_label_names()))
    rows = imagenet_rows(classes) if imagenet else None
    if rows is not None:
        return rows
    shown = lambda c: ", ".join(c[:5]) + (", ..." if len(c) > 5 else "")  # noqa: E731
    has = f"its {num_classes} classes ({shown(names)})" if names else f"its {num_classes} unnamed classes"
    why = "a 1000-class ImageNet model, but not every class of the run is an ImageNet class name" if imagenet else has
    raise ParameterError(
        "teacher",
        f"`teacher` {spec} cannot teach this run's {len(classes)} classes ({shown(classes)}): it is {why}. A teacher "
        "must be trained on the same classes (same names, same order), or be an ImageNet-1k model when the run's "
        "classes are ImageNet class names",
    )


def check_recorded(out: Path, teacher: Teacher | None, resumed: bool, write: bool) -> None:
    """On resume, refuse a teacher other than the one the run started with (other contents, or none/one where
    the run had one/none): the loss would change mid-run. Otherwise (``write``, main process) record it."""
    record = out / RECORD
    now = {"spec": teacher.spec, "path": str(teacher.path), "sha256": teacher.sha256} if teacher else None
    if resumed:
        try:
            before = json.loads(record.read_text()) if record.is_file() else None
        except ValueError:
            before = {"sha256": "unreadable"}
        if (before or {}).get("sha256") != (now or {}).get("sha256"):
            what = (
                f"without a `teacher`, but this one has `teacher` {teacher.spec}" if before is None and teacher
                else f"with `teacher` {before.get('spec')}, but none is given now" if teacher is None
                else f"with `teacher` {before.get('spec')} (sha256 {before.get('sha256')}), but `teacher` "
                f"{teacher.spec} is now {teacher.path} (sha256 {teacher.sha256})"
            )  # fmt: skip
            raise ParameterError(
                "teacher",
                f"{out} was started {what}; a resumed run keeps its teacher (recorded in {record}). Restore the "
                "original teacher, or start a new run in another `out`",
            )
        return
    if write:
        if now is None:
            record.unlink(missing_ok=True)
        else:
            write_if_changed(record, (json.dumps(now, indent=1) + "\n").encode())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """(network, {class_names, num_classes, mean, std, path}) of ``spec``, from local files only."""
    if spec.startswith("timm:"):
        return _timm(spec, spec.removeprefix("timm:"))
    if spec.startswith("torchvision:"):
        return _torchvision(spec, spec.removeprefix("torchvision:"))
    from ..models._registry import is_model

    path = Path(spec)
    if path.is_file():
        return _weights_file(spec, path)
    if is_model(spec):
        return _weights_file(spec, _released(spec), spec)
    if path.suffix or os.sep in spec:
        raise ParameterPathError("teacher", f"`teacher` {spec}: no such file")
    raise ParameterError("teacher", f"`teacher` {spec!r} is not a file nor a registered model name; give {_FORMS}")


def _weights_file(spec: str, path: Path, name: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    from ..models import build_from_weights

    try:
        net, meta = build_from_weights(path, name)
    except (ValueError, KeyError) as e:
        raise ParameterError("teacher", f"`teacher` {spec}: {e}") from None
    num = net.get_classifier().out_features if hasattr(net, "get_classifier") else meta.get("num_classes", 1000)
    info = {"class_names": meta.get("class_names"), "num_classes": num, "path": path}
    return net, {**info, "mean": meta.get("mean", IMAGENET_MEAN), "std": meta.get("std", IMAGENET_STD)}


def _released(name: str) -> Path:
    """The cached weights ``create_model(name, pretrained=True)`` would load, without downloading."""
    from ..models import RELEASES
    from ..models.hub import cache_dir, converted_path
    from ..models.pretrained import pretrained_path, released_weights

    if os.environ.get("FDM_WEIGHTS"):
        path = pretrained_path(name)
        if not path.is_file():
            raise ParameterPathError("teacher", f"`teacher` {name}: {path} ($FDM_WEIGHTS) does not exist")
        return path
    if name not in RELEASES:
        raise ParameterError(
            "teacher", f"`teacher` {name}: the authors released no weights for it; give a weights file instead"
        )
    raw = cache_dir() / "checkpoints" / RELEASES[name].file
    if not converted_path(name).is_file() and not raw.is_file():
        raise ParameterError(
            "teacher",
            f"`teacher` {name}: its released weights are not in the local cache ({raw}) and training never "
            f"downloads; fetch them once (`fdmobilenet convert` or create_model({name!r}, pretrained=True)) or give "
            "a weights file",
        )
    return released_weights(name, progress=False)  # converts the cached file; the checksum is verified


def _not_cached(spec: str, where: str, how: str) -> ParameterError:
    return ParameterError(
        "teacher",
        f"`teacher` {spec}: its weights are not in the local cache ({where}) and training never downloads; "
        f"download them once with a network ({how}), or give a weights file",
    )


def _timm(spec: str, name: str) -> tuple[nn.Module, dict[str, Any]]:
    timm = require("timm", f"`teacher` {spec}", "pip install timm")
    cfg = timm.models.get_pretrained_cfg(name) if timm.models.is_model(name.partition(".")[0]) else None
    if cfg is None:
        raise ParameterError("teacher", f"`teacher` {spec}: timm has no pretrained model {name!r}")
    path, where = None, "no source"
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for file in [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(cfg.hf_hub_id, file)
            if isinstance(found, str):
                path = Path(found)
                break
        where = f"the Hugging Face cache, {cfg.hf_hub_id}"
    if path is None and cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        path, where = (cached if cached.is_file() else None), str(cached)
    if path is None:
        raise _not_cached(spec, where, f"timm.create_model({name!r}, pretrained=True)")
    # timm reads the file itself (safetensors, or torch.load with weights_only=True) and applies its key map
    net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path), "source": None})
    pc = net.pretrained_cfg
    names = pc.get("label_names")
    info = {"class_names": list(names) if names else None, "num_classes": net.num_classes, "path": path}
    return net, {**info, "mean": tuple(pc.get("mean", IMAGENET_MEAN)), "std": tuple(pc.get("std", IMAGENET_STD))}


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside loads tensors only (torchvision's builders pass ``weights_only=False``)."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def _torchvision(spec: str, name: str) -> tuple[nn.Module, dict[str, Any]]:
    from torchvision import models

    arch, _, tag = name.partition(".")
    try:
        enum = models.get_model_weights(arch)
        weights = enum[tag] if tag else enum.DEFAULT
    except (ValueError, KeyError):
        raise ParameterError(
            "teacher", f"`teacher` {spec}: torchvision has no model {arch!r} with weights {tag or 'DEFAULT'!r}"
        ) from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        raise _not_cached(spec, str(path), f"torchvision.models.get_model({arch!r}, weights='DEFAULT')")
    try:
        with _weights_only_loads():  # the builder finds the file in the cache: no network
            net = models.get_model(arch, weights=weights, progress=False)
    except Exception as e:  # noqa: BLE001 - a damaged file, or a pickle that asks to run code: never loaded
        raise ParameterError("teacher", f"`teacher` {spec}: {path} could not be loaded ({type(e).__name__}: "
                             f"{str(e)[:200]}); delete it and download it again") from None  # fmt: skip
    tf = weights.transforms()
    cats = weights.meta.get("categories") or []
    info = {"class_names": None if len(cats) == 1000 else list(cats), "num_classes": len(cats), "path": path}
    return net, {**info, "mean": tuple(tf.mean), "std": tuple(tf.std)}
