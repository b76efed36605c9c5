"""``fdmobilenet train``: the paper's ImageNet recipe (and ours) on any image folder, from one CPU
to many GPUs, with exact resume.

One ``TrainConfig`` dataclass holds every setting; its defaults *are* the paper's recipe, named
recipes and YAML files override some fields, and every field is also a command-line flag.
The learning rate is a pure function of the optimizer step and the data order a pure function of
(seed, epoch), so a checkpoint only needs the step to continue exactly where a run stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import Folder, ImageDataset, collate_skip_bad, eval_transform
from .packed import PackedFolder, PackedImageDataset
from .weights import atomic_write_bytes, read_weights, save_weights

EXIT_DIVERGED = 3


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
    crop_pct: float = _f(0.875, "evaluation center-crop fraction (224/256)")
    mean: tuple[float, float, float] = _f((0.485, 0.456, 0.406), "normalisation mean (RGB)")
    std: tuple[float, float, float] = _f((0.229, 0.224, 0.225), "normalisation std (RGB)")
    workers: int = _f(4, "data-loading processes per training process")
    loader: str = _f("auto", "input pipeline: pil (workers decode and augment each image), gpu (workers read bytes; "
                     "each batch is decoded and augmented on the training device, nvJPEG on CUDA, one step ahead), "
                     "auto (gpu on CUDA with --data, else pil)", choices=("auto", "pil", "gpu"))  # fmt: skip
    train_resolution: str | None = _f(None, "training crop size by epoch, e.g. '160,192@61,224@101': 160 px, "
                                      "192 from epoch 61, 224 from epoch 101; evaluation stays at --resolution "
                                      "(default: --resolution throughout)")  # fmt: skip
    in_memory: bool = _f(False, "decode once into a uint8 tensor on the device and augment whole batches "
                         "there (data that fits in memory; cached beside --out, rebuilt on change)")  # fmt: skip
    on_bad_image: str = _f("skip", "unreadable files: skip (report per epoch) or error (fail before training)",
                           choices=("skip", "error"))  # fmt: skip
    # model
    model: str = _f("fd_mobilenet_100", "registered model name (`fdmobilenet models`)")
    width: float | None = _f(None, "width multiplier, for a bare family name such as fd_mobilenet")
    groups: int | None = _f(None, "ShuffleNet group count, for the bare name shufflenet_v1")
    dropout: float = _f(0.0, "dropout before the classifier")
    pretrained: str | None = _f(None, "weights to start from (.safetensors or the authors' .pth.tar)")
    freeze_backbone: bool = _f(False, "train the classifier only (backbone and its BatchNorm statistics frozen)")
    # optimisation
    epochs: int = _f(120, "training epochs")
    batch_size: int = _f(256, "global batch size (over all processes and accumulation steps)")
    accum_steps: int = _f(1, "gradient accumulation steps per optimizer step")
    lr: float = _f(0.1, "learning rate at a global batch of --lr-base-batch (scaled linearly with the batch)")
    lr_base_batch: int = _f(256, "global batch at which --lr applies")
    schedule: str = _f("step", "learning-rate schedule", choices=("step", "cosine"))
    lr_step_epochs: int = _f(30, "step schedule: divide the lr by 1/lr_gamma every this many epochs")
    lr_gamma: float = _f(0.1, "step schedule: lr factor at each step")
    warmup_epochs: float = _f(0.0, "linear warm-up from 0, in epochs")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum")
    weight_decay: float = _f(4e-5, "L2 weight decay")
    wd_bn_bias: bool = _f(True, "weight decay also on BatchNorm parameters and biases")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing")
    ema_decay: float = _f(0.0, "per-step decay of an exponential moving average of the weights (0: off)")
    clip_grad: float = _f(0.0, "clip the gradient norm to this value (0: off)")
    # run
    out: str = _f("runs/train", "output folder: checkpoints, config.json, metrics.jsonl, curves.png")
    seed: int = _f(0, "seed of initialisation, data order and augmentation")
    deterministic: bool = _f(False, "deterministic kernels: a resumed run ends with the same weights")
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
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_STATE_VERSION = 1


def load_recipe(name_or_file: str) -> dict[str, Any]:
    """A named recipe, or a YAML file of TrainConfig fields (``recipe: NAME`` inside picks a base)."""
    if name_or_file in RECIPES:
        return dict(RECIPES[name_or_file])
    path = Path(name_or_file)
    if not path.is_file():
        raise ValueError(f"--recipe {name_or_file!r} is neither one of {', '.join(RECIPES)} nor a YAML file")
    try:
        import yaml
    except ImportError:
        raise ValueError("recipe files need PyYAML: pip install 'fdmobilenet[train]'") from None
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(raw).__name__}")
    base = load_recipe(raw.pop("recipe")) if "recipe" in raw else {}
    unknown = sorted(k.replace("-", "_") for k in raw if k.replace("-", "_") not in _FIELDS)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(_FIELDS)}")
    return {**base, **{k.replace("-", "_"): v for k, v in raw.items()}}


def make_config(overrides: dict[str, Any], base: TrainConfig | dict | None = None) -> TrainConfig:
    """``base`` (default: the dataclass defaults) with ``overrides`` applied and type-checked."""
    d = asdict(base) if isinstance(base, TrainConfig) else dict(base or {})
    d.update(overrides)
    hints = typing.get_type_hints(TrainConfig)
    for k, v in d.items():
        if k not in _FIELDS:
            raise ValueError(f"unknown training setting {k!r}; valid: {', '.join(_FIELDS)}")
        if isinstance(v, list):
            d[k] = tuple(v)
        elif isinstance(v, int) and not isinstance(v, bool) and hints[k] in (float, float | None):
            d[k] = float(v)
    cfg = TrainConfig(**d)
    _check_config(cfg)
    return cfg


def _check_config(c: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "accum_steps", "lr_base_batch", "lr_step_epochs"):
        if getattr(c, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
    if c.resolution < 32:
        raise ValueError(f"--resolution must be >= 32 (the networks downsample 32x), got {c.resolution}")
    if c.lr <= 0 or c.workers < 0 or c.checkpoint_every < 0 or c.threads < 0:
        raise ValueError("--lr must be > 0 and --workers, --checkpoint-every, --threads >= 0")
    if not 0 < c.crop_scale[0] <= c.crop_scale[1] <= 1:
        raise ValueError(f"--crop-scale must be two numbers 0 < min <= max <= 1, got {c.crop_scale}")
    resolution_schedule(c)  # raises on a malformed --train-resolution
    if c.in_memory and c.loader == "gpu":
        raise ValueError("--in-memory and --loader gpu are two different input pipelines; choose one")
    for name in ("on_bad_image", "schedule", "amp", "loader"):
        choices = _FIELDS[name].metadata["choices"]
        if getattr(c, name) not in choices:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}")


def resolution_schedule(c: TrainConfig) -> list[tuple[int, int]]:
    """``--train-resolution`` as (first epoch, 1-based; resolution) pairs, the first starting at epoch 1."""
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
            raise ValueError(
                f"--train-resolution {c.train_resolution!r}: expected RES[,RES@EPOCH...] with RES >= 32 and epochs "
                "increasing after the first (which starts at epoch 1), e.g. '160,224@101'"
            )
        steps.append(step)
    return steps


def train_resolution_at(c: TrainConfig, epoch: int) -> int:
    """The training crop size of 0-based ``epoch``: a pure function of the epoch, so resume needs nothing saved."""
    return [res for start, res in resolution_schedule(c) if start <= epoch + 1][-1]


# --- command line -------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (only flags given on the command line override the recipe)."""
    p.add_argument(
        "--recipe",
        help=f"{' | '.join(RECIPES)} | FILE.yaml (default: paper with --data, digits without)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    hints = typing.get_type_hints(TrainConfig)
    for name, f in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        default = "" if f.default is None else f" [default: {shown}]"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f.metadata["help"] + default, "dest": name}
        tp = hints[name]
        if tp in (bool, bool | None):
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kw.update(type=float, nargs=len(typing.get_args(tp)), metavar="X")
        else:
            base = next(t for t in typing.get_args(tp) or (tp,) if t is not type(None))
            kw["type"] = base
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        p.add_argument(flag, **kw)
    p.description = (
        f"{p.description or ''}. Defaults shown are the paper's ImageNet recipe; --recipe replaces some of them, "
        "and every flag given overrides both. The effective configuration is written to OUT/config.json."
    )
    p.epilog = "Many GPUs or nodes: torchrun --nproc_per_node N -m fdmobilenet.cli train ... (see docs/training.md)"


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(config, recipe name): defaults, then the recipe, then the flags given; on --resume the run's
    saved config replaces defaults and recipe. ``--pretrained`` alone also picks the weights' model."""
    given = {k: v for k, v in vars(args).items() if k in _FIELDS}
    recipe_name = "digits" if args.recipe is None and "data" not in given else args.recipe or "paper"
    recipe = load_recipe(recipe_name)
    saved = Path(given.get("out") or recipe.get("out") or TrainConfig.out) / "config.json"
    if args.resume and saved.is_file():
        base = json.loads(saved.read_text())
        return make_config(given, make_config({k: v for k, v in base.items() if k != "recipe"})), base["recipe"]
    if given.get("pretrained") and "model" not in given:
        from .weights import infer_model_name

        sd, meta = read_weights(given["pretrained"])
        given["model"] = meta.get("model") or infer_model_name(sd)
        for k, v in meta.get("model_kwargs", {}).items():
            given.setdefault(k, v)
    return make_config(given, make_config(recipe)), recipe_name


def run(args: argparse.Namespace) -> int:
    cfg, recipe = config_from_args(args)
    return train(cfg, resume=args.resume, recipe=recipe).exit_code


# --- distributed --------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Combine a few numbers over processes (a no-op in a single process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        ops = torch.distributed.ReduceOp
        torch.distributed.all_reduce(t, ops.MAX if op == "max" else ops.SUM)
        return t.tolist()


def _init_distributed(cfg: TrainConfig) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    device = torch.device("cuda", local) if want.startswith("cuda") else torch.device(want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":  # share the cores between the local processes
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank, world, local, device)


# --- data ---------------------------------------------------------------------------------------


@dataclass
class Data:
    train: torch.utils.data.Dataset  # SeededView over the training images
    val: torch.utils.data.Dataset
    classes: list[str]
    train_source: Folder | PackedFolder | None  # names skipped files by index; read by --loader gpu
    val_source: Folder | PackedFolder | None
    description: str
    memory: tuple[Any, Any] | None = None  # (train, val) MemoryDataset on the device with --in-memory


def _train_transform(cfg: TrainConfig, resolution: int | None = None):
    from torchvision import transforms as T

    tf = [T.RandomResizedCrop(resolution or cfg.resolution, scale=tuple(cfg.crop_scale), antialias=True)]
    if cfg.hflip:
        tf.append(T.RandomHorizontalFlip())
    return T.Compose([*tf, T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


def _build_data(cfg: TrainConfig, out: Path, dist: Dist, log) -> Data:
    from .datasets import (
        MemoryImageDataset,
        SeededView,
        empty_classes,
        export_images,
        find_bad_images,
        load_digits,
        load_folders,
        non_image_files,
        read_split,
    )

    train_tf = _train_transform(cfg, train_resolution_at(cfg, 0))
    val_tf = eval_transform(cfg.resolution, cfg.crop_pct, cfg.mean, cfg.std)
    if cfg.data is None:
        from .datasets import DIGITS_CLASSES

        tr_x, tr_y, va_x, va_y = load_digits(cfg.resolution)
        export_dir = out / "digits-val"
        if dist.main and not export_dir.is_dir():
            tmp = out / ".digits-val.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            export_images(va_x, va_y, DIGITS_CLASSES, tmp)
            os.replace(tmp, export_dir)
        desc = (
            f"built-in digits (scikit-learn, {len(tr_x)} train / {len(va_x)} val at {cfg.resolution} px; "
            f"val images exported to {export_dir})"
        )
        return Data(
            SeededView(MemoryImageDataset(tr_x, tr_y, train_tf), cfg.seed),
            MemoryImageDataset(va_x, va_y, val_tf),
            DIGITS_CLASSES,
            None,
            None,
            desc,
        )
    split = load_folders(cfg.data, cfg.val_split, cfg.seed, read_split(out / "split.json"))
    if split.record is not None and dist.main:
        atomic_write_bytes(out / "split.json", json.dumps(split.record, indent=1).encode())
    problems: list[tuple[str, str]] = []
    if isinstance(split.train, Folder):
        problems += [(p, "empty class folder") for p in empty_classes(split.train)]
        problems += [(p, "no image extension, ignored") for p in non_image_files(split.train.root)]
    if cfg.on_bad_image == "error":
        log(f"checking that all {len(split.train) + len(split.val)} images decode ...")
        paths = [p for part in (split.train, split.val) if isinstance(part, Folder) for p, _ in part.samples]
        problems += find_bad_images(paths, cfg.workers)
        for part in {x.root: x for x in (split.train, split.val) if isinstance(x, PackedFolder)}.values():
            problems += [(p, f"{r} (left out by prepare)") for p, r in part.bad_files()]
        if problems:
            listing = "\n".join(f"  {p}: {r}" for p, r in problems)
            raise ValueError(
                f"{len(problems)} problem(s) in {cfg.data} (--on-bad-image error):\n{listing}\n"
                "Fix or remove these files, or pass --on-bad-image skip to train on the readable images."
            )
    elif problems and dist.main:
        for p, r in problems[:20]:
            print(f"warning: {p}: {r}", file=sys.stderr)
        if len(problems) > 20:
            print(f"warning: ... and {len(problems) - 20} more", file=sys.stderr)
    if cfg.in_memory:
        if isinstance(split.train, PackedFolder) or isinstance(split.val, PackedFolder):
            raise ValueError(
                f"--in-memory reads image folders, but {cfg.data} holds prepared shards; "
                "train on them with --loader gpu (or pil), or point --data at the original folders"
            )
        return _memory_data(cfg, split, out, dist, log)
    draft = 2 * train_resolution_at(cfg, 0)  # decode big JPEGs at reduced scale; crops stay sharper than the output

    def dataset(part: Folder | PackedFolder, tf, draft_size: int | None = None) -> torch.utils.data.Dataset:
        if isinstance(part, PackedFolder):
            return PackedImageDataset(part, tf, draft_size)
        return ImageDataset(part.samples, tf, draft_size)

    return Data(
        SeededView(dataset(split.train, train_tf, draft), cfg.seed),
        dataset(split.val, val_tf),
        split.train.classes,
        split.train,
        split.val,
        split.description,
    )


def _memory_data(cfg: TrainConfig, split, out: Path, dist: Dist, log) -> Data:
    """--in-memory: both splits decoded once into uint8 tensors on the device (cached on disk)."""
    from .memcache import cache_size, load_or_build

    biggest = max(cfg.resolution, *(res for _, res in resolution_schedule(cfg)))
    size = cache_size(split.train, biggest, cfg.crop_pct)
    cache_dir = out.parent / ".fdm-cache"
    mems = []
    for part in (split.train, split.val):
        if dist.world > 1 and not dist.main:
            torch.distributed.barrier()  # rank 0 builds the cache file first
        mem = load_or_build(part, size, cache_dir, progress=dist.main)
        if dist.world > 1 and dist.main:
            torch.distributed.barrier()
        for path, reason in mem.bad if dist.main else []:
            print(f"warning: {path}: {reason} (skipped)", file=sys.stderr)
        mems.append(mem.to(dist.device))
    tr, va = mems
    gb = (tr.images.numel() + va.images.numel()) / 2**30
    log(f"in memory: {len(tr.labels)} train + {len(va.labels)} val images at {size} px ({gb:.2f} GiB uint8 on "
        f"{dist.device}; cache {tr.cache_file.parent}, {'built' if tr.rebuilt else 'reused'})")  # fmt: skip
    return Data(
        _Sized(len(tr.labels)), _Sized(len(va.labels)), split.train.classes, None, None, split.description, (tr, va)
    )


class _Sized(torch.utils.data.Dataset):
    """Stands for an in-memory split where only its length is asked for."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class _MemoryBatches:
    """(images, labels, indices, bad) batches cut from an on-device uint8 tensor and augmented as a
    batch: the in-memory counterpart of the DataLoader, with the same EpochOrder. Augmentation is
    seeded by (seed, epoch, step), so a resumed run sees the same crops."""

    def __init__(self, mem, order, batch: int, augment, train: bool, seed: int = 0, epoch: int = 0, start: int = 0):
        self.mem, self.order, self.batch, self.augment = mem, order, batch, augment
        self.train, self.seed, self.epoch, self.start = train, seed, epoch, start

    def __iter__(self):
        from .datasets import _mix

        idx = [i for i, _ in self.order] if self.train else list(self.order)
        for k in range(0, len(idx), self.batch):
            sel = torch.tensor(idx[k : k + self.batch], device=self.mem.images.device)
            gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, self.start + k // self.batch))
            x = self.augment(self.mem.images[sel], train=self.train, generator=gen)
            yield x, self.mem.labels[sel], sel.cpu(), []


def _loader_kind(cfg: TrainConfig, data: Data, dist: Dist) -> str:
    """memory (--in-memory), gpu (batched decode on the device) or pil (per-image in workers)."""
    if data.memory is not None:
        return "memory"
    if cfg.loader == "gpu" and data.train_source is None:
        raise ValueError("--loader gpu reads image files, but the built-in digits live in memory; pass --data DIR")
    # auto: on an H100, nvJPEG decoding alone was measured (issue 6) at ~2.5x the PIL workers' img/s;
    # this batched loader itself has not been timed on a GPU yet (benchmarks/gpu_input_pipeline.sh)
    if cfg.loader == "auto":
        return "gpu" if dist.device.type == "cuda" and data.train_source is not None else "pil"
    return cfg.loader


def _set_train_resolution(train: torch.utils.data.Dataset, cfg: TrainConfig, res: int) -> None:
    """Point the per-image training transform (and JPEG draft size) at this epoch's resolution."""
    base = train.base if hasattr(train, "base") else train
    base.transform = _train_transform(cfg, res)
    if getattr(base, "draft_size", None):
        base.draft_size = 2 * res


def _ignore_sigint(_worker_id: int) -> None:
    """Data-loader workers leave Ctrl-C to the main process, which checkpoints before exiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- model, optimizer, schedule -----------------------------------------------------------------


def _model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in (("width", cfg.width), ("groups", cfg.groups)) if v is not None}


def _build_model(cfg: TrainConfig, classes: list[str], log, load_pretrained: bool = True) -> nn.Module:
    from .models import create_model
    from .weights import load_weights

    kw = _model_kwargs(cfg)
    if cfg.dropout:
        kw["dropout"] = cfg.dropout
    model = create_model(cfg.model, num_classes=len(classes), resolution=cfg.resolution, **kw)
    if cfg.pretrained and load_pretrained:
        sd, meta = read_weights(cfg.pretrained)
        same_head = sd.get("classifier.weight", torch.empty(0)).shape[:1] == (len(classes),)
        same_names = meta.get("class_names") in (None, classes)
        load_weights(model, cfg.pretrained, strict_classifier=False)
        if same_head and same_names:
            log(f"loaded {cfg.pretrained} (classifier included)")
        else:
            model.reset_classifier(len(classes))
            log(f"loaded {cfg.pretrained}; classifier re-initialised for {len(classes)} classes")
    if cfg.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
    return model


def _set_train_mode(model: nn.Module, freeze_backbone: bool) -> None:
    model.train()
    if freeze_backbone:  # frozen BatchNorm keeps its (pretrained) statistics
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _build_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not cfg.wd_bn_bias:
        groups = [
            {"params": [p for _, p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for _, p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def peak_lr(cfg: TrainConfig) -> float:
    """--lr scaled linearly from --lr-base-batch to the global batch (Goyal et al., 2017)."""
    return cfg.lr * cfg.batch_size / cfg.lr_base_batch


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then step or cosine decay."""
    peak = peak_lr(cfg)
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    if cfg.schedule == "step":
        return peak * cfg.lr_gamma ** (step // (cfg.lr_step_epochs * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# --- checkpoints --------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _recover(out: Path, tag: str) -> None:
    """Finish or discard a checkpoint interrupted between its two files (see ``_write_checkpoint``)."""
    pending, state_path = out / f"{tag}.safetensors.next", out / f"{tag}.state.pt"
    if not pending.exists():
        return
    try:
        step = read_weights(pending)[1].get("step")
        done = state_path.is_file() and torch.load(state_path, weights_only=True)["step"] == step
    except (ValueError, OSError, RuntimeError, KeyError):
        done = False
    if done:
        os.replace(pending, out / f"{tag}.safetensors")
    else:
        pending.unlink()


def _write_checkpoint(out: Path, tag: str, weights: dict[str, torch.Tensor], meta: dict, state: dict) -> None:
    """Weights to ``TAG.safetensors.next``, then the state file (the commit), then the rename.

    Each file is written atomically (temporary file, fsync, rename); a crash at any point leaves a
    matching weights/state pair, repaired by ``_recover`` on resume.
    """
    save_weights(weights, out / f"{tag}.safetensors.next", meta)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(out / f"{tag}.state.pt", buf.getvalue())
    os.replace(out / f"{tag}.safetensors.next", out / f"{tag}.safetensors")
    with contextlib.suppress(OSError):  # make the rename durable where directories can be fsynced
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Diverged(RuntimeError):
    """The loss or the weights became NaN/inf."""


# --- the run ------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    exit_code: int
    best_top1: float | None = None
    best_epoch: int | None = None
    out: Path | None = None
    epochs_done: int = 0


class _Stop:
    """Remembers SIGTERM/SIGINT so the loop can checkpoint at the next step boundary, then exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, resume: bool = False, recipe: str = "paper") -> TrainResult:
    """Train ``cfg``; on ``resume`` continue the run in ``cfg.out``. Returns the exit code and best top-1."""
    dist = _init_distributed(cfg)
    was_deterministic, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with _Stop() as stop:
            return _train(cfg, resume, recipe, dist, stop)
    except Diverged as e:
        if dist.main:
            print(f"fdmobilenet train: error: {e}", file=sys.stderr)
        return TrainResult(EXIT_DIVERGED, out=Path(cfg.out))
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(was_threads)
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _train(cfg: TrainConfig, resume: bool, recipe: str, dist: Dist, stop: _Stop) -> TrainResult:
    from tqdm import tqdm

    from .datasets import EpochOrder, _mix
    from .evaluate import evaluate_loader

    log = (lambda *a: print(*a, flush=True)) if dist.main else (lambda *a: None)
    out = Path(cfg.out)
    state_path = out / "last.state.pt"
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        for tag in ("last", "best"):
            _recover(out, tag)
    if dist.world > 1:
        torch.distributed.barrier()
    ckpt = None
    if state_path.is_file():
        if not resume:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        ckpt = torch.load(state_path, map_location="cpu", weights_only=True)
        if ckpt.get("version") != _STATE_VERSION:
            raise ValueError(f"{state_path} was written by an incompatible version; start a new run in another --out")
    elif resume:
        log(f"no checkpoint in {out}: starting a new run")

    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _seed_all(cfg.seed)

    data = _build_data(cfg, out, dist, log)
    loader_kind = _loader_kind(cfg, data, dist)
    n_train = len(data.train)  # type: ignore[arg-type]
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{n_train} training images make less than one global batch of {cfg.batch_size}; lower --batch-size"
        )
    per_rank = cfg.batch_size // dist.world
    if cfg.batch_size % dist.world or per_rank % cfg.accum_steps:
        raise ValueError(
            f"--batch-size {cfg.batch_size} must divide into {dist.world} process(es) "
            f"x {cfg.accum_steps} accumulation steps"
        )
    micro = per_rank // cfg.accum_steps

    model = _build_model(cfg, data.classes, log, load_pretrained=ckpt is None)
    channels_last = cfg.channels_last if cfg.channels_last is not None else dist.device.type == "cuda"
    model.to(dist.device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ema = None
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    optimizer = _build_optimizer(cfg, model, lr_at(cfg, 0, steps_per_epoch))
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if dist.device.type == "cuda" else "none")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp == "fp16")

    start_epoch = start_step = step = 0
    best_top1, best_epoch = -1.0, -1
    loss_sum = loss_n = bad_count = 0.0
    if ckpt is not None:
        weights = read_weights(out / "last.safetensors")[0]
        model.load_state_dict(ckpt["model"] if ema is not None else weights)
        if ema is not None:
            ema.module.load_state_dict(weights)
            ema.n_averaged.fill_(int(ckpt["ema_n"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, start_step, step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]
        best_top1, best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        loss_sum, loss_n, bad_count = ckpt["epoch_loss_sum"], ckpt["epoch_loss_n"], ckpt["epoch_bad"]
        if steps_per_epoch != ckpt["steps_per_epoch"]:
            raise ValueError(
                f"the checkpoint has {ckpt['steps_per_epoch']} steps per epoch but this run has {steps_per_epoch} "
                "(was --batch-size or the data changed?); resume with the original settings"
            )
        _truncate_metrics(out / "metrics.jsonl", start_epoch)
        log(f"resumed {out} at epoch {start_epoch + 1}, step {start_step}/{steps_per_epoch} (global step {step})")

    raw_model = ddp_model = model
    if dist.world > 1:
        ddp_model = model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    if cfg.compile:  # after DDP, as PyTorch recommends, so compiled graphs break at gradient buckets
        model = torch.compile(model)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    trainable = [p for p in raw_model.parameters() if p.requires_grad]

    if dist.main:
        atomic_write_bytes(out / "config.json", json.dumps({"recipe": recipe, **asdict(cfg)}, indent=1).encode())
    n_params = sum(p.numel() for p in raw_model.parameters())
    log(
        f"training {cfg.model} ({n_params / 1e6:.2f}M parameters, {len(data.classes)} classes) on {data.description}\n"
        f"  recipe {recipe}; {cfg.epochs} epochs x {steps_per_epoch} steps; global batch {cfg.batch_size} "
        f"({dist.world} process(es) x {cfg.accum_steps} x {micro}); peak lr {peak_lr(cfg):.4g}; "
        f"{dist.device.type}{', ' + amp if amp_dtype else ''}; {loader_kind} input pipeline; output in {out}"
    )
    tb = _tensorboard(out) if dist.main else None

    def checkpoint(tag: str, epoch: int, step_in_epoch: int, val_top1: float | None = None) -> None:
        # every rank checks (the weights are identical), so all stop together on a NaN
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            raise Diverged(
                f"the weights became NaN/inf at epoch {epoch + 1}, global step {step}; the last good checkpoint "
                f"{out / 'last.safetensors'} was kept. Lower --lr (or use --clip-grad) and --resume."
            )
        if not dist.main:
            return
        src = ema.module if ema is not None else raw_model
        meta = {
            "model": cfg.model,
            "num_classes": len(data.classes),
            "model_kwargs": _model_kwargs(cfg),
            "resolution": cfg.resolution,
            "class_names": data.classes,
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "crop_pct": cfg.crop_pct,
            "interpolation": "bilinear",
            "source": f"fdmobilenet train ({recipe})",
            "epoch": epoch,
            "step": step,
            "ema": ema is not None,
        }
        if val_top1 is not None:
            meta["val_top1"] = round(val_top1, 4)
        state = {
            "version": _STATE_VERSION,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "step": step,
            "steps_per_epoch": steps_per_epoch,
            "best_top1": best_top1,
            "best_epoch": best_epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": {"step": step, "lr": lr_at(cfg, step, steps_per_epoch)},
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "epoch_loss_sum": loss_sum,
            "epoch_loss_n": loss_n,
            "epoch_bad": bad_count,
        }
        if ema is not None:
            state["model"] = {k: v.detach().cpu() for k, v in raw_model.state_dict().items()}
            state["ema_n"] = int(ema.n_averaged)
        _write_checkpoint(out, tag, src.state_dict(), meta, state)

    def interrupted(epoch: int, step_in_epoch: int, written: bool = False) -> TrainResult:
        if not written:
            checkpoint("last", epoch, step_in_epoch)
        name = signal.Signals(stop.signum or signal.SIGTERM).name
        log(f"caught {name}: checkpoint written at epoch {epoch + 1}, step {step_in_epoch}; continue with --resume")
        return TrainResult(128 + int(stop.signum or signal.SIGTERM), best_top1, best_epoch, out, epoch)

    sampler_kw = {"pin_memory": dist.device.type == "cuda", "collate_fn": collate_skip_bad}
    if cfg.workers:
        sampler_kw.update(num_workers=cfg.workers, worker_init_fn=_ignore_sigint, prefetch_factor=4)
    val_idx = list(range(dist.rank, len(data.val), dist.world))  # type: ignore[arg-type]
    # batched augmentation draws one generator per batch: give each process its own stream of crops
    batch_seed = cfg.seed if dist.world == 1 else _mix(cfg.seed, dist.rank)
    norm = {"crop_pct": cfg.crop_pct, "mean": cfg.mean, "std": cfg.std, "hflip": cfg.hflip}
    if loader_kind == "memory":
        from .augment import BatchAugment

        def augment(res: int) -> BatchAugment:
            return BatchAugment(res, "rrc", cfg.crop_scale, **norm)

        val_loader: Any = _MemoryBatches(data.memory[1], val_idx, max(micro, 64), augment(cfg.resolution), False)
    elif loader_kind == "gpu":
        from .batchloader import BatchDecodeLoader, Prefetcher

        gpu_kw = {"device": dist.device, "workers": cfg.workers, "worker_init_fn": _ignore_sigint, **norm}
        val_loader = Prefetcher(
            BatchDecodeLoader(data.val_source, max(micro, 64), cfg.resolution, train=False, indices=val_idx, **gpu_kw),
            dist.device,
        )
    else:
        val_loader = torch.utils.data.DataLoader(data.val, batch_size=max(micro, 64), sampler=val_idx, **sampler_kw)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        order = EpochOrder(n_train, cfg.batch_size, dist.rank, dist.world, cfg.seed, epoch, start_step)
        res = train_resolution_at(cfg, epoch)
        if res != train_resolution_at(cfg, max(epoch - 1, 0)) or (epoch == start_epoch and res != cfg.resolution):
            log(f"epoch {epoch + 1}: training at {res} px (evaluation at {cfg.resolution} px)")
        first = start_step * cfg.accum_steps  # micro-batches already done in this epoch
        if loader_kind == "memory":
            loader = iter(_MemoryBatches(data.memory[0], order, micro, augment(res), True, batch_seed, epoch, first))
        elif loader_kind == "gpu":
            train_batches = BatchDecodeLoader(
                data.train_source, micro, res, train=True, scale=cfg.crop_scale, indices=[i for i, _ in order],
                seed=batch_seed, epoch=epoch, first_batch=first, **gpu_kw,
            )  # fmt: skip
            loader = iter(Prefetcher(train_batches, dist.device))
        else:
            _set_train_resolution(data.train, cfg, res)
            loader = iter(torch.utils.data.DataLoader(data.train, batch_size=micro, sampler=order, **sampler_kw))
        _set_train_mode(raw_model, cfg.freeze_backbone)
        bad_paths: list[tuple[str, str]] = []
        bar = tqdm(
            total=steps_per_epoch,
            initial=start_step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=None if dist.main else True,
            leave=False,
            dynamic_ncols=True,
        )
        seen, t_imgs = 0, time.time()
        for s in range(start_step, steps_per_epoch):
            batches = [next(loader) for _ in range(cfg.accum_steps)]
            for _, _, _, bad in batches:
                bad_paths += [(data.train_source.name(i) if data.train_source else str(i), r) for i, r in bad]
            empty = any(b[0] is None for b in batches)
            empty_any, stop_any = dist.all_reduce([float(empty), float(stop.signum is not None)], "max")
            if stop_any:
                bar.close()
                return interrupted(epoch, s)
            if not empty_any:
                lr = lr_at(cfg, step, steps_per_epoch)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                step_loss = step_n = 0.0
                for j, (x, y, _, _) in enumerate(batches):
                    x = x.to(dist.device, non_blocking=True)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = y.to(dist.device, non_blocking=True)
                    sync = dist.world == 1 or j == cfg.accum_steps - 1
                    with (
                        contextlib.nullcontext() if sync else ddp_model.no_sync(),
                        torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
                    ):
                        loss = criterion(model(x), y)
                        scaler.scale(loss / cfg.accum_steps).backward()
                    step_loss += float(loss.detach()) * len(y)
                    step_n += len(y)
                scaler.unscale_(optimizer)
                gnorm = float(nn.utils.clip_grad_norm_(trainable, cfg.clip_grad or float("inf")))
                g_loss, g_n, nonfinite = dist.all_reduce(
                    [step_loss, step_n, float(not (math.isfinite(step_loss) and math.isfinite(gnorm)))]
                )
                if nonfinite:
                    bar.close()
                    raise Diverged(
                        f"loss {g_loss / max(g_n, 1):.4g} / gradient norm {gnorm:.4g} is not finite at epoch "
                        f"{epoch + 1}, global step {step} (lr {lr:.4g}); stopped. The last good checkpoint "
                        f"{out / 'last.safetensors'} was kept. Lower --lr (or use --clip-grad), check the data, "
                        "and --resume."
                    )
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(raw_model)
                loss_sum += g_loss
                loss_n += g_n
                seen += g_n
                bar.set_postfix(
                    loss=f"{g_loss / max(g_n, 1):.3f}", img_s=f"{seen / (time.time() - t_imgs):.0f}", lr=f"{lr:.3g}"
                )
            step += 1
            bar.update(1)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and s + 1 < steps_per_epoch:
                checkpoint("last", epoch, s + 1)
        bar.close()
        img_s = seen / max(time.time() - t_imgs, 1e-9)

        # end of epoch: count bad files everywhere, validate, log, checkpoint
        if dist.world > 1:
            gathered: list[Any] = [None] * dist.world
            torch.distributed.all_gather_object(gathered, bad_paths)
            bad_paths = [b for part in gathered for b in part]
        bad_count += len(bad_paths)
        if bad_paths and dist.main:
            with open(out / "bad_images.txt", "a") as f:
                f.writelines(f"epoch {epoch + 1}\t{p}\t{r}\n" for p, r in bad_paths)
        eval_model = ema.module if ema is not None else raw_model
        r = evaluate_loader(eval_model, val_loader, data.val_source, dist.device)
        c1, c5, nv, nbad = dist.all_reduce([r.top1 * r.n / 100, r.top5 * r.n / 100, r.n, len(r.bad)])
        top1, top5 = 100 * c1 / nv, 100 * c5 / nv
        train_loss = loss_sum / max(loss_n, 1)
        lr_now = lr_at(cfg, max(step - 1, 0), steps_per_epoch)
        is_best = top1 > best_top1
        if is_best:
            best_top1, best_epoch = top1, epoch
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": round(train_loss, 5),
            "val_top1": round(top1, 4),
            "val_top5": round(top5, 4),
            "lr": lr_now,
            "time_s": round(time.time() - t0, 2),
            "img_s": round(img_s, 1),
            "images": int(loss_n),  # trained on in this epoch (unreadable ones excluded)
            "bad_skipped": int(bad_count),
            "val_bad": int(nbad),
        }
        if dist.main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if tb is not None:
                for k in ("train_loss", "val_top1", "val_top5", "lr", "img_s"):
                    tb.add_scalar(k, row[k], epoch + 1)
        extra = f"  skipped {int(bad_count)} unreadable train image(s), listed in {out / 'bad_images.txt'}"
        extra = (extra if bad_count else "") + (f"  ({int(nbad)} unreadable val image(s))" if nbad else "")
        log(
            f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {train_loss:.4f}  val top-1 {top1:6.2f}%  "
            f"top-5 {top5:6.2f}%  lr {lr_now:.4g}  {row['time_s']:.1f}s  {row['img_s']:.0f} img/s{extra}"
        )
        loss_sum = loss_n = bad_count = 0.0
        start_step = 0
        checkpoint("last", epoch + 1, 0, top1)
        if is_best:
            checkpoint("best", epoch + 1, 0, top1)
        if dist.all_reduce([float(stop.signum is not None)], "max")[0] and epoch + 1 < cfg.epochs:
            return interrupted(epoch + 1, 0, written=True)

    if tb is not None:
        tb.close()
    if dist.main:
        _plot(out)
        if start_epoch >= cfg.epochs:
            log(f"{out} had already finished its {cfg.epochs} epochs")
        log(f"done: best val top-1 {best_top1:.2f}% at epoch {best_epoch + 1}; checkpoint {out / 'best.safetensors'}")
    return TrainResult(0, best_top1, best_epoch, out, cfg.epochs)


# --- outputs ------------------------------------------------------------------------------------


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric rows of epochs a resumed run is about to redo."""
    if not path.is_file():
        return
    rows = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epochs_done]
    atomic_write_bytes(path, "".join(r + "\n" for r in rows).encode())


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _plot(out: Path) -> None:
    """``curves.png``: training loss and validation top-1/top-5 per epoch."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no curves.png; pip install 'fdmobilenet[train]')")
        return
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], marker=".")
    a.set(xlabel="epoch", ylabel="train loss", title="loss")
    b.plot(ep, [r["val_top1"] for r in rows], marker=".", label="top-1")
    b.plot(ep, [r["val_top5"] for r in rows], marker=".", label="top-5")
    b.set(xlabel="epoch", ylabel="val accuracy (%)", title="validation accuracy")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(out / "curves.png", buf.getvalue())
