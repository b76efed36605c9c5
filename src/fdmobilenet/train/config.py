"""What a training run depends on: ``TrainConfig`` (whose defaults *are* the paper's recipe), the named
recipes and YAML files that override some of its fields, and the checks and derived schedules of a config.

Every field carries its ``--help`` text in its metadata and belongs to one of ``SECTIONS``, so the command
line, with its argument groups, is generated from this one dataclass (``cli/train.py``) and cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ParameterError
from .._schema import excerpt, load_yaml, printable
from ..preprocess import DEFAULT_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD

EXIT_DIVERGED = 3  # exit code of a run stopped by a NaN/inf loss or weights
PAPER_BATCH = 256
MIN_AUTO_BATCH = 64
MIN_SMALL_BATCH = 16  # tiny datasets: halved down to this so the dropped partial batch stays small
MAX_LEFT_OUT = 0.1  # the share of the training images a partial last batch may leave out of an epoch
MEMORY_SHARE = 4  # --in-memory by default when the decoded data takes at most 1/4 of free memory
MIN_STEPS_PER_EPOCH = 100  # below this the automatic batch size halves (small datasets)
FINETUNE_LR_FACTOR = 10  # fine-tuning (--pretrained without --lr) runs at the recipe's lr / 10
WARMUP_MAX_FRACTION = 0.1  # a warm-up never takes more than a tenth of a (short) run
AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment")  # auto_augment: torchvision v2 policies
RA_MAX_MAGNITUDE = 30  # RandAugment's 31 magnitude bins
MAX_LR = 100.0  # plain SGD beyond this only diverges; 1e300 overflowed torch's optimizer
MAX_EPOCHS = 100_000
MAX_TEXT_FIELD = 4096  # a path or a name: text fields longer than this, or with control characters, are refused


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the FD-MobileNet paper's ImageNet recipe."""

    # data
    data: str | None = _f(None, "DIR with train/ and val/ (or class folders only); omit for the built-in digits")
    val_split: float = _f(0.1, "validation fraction when --data has no val/ (seeded, stratified)")
    resolution: int = _f(224, "training crop size; evaluation resizes to resolution/crop_pct, then center-crops")
    crop_scale: tuple[float, float] = _f((0.36, 1.0), "RandomResizedCrop area range (min max)")
    hflip: bool = _f(True, "random horizontal flip")
    crop_pct: float = _f(DEFAULT_CROP_PCT, "evaluation center-crop fraction (224/256)")
    mean: tuple[float, float, float] = _f(IMAGENET_MEAN, "normalisation mean (RGB)")
    std: tuple[float, float, float] = _f(IMAGENET_STD, "normalisation std (RGB)")
    workers: int | None = _f(None, "data-loading processes per training process (default: 4, at most the CPU "
                             "cores: more only compete with the training step)")  # fmt: skip
    loader: str = _f("auto", "input pipeline: pil (workers decode and augment each image), gpu (workers read bytes; "
                     "each batch is decoded and augmented on the training device, nvJPEG on CUDA, one step ahead), "
                     "auto (gpu on CUDA with --data, else pil)", choices=("auto", "pil", "gpu"))  # fmt: skip
    train_resolution: str | None = _f(None, "training crop size by epoch, e.g. '160,192@61,224@101': 160 px, "
                                      "192 from epoch 61, 224 from epoch 101; evaluation stays at --resolution "
                                      "(default: --resolution throughout)")  # fmt: skip
    in_memory: bool | None = _f(None, "decode once into a uint8 tensor on the device and augment whole batches "
                                "there (cached beside --out, rebuilt on change); default: on for image folders "
                                "whose decoded photos take at most a quarter of the free memory (the log says "
                                "which; --no-in-memory reads the files every epoch)")  # fmt: skip
    on_bad_image: str = _f("skip", "unreadable files: skip (report per epoch) or error (fail before training)",
                           choices=("skip", "error"))  # fmt: skip
    # strong augmentation (torchvision's references/classification presets): off by default
    auto_augment: str = _f("none", "per-image policy after the crop and flip, before normalisation: randaugment "
                           "(2 ops at --ra-magnitude), trivialaugment (TrivialAugmentWide), none; for runs of "
                           "30+ epochs", choices=AUTO_AUGMENTS)  # fmt: skip
    ra_magnitude: int = _f(9, f"randaugment: magnitude of each op, 0..{RA_MAX_MAGNITUDE}")
    random_erasing: float = _f(0.0, "probability of erasing a random rectangle of each normalised training "
                               "image (0: off)")  # fmt: skip
    # model
    model: str = _f("fd_mobilenet_100", "registered model name (`fdmobilenet models`)")
    width: float | None = _f(None, "width multiplier, for a bare family name such as fd_mobilenet")
    groups: int | None = _f(None, "ShuffleNet group count, for the bare name shufflenet_v1")
    dropout: float = _f(0.0, "dropout before the classifier")
    pretrained: str | None = _f(None, "weights to start from (.safetensors or the authors' .pth.tar)")
    freeze_backbone: bool = _f(False, "train the classifier only (backbone and its BatchNorm statistics frozen)")
    # optimisation
    epochs: int = _f(120, "training epochs")
    batch_size: int | None = _f(None, "global batch size over all processes and accumulation steps (default: "
                                "the paper's 256, halved down to 64 while an epoch would have fewer than "
                                f"{MIN_STEPS_PER_EPOCH} steps; the log says which)")  # fmt: skip
    accum_steps: int = _f(1, "gradient accumulation steps per optimizer step")
    lr: float = _f(0.1, "learning rate at a global batch of --lr-base-batch (scaled linearly with the batch)")
    lr_base_batch: int = _f(256, "global batch at which --lr applies")
    schedule: str = _f("step", "learning-rate schedule", choices=("step", "cosine"))
    lr_milestones: tuple[float, ...] = _f((0.25, 0.5, 0.75), "step schedule: multiply the lr by --lr-gamma "
                                          "at these fractions of the run (paper: 30/60/90 of 120 epochs)")  # fmt: skip
    lr_step_epochs: int | None = _f(None, "step schedule: a fixed step every this many epochs instead of "
                                    "--lr-milestones")  # fmt: skip
    lr_gamma: float = _f(0.1, "step schedule: lr factor at each step")
    warmup_epochs: float = _f(0.0, "linear warm-up from 0, in epochs (at most a tenth of the run)")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum")
    weight_decay: float = _f(4e-5, "L2 weight decay")
    wd_bn_bias: bool = _f(True, "weight decay also on BatchNorm parameters and biases")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing")
    ema_decay: float = _f(0.0, "per-step decay of an exponential moving average of the weights (0: off); "
                          "`best` is whichever of the average and the raw weights validates better")  # fmt: skip
    ema_warmup: bool = _f(True, "EMA decay ramps up as min(decay, (1+n)/(10+n)) over the first n updates (as "
                          "timm's EMA), so a short run's average is not mostly the initialisation")  # fmt: skip
    clip_grad: float = _f(0.0, "clip the gradient norm to this value (0: off)")
    mixup: float = _f(0.0, "MixUp: alpha of the Beta(alpha, alpha) weight blending each image of a micro-batch "
                      "with the next one, targets blended alike (0: off; torchvision's recipes use 0.2); with "
                      "--cutmix, one of the two per micro-batch")  # fmt: skip
    cutmix: float = _f(0.0, "CutMix: alpha of the Beta(alpha, alpha) area kept when a box of the next image of "
                       "the micro-batch is pasted in, targets by area (0: off; torchvision's recipes use "
                       "1.0)")  # fmt: skip
    # distillation
    teacher: str | None = _f(None, "distil from this model's predictions: a weights file of this package "
                             "(.safetensors, e.g. a run's best.safetensors), a registered name whose released "
                             "weights are already cached (offline), or timm:NAME / torchvision:NAME with weights "
                             "already in the local cache (training never downloads). Its classes must be the "
                             "run's, or it is a 1000-class ImageNet model and the run's classes are ImageNet "
                             "class names (their rows are used)")  # fmt: skip
    kd_temperature: float = _f(4.0, "distillation temperature T: both softmaxes at logits / T")
    kd_weight: float = _f(0.5, "distillation loss weight w: (1 - w) * cross-entropy + w * T^2 * "
                          "KL(teacher || student), Hinton's loss")  # fmt: skip
    # run
    out: str = _f("runs/train", "output folder: checkpoints, config.json, metrics.jsonl, curves.png")
    seed: int = _f(0, "seed of initialisation, data order and augmentation")
    deterministic: bool = _f(False, "deterministic kernels: a resumed run ends with the same weights")
    logger: str = _f("csv", "metric logs besides metrics.jsonl: csv (metrics.csv), tensorboard (OUT/tensorboard; "
                     "pip install 'fdmobilenet[train]'), none", choices=("none", "csv", "tensorboard"))  # fmt: skip
    checkpoint_every: int = _f(0, "also write the `last` checkpoint every N optimizer steps (0: each epoch only)")
    device: str = _f("auto", "cpu, cuda, or auto (cuda when available)")
    threads: int = _f(0, "CPU threads per process for compute (0: PyTorch's default); 1 is fastest on a busy machine")
    amp: str = _f("auto", "mixed precision: auto (bf16 on GPU), bf16, fp16, none",
                  choices=("auto", "bf16", "fp16", "none"))  # fmt: skip
    channels_last: bool | None = _f(None, "channels-last memory format (default: on GPU)")
    compile: bool = _f(False, "torch.compile the model")


# The paper's recipe is the dataclass defaults; the others change only what they name.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "modern": {  # ours, not the paper's: typically better at the same epochs
        "schedule": "cosine",
        "warmup_epochs": 5,
        "label_smoothing": 0.1,
        "wd_bn_bias": False,
        "ema_decay": 0.9998,
    },
    "small": {  # ours, for up to 25k images: `modern` at the lr a batch of 64 wants there, a half-width model and
        # 30 epochs (120 epochs of the full-width model on 180 photos took 40 min on a 2-core CPU for nothing);
        # weight decay stays on BN and biases, as the paper has it: without, 10 epochs on Imagenette scored 1.1
        # points lower on each of 3 seeds (benchmarks/reference/results-yardstick.md)
        "model": "fd_mobilenet_050",
        "epochs": 30,
        "schedule": "cosine",
        "warmup_epochs": 5,
        "label_smoothing": 0.1,
        "ema_decay": 0.9998,
        "lr": 0.1,
        "lr_base_batch": 64,
    },
    "digits": {  # the built-in dataset: under a minute on a 2-core CPU, ~98% val top-1
        "model": "fd_mobilenet_050",
        "resolution": 32,
        "epochs": 20,
        "batch_size": 64,
        "lr": 0.1,
        "lr_base_batch": 64,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "crop_scale": (0.85, 1.0),  # digits must stay whole
        "hflip": False,  # a mirrored digit is another symbol
        "crop_pct": 1.0,
        "workers": 0,
        "threads": 1,  # a 32 px model gains little from more; one thread also survives a busy machine
        "out": "runs/digits",
    },
}
# ours, for detectors on small VOC/COCO sets (hundreds to thousands of photos), backbone from classification
# weights (`pretrained`): SSDLite's 320 px, cosine decay at torchvision's ssdlite lr per image (0.15 at 192),
# no lr cut for fine-tuning (the head and extra layers start from scratch); `--data` of boxes picks it
RECIPES["detection"] = {
    "model": "ssdlite_fd_mobilenet_050",
    "resolution": 320,
    "epochs": 60,
    "batch_size": 16,
    "lr": 0.0125,
    "lr_base_batch": 16,
    "schedule": "cosine",
    "warmup_epochs": 3,
    "wd_bn_bias": False,
    "out": "runs/detect",
}
# ours, for 30+ epochs: `small` plus the strong augmentation that only pays off once a run is long enough
# to fit augmented images (shorter runs underfit with it)
RECIPES["long"] = {**RECIPES["small"], "auto_augment": "trivialaugment", "random_erasing": 0.25}
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Section title -> its fields, in TrainConfig's order: `train --help` shows one argument group per section
# (tests/test_train_help.py checks that every field is in exactly one).
SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data", "val_split", "resolution", "crop_scale", "hflip", "crop_pct", "mean", "std", "workers", "loader",
             "train_resolution", "in_memory", "on_bad_image", "auto_augment", "ra_magnitude", "random_erasing"),
    "model": ("model", "width", "groups", "dropout", "pretrained", "freeze_backbone"),
    "optimisation": ("epochs", "batch_size", "accum_steps", "lr", "lr_base_batch", "schedule", "lr_milestones",
                     "lr_step_epochs", "lr_gamma", "warmup_epochs", "momentum", "nesterov", "weight_decay",
                     "wd_bn_bias", "label_smoothing", "ema_decay", "ema_warmup", "clip_grad", "mixup", "cutmix"),
    "distillation": ("teacher", "kd_temperature", "kd_weight"),
    "run": ("out", "seed", "deterministic", "logger", "checkpoint_every", "device", "threads", "amp",
            "channels_last", "compile"),
}  # fmt: skip
_HINTS = typing.get_type_hints(TrainConfig)
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))  # beyond this OpenMP only thrashes (100,000 crashed it)
# (field, low, high, low inclusive, high inclusive): the ranges a run can use
_RANGES = [
    ("val_split", 0, 1, True, False), ("crop_pct", 0, 1, False, True), ("dropout", 0, 1, True, False),
    ("label_smoothing", 0, 1, True, False), ("momentum", 0, 1, True, False), ("ema_decay", 0, 1, True, False),
    ("lr_gamma", 0, 1, False, True), ("weight_decay", 0, 1, True, True),
    ("warmup_epochs", 0, MAX_EPOCHS, True, True), ("clip_grad", 0, 1e6, True, True),
    ("width", 0, math.inf, False, False), ("threads", 0, MAX_THREADS, True, True),
]  # fmt: skip
_RANGES += [  # the loss: batch mixing and distillation
    ("mixup", 0, 100, True, True), ("cutmix", 0, 100, True, True),
    ("kd_temperature", 0, 1000, False, True), ("kd_weight", 0, 1, True, True),
]  # fmt: skip
_RANGES += [  # upper bounds no run reaches (lr 1e300 overflowed SGD): a typo is refused before any work
    ("lr", 0, MAX_LR, False, True), ("epochs", 1, MAX_EPOCHS, True, True), ("batch_size", 1, 2**20, True, True),
    ("accum_steps", 1, 4096, True, True), ("lr_base_batch", 1, 2**20, True, True),
    ("lr_step_epochs", 1, MAX_EPOCHS, True, True), ("checkpoint_every", 0, 2**31, True, True),
    ("seed", 0, 2**63 - 1, True, True), ("workers", 0, 1024, True, True), ("groups", 1, 64, True, True),
]  # fmt: skip


def _param(name: str) -> str:
    """A field as error messages name it (``_errors``: the CLI spells it as its flag)."""
    return f"`{name}`"


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ParameterError(name, f"{_param(name)} must be a finite number, got {excerpt(v)}")
    return float(v)


def coerce_field(name: str, v: Any) -> Any:
    """``v`` as the type of field ``name`` (from a flag, a YAML file or a saved config.json), or a
    ParameterError naming the field and what it takes: a recipe file's ``epochs: "abc"`` stops here."""
    if name not in FIELDS:
        raise ValueError(f"unknown training setting {excerpt(name)}; valid: {', '.join(FIELDS)}")
    tp = _HINTS[name]
    args = typing.get_args(tp)
    if v is None and type(None) in args:
        return None
    if typing.get_origin(tp) is not tuple and args:
        tp = next(t for t in args if t is not type(None))
    if tp is str and isinstance(v, str) and (len(v) > MAX_TEXT_FIELD or printable(v) != v):
        raise ParameterError(name, f"{_param(name)} must be printable text of at most {MAX_TEXT_FIELD} characters, "
                             f"got {excerpt(v)}")  # fmt: skip
    if typing.get_origin(tp) is tuple:
        n = None if Ellipsis in typing.get_args(tp) else len(typing.get_args(tp))
        if not isinstance(v, list | tuple) or not v or (n and len(v) != n):
            raise ParameterError(name, f"{_param(name)} takes {n or 'one or more'} numbers, got {excerpt(v)}")
        return tuple(_number(name, x) for x in v)
    if tp is float:
        return _number(name, v)
    if (tp is int and (isinstance(v, bool) or not isinstance(v, int))) or not isinstance(v, tp):
        raise ParameterError(
            name, f"{_param(name)} must be {'an integer' if tp is int else 'a ' + tp.__name__}, got {excerpt(v)}"
        )
    return v


def load_recipe(name_or_file: str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A named recipe, or a YAML file of TrainConfig fields (``recipe: NAME`` inside picks a base),
    every value checked for type here so that errors name the file."""
    if name_or_file in RECIPES:
        return dict(RECIPES[name_or_file])
    path = Path(name_or_file)
    if not path.is_file():
        raise ParameterError(
            "recipe", f"`recipe` {excerpt(name_or_file)} is neither one of {', '.join(RECIPES)} nor a YAML file"
        )
    if path.resolve() in _seen:
        raise ValueError(f"{path}: its 'recipe:' chain comes back to {path}; name another base recipe")
    raw = _read_yaml(path)
    base_name = raw.pop("recipe", None)
    if base_name is not None and (
        not isinstance(base_name, str) or len(base_name) > 4096 or printable(base_name) != base_name
    ):
        raise ValueError(f"{path}: recipe: must be a recipe name or file, got {excerpt(base_name)}")
    base = load_recipe(base_name, (*_seen, path.resolve())) if base_name else {}
    unknown = sorted(k.replace("-", "_") for k in raw if k.replace("-", "_") not in FIELDS)
    if unknown:
        named = ", ".join(excerpt(k, 40) for k in unknown[:5]) + (
            f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        )
        raise ValueError(f"{path}: unknown field(s) {named}; valid fields: {', '.join(FIELDS)}")
    fields = {}
    for k, v in raw.items():
        try:
            fields[k.replace("-", "_")] = coerce_field(k.replace("-", "_"), v)
        except ValueError as e:
            raise ParameterError(getattr(e, "param", k), f"{path}: {k}: {e}") from None
    return {**base, **fields}


def _read_yaml(path: Path) -> dict[str, Any]:
    """A mapping from a YAML file, safely (no Python tags), or a one-line ValueError naming the file."""
    try:
        import yaml
    except ImportError:
        raise ValueError("recipe files need PyYAML: pip install 'fdmobilenet[train]'") from None
    try:
        raw = load_yaml(path, what="recipe") or {}
    except yaml.YAMLError as e:
        said = printable(" ".join(str(e).split()))[:300]
        raise ValueError(f"{path}: not a valid recipe file ({said}); fix the YAML") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(raw).__name__}")
    return raw


def make_config(overrides: dict[str, Any], base: TrainConfig | dict | None = None) -> TrainConfig:
    """``base`` (default: the dataclass defaults) with ``overrides`` applied and type-checked."""
    d = asdict(base) if isinstance(base, TrainConfig) else dict(base or {})
    d.update(overrides)
    cfg = TrainConfig(**{k: coerce_field(k, v) for k, v in d.items()})
    check_config(cfg)
    return cfg


def check_config(c: TrainConfig) -> None:
    """Reject settings no run could use, naming the field (the CLI: its flag), before anything is read or written."""
    for name in ("epochs", "batch_size", "accum_steps", "lr_base_batch", "lr_step_epochs"):
        if getattr(c, name) is not None and getattr(c, name) < 1:
            raise ParameterError(name, f"`{name}` must be >= 1, got {getattr(c, name)}")
    if c.resolution < 32:
        raise ParameterError(
            "resolution", f"`resolution` must be >= 32 (the networks downsample 32x), got {c.resolution}"
        )
    if c.lr <= 0 or (c.workers or 0) < 0 or c.checkpoint_every < 0 or c.threads < 0:
        bad = "lr" if c.lr <= 0 else next(n for n in ("workers", "checkpoint_every", "threads") if getattr(c, n) < 0)
        raise ParameterError(bad, "`lr` must be > 0 and `workers`, `checkpoint_every`, `threads` >= 0")
    for name, *_ in _RANGES:
        _check_range(name, getattr(c, name))
    _check_paths(c)
    if min(c.std) <= 0 or (c.groups is not None and c.groups < 1):
        raise ParameterError(
            "std" if min(c.std) <= 0 else "groups",
            f"`std` must be > 0 (got {c.std}) and `groups` >= 1 (got {c.groups})",
        )
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", c.device):
        raise ParameterError("device", f"`device` must be auto, cpu, cuda or cuda:N, got {excerpt(c.device)}")
    if not 0 < c.crop_scale[0] <= c.crop_scale[1] <= 1:
        raise ParameterError("crop_scale", f"`crop_scale` must be two numbers 0 < min <= max <= 1, got {c.crop_scale}")
    m = c.lr_milestones
    if not m or not all(a < b for a, b in zip((0.0, *m), m)) or m[-1] >= 1:
        raise ParameterError(
            "lr_milestones", f"`lr_milestones` must be increasing fractions of the run between 0 and 1, got {m}"
        )
    resolution_schedule(c)  # raises on a malformed train_resolution
    if c.in_memory and c.loader == "gpu":
        raise ParameterError("loader", "`in_memory` and `loader` gpu are two different input pipelines; choose one")
    for name in ("on_bad_image", "schedule", "amp", "loader"):
        choices = FIELDS[name].metadata["choices"]
        if getattr(c, name) not in choices:
            raise ParameterError(name, f"`{name}` must be one of {', '.join(choices)}")
    _check_augment(c)


def _check_range(name: str, v: Any) -> None:
    for field_name, lo, hi, lo_in, hi_in in _RANGES:
        if field_name != name or v is None:
            continue
        if not ((lo <= v if lo_in else lo < v) and (v <= hi if hi_in else v < hi)):
            where = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
            raise ParameterError(name, f"{_param(name)} must be in {where}, got {excerpt(v)}")


def check_fields(values: dict[str, Any]) -> None:
    """Each setting of ``values`` typed and in range on its own, before a recipe is chosen or the data read
    (``lr 1e300`` is refused before the images are counted); ``check_config`` checks how they combine."""
    for name, v in values.items():
        _check_range(name, coerce_field(name, v))


def _check_paths(c: TrainConfig) -> None:
    """``out`` inside ``data`` would become a class folder of the data (and of every later run on it)."""
    if c.data is None or not c.out:
        return
    data, out = Path(c.data).resolve(), Path(c.out).resolve()
    if out == data or data in out.parents:
        raise ParameterError(
            "out", f"`out` {c.out} is inside `data` {c.data}: the run's folder would become a class of the data; "
            "write the run outside it"
        )  # fmt: skip


def _check_augment(c: TrainConfig) -> None:
    """The strong-augmentation fields: their values, and the pipelines that can apply them."""
    if c.auto_augment not in AUTO_AUGMENTS:
        raise ParameterError("auto_augment", f"`auto_augment` must be one of {', '.join(AUTO_AUGMENTS)}")
    if not 0 <= c.ra_magnitude <= RA_MAX_MAGNITUDE:
        raise ParameterError("ra_magnitude", f"`ra_magnitude` must be in [0, {RA_MAX_MAGNITUDE}], got {c.ra_magnitude}")
    if not 0 <= c.random_erasing <= 1:
        raise ParameterError("random_erasing", f"`random_erasing` must be in [0, 1], got {c.random_erasing}")
    if c.loader == "gpu" and (c.auto_augment != "none" or c.random_erasing):
        # its batches are augmented in a prefetch thread, where seeding torch's global RNG (which the
        # torchvision policies draw from) would race the training step's own use of it
        bad = "auto_augment" if c.auto_augment != "none" else "random_erasing"
        raise ParameterError(
            bad, "`auto_augment` and `random_erasing` need `loader` pil or `in_memory`; `loader` gpu cannot apply them"
        )


def auto_recipe(n_train: int) -> tuple[str, str]:
    """``paper`` for an ImageNet-sized training set, ``small`` below it; and why, for the log.

    The paper's recipe (lr 0.1 at batch 256, ÷10 at 25/50/75 % of the run) needs thousands of steps:
    on 2,000 images for 5 epochs it scores half of what a one-cycle plain loop reaches.
    """
    threshold = PAPER_BATCH * MIN_STEPS_PER_EPOCH
    if n_train >= threshold:
        return "paper", f"{n_train} training images >= {threshold}"
    return "small", f"{n_train} training images < {threshold}, too few steps for the paper's schedule"


def finetune_lr(recipe: dict[str, Any]) -> float:
    """The learning rate for starting from pretrained weights: a tenth of the recipe's from-scratch rate,
    so the first steps do not wash out what the weights learned on ImageNet."""
    return recipe.get("lr", TrainConfig.lr) / FINETUNE_LR_FACTOR


def auto_batch_size(n_train: int) -> int:
    """The paper's 256, halved (not below 64) until an epoch of ``n_train`` images has enough steps, then
    (not below 16) until the partial last batch an epoch leaves out is at most a tenth of the images.

    ImageNet keeps 256 (5,000 steps an epoch); 2,000 photos get 64 (31 steps instead of 7), which is
    what lets a 5-30 epoch run on a small dataset take enough optimizer steps to learn; 180 photos get 16
    (at 64, 52 of them sat out every epoch).
    """
    batch = PAPER_BATCH
    while batch > MIN_AUTO_BATCH and n_train // batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    while batch > MIN_SMALL_BATCH and n_train % batch > MAX_LEFT_OUT * n_train:
        batch //= 2
    return batch


def for_machine(c: TrainConfig) -> TrainConfig:
    """``c`` with the settings that depend on this machine filled in (loader workers: 4, at most the cores)."""
    return c if c.workers is not None else dataclasses.replace(c, workers=min(4, os.cpu_count() or 1))


def for_data(c: TrainConfig, n_train: int) -> tuple[TrainConfig, str | None]:
    """``c`` with the settings that depend on the training set filled in, and a log line saying why."""
    if c.batch_size is not None:
        return c, None
    batch = auto_batch_size(n_train)
    if batch == PAPER_BATCH:
        why = f"at least {MIN_STEPS_PER_EPOCH} steps an epoch"
    else:
        why = f"{n_train // PAPER_BATCH} steps an epoch at {PAPER_BATCH}, fewer than {MIN_STEPS_PER_EPOCH}"
        if n_train % MIN_AUTO_BATCH > MAX_LEFT_OUT * n_train and batch < MIN_AUTO_BATCH:
            why += f"; at {MIN_AUTO_BATCH} the last {n_train % MIN_AUTO_BATCH} would sit out every epoch"
    left = f"; {n_train % batch} left out of each epoch, others each time" if n_train % batch else ""
    return dataclasses.replace(c, batch_size=batch), f"batch size {batch} ({n_train} training images: {why}{left})"


def resolution_schedule(c: TrainConfig) -> list[tuple[int, int]]:
    """``train_resolution`` as (first epoch, 1-based; resolution) pairs, the first starting at epoch 1."""
    if not c.train_resolution:
        return [(1, c.resolution)]
    steps: list[tuple[int, int]] = []
    for k, part in enumerate(str(c.train_resolution).replace(" ", "").split(",")):
        res, _, start = part.partition("@")
        try:
            step = (int(start) if start else 1, int(res))
        except ValueError:
            step = (0, 0)
        if (k == 0 and step[0] != 1) or (k and step[0] <= steps[-1][0]) or step[1] < 32:
            raise ParameterError(
                "train_resolution",
                f"`train_resolution` {excerpt(c.train_resolution)}: expected RES[,RES@EPOCH...] with RES >= 32 and "
                "epochs increasing after the first (which starts at epoch 1), e.g. '160,224@101'",
            )
        steps.append(step)
    return steps


def train_resolution_at(c: TrainConfig, epoch: int) -> int:
    """The training crop size of 0-based ``epoch``: a pure function of the epoch, so resume needs nothing saved."""
    return [res for start, res in resolution_schedule(c) if start <= epoch + 1][-1]


def batch_layout(cfg: TrainConfig, n_train: int, world: int) -> tuple[int, int]:
    """(optimizer steps per epoch, images per forward pass in one process)."""
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ParameterError(
            "batch_size",
            f"{n_train} training images make less than one global batch of {cfg.batch_size}; lower `batch_size`",
        )
    per_rank = cfg.batch_size // world
    if cfg.batch_size % world or per_rank % cfg.accum_steps:
        raise ParameterError(
            "batch_size",
            f"`batch_size` {cfg.batch_size} must divide into {world} process(es) x {cfg.accum_steps} "
            "accumulation steps",
        )
    return steps_per_epoch, per_rank // cfg.accum_steps
