"""The images of a run and the three input pipelines that feed them to the training step.

``build_data`` opens the data once (the built-in digits, an image folder or prepared shards, with its
split and bad-file checks); ``make_loaders`` is the one place that switches between the pipelines:

- pil: data-loader workers decode and augment each image (torchvision transforms);
- gpu: workers read bytes, each batch is decoded and augmented on the training device;
- memory (``in_memory``): the splits live decoded on the device, batches are cut and augmented there.

All three read the same ``EpochOrder`` and seed their augmentation from (seed, epoch, position), so
the batches of an epoch do not depend on where a run resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .._errors import ParameterError
from .._utils import mix, write_if_changed
from ..data.augment import BatchAugment
from ..data.batchloader import BatchDecodeLoader, Prefetcher
from ..data.digits import DIGITS_CLASSES, ImageListDataset, export_images, load_digits
from ..data.folders import Folder, empty_classes, find_bad_images, non_image_files
from ..data.images import ImageDataset, collate_skip_bad
from ..data.memcache import MemoryDataset, cache_bytes_bound, cache_size, load_or_build
from ..data.order import EpochOrder, SeededView
from ..data.packed import PackedFolder, PackedImageDataset
from ..data.splits import FolderSplit, load_folders, read_split
from ..preprocess import Preprocess
from ..preprocess import train_transform as preset_train
from .config import MEMORY_SHARE, TrainConfig, resolution_schedule, train_resolution_at
from .distributed import Dist
from .optim import available_memory

Log = Callable[..., None]


@dataclass
class Data:
    """The training and validation images of a run, in the form its input pipeline reads them.

    Per-image datasets (``train``/``val``) for the pil pipeline, the files themselves (``*_source``)
    for the gpu pipeline and for naming skipped files, on-device tensors (``memory``) for ``in_memory``.
    """

    classes: list[str]
    description: str
    n_train: int
    n_val: int
    train: SeededView | None = None
    val: Dataset | None = None
    train_source: Folder | PackedFolder | None = None
    val_source: Folder | PackedFolder | None = None
    memory: tuple[MemoryDataset, MemoryDataset] | None = None  # (train, val) with in_memory

    def train_name(self, i: int) -> str:
        """How a skipped training sample is reported: its file, or its index for in-memory data."""
        return self.train_source.name(i) if self.train_source else str(i)


def train_transform(cfg: TrainConfig, resolution: int | None = None) -> Callable[[Any], torch.Tensor]:
    """The per-image training preset (``preprocess.train_transform``) at ``cfg``'s settings."""
    return preset_train(
        resolution or cfg.resolution, cfg.mean, cfg.std, cfg.crop_scale, cfg.hflip, **strong_augment(cfg)
    )


def strong_augment(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg``'s strong-augmentation settings, as both training transforms (per image, per batch) take them."""
    return {"auto_augment": cfg.auto_augment, "ra_magnitude": cfg.ra_magnitude, "random_erasing": cfg.random_erasing}


def build_data(cfg: TrainConfig, out: Path, dist: Dist, log: Log) -> Data:
    """Open ``cfg.data`` (or the built-in digits) with its seeded split, checked per ``on_bad_image``."""
    train_tf = train_transform(cfg, train_resolution_at(cfg, 0))
    val_tf = Preprocess(cfg.resolution, cfg.crop_pct, cfg.mean, cfg.std).transform()
    if cfg.data is None:
        return _digits_data(cfg, out, dist, train_tf, val_tf)
    split = load_folders(cfg.data, cfg.val_split, cfg.seed, read_split(out / "split.json"))
    if split.record is not None and dist.main:
        write_if_changed(out / "split.json", json.dumps(split.record, indent=1).encode())
    _check_files(cfg, split, dist, log)
    size = use_memory(cfg, split, dist.device, log)
    if size is not None:
        if isinstance(split.train, PackedFolder) or isinstance(split.val, PackedFolder):
            raise ParameterError(
                "in_memory",
                f"`in_memory` reads image folders, but {cfg.data} holds prepared shards; "
                "train on them with `loader` gpu (or pil), or point `data` at the original folders",
            )
        return _memory_data(cfg, split, out, dist, log, size)
    draft = 2 * train_resolution_at(cfg, 0)  # decode big JPEGs at reduced scale; crops stay sharper than the output

    def dataset(part: Folder | PackedFolder, tf: Callable, draft_size: int | None = None) -> Dataset:
        if isinstance(part, PackedFolder):
            return PackedImageDataset(part, tf, draft_size)
        return ImageDataset(part.samples, tf, draft_size)

    train, val = SeededView(dataset(split.train, train_tf, draft), cfg.seed), dataset(split.val, val_tf)
    return Data(split.train.classes, split.description, len(train), len(val), train, val, split.train, split.val)


def use_memory(cfg: TrainConfig, split: FolderSplit, device: torch.device, log: Log) -> int | None:
    """The side of the in-memory cache when the run decodes its data into memory (``in_memory``, or by
    default: image folders whose decoded photos fit a quarter of the free memory), else None.

    Decoding once and augmenting whole batches trains 1.5-1.9x faster than decoding every photo every
    epoch on a small CPU, so a user should not have to know to ask for it.
    """
    if cfg.in_memory is False:
        return None
    packed = isinstance(split.train, PackedFolder) or isinstance(split.val, PackedFolder)
    if cfg.in_memory is None and (packed or cfg.loader != "auto"):  # an explicit loader is the pipeline asked for
        return None
    biggest = max(cfg.resolution, *(res for _, res in resolution_schedule(cfg)))
    size = 0 if packed else cache_size(split.train, biggest, cfg.crop_pct)  # packed + in_memory: refused later
    if cfg.in_memory:
        return size
    need = cache_bytes_bound(len(split.train), size) + len(split.val) * 3 * cfg.resolution**2
    free = min(available_memory(torch.device("cpu")), available_memory(device))
    fits = need * MEMORY_SHARE <= free
    log(
        f"in-memory input pipeline {'on' if fits else 'off'} (default): the decoded photos take at most "
        f"{need / 2**30:.2f} GiB, {'within' if fits else 'more than'} a quarter of the {free / 2**30:.1f} GiB "
        "free (the in_memory setting overrides this choice)"
    )
    return size if fits else None


def _digits_data(cfg: TrainConfig, out: Path, dist: Dist, train_tf: Callable, val_tf: Callable) -> Data:
    """The built-in digits, with the validation images exported as PNGs for ``eval`` and ``predict``."""
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
    train = SeededView(ImageListDataset(tr_x, tr_y, train_tf), cfg.seed)
    return Data(DIGITS_CLASSES, desc, len(tr_x), len(va_x), train, ImageListDataset(va_x, va_y, val_tf))


def _check_files(cfg: TrainConfig, split: FolderSplit, dist: Dist, log: Log) -> None:
    """Empty classes and non-image files are warned about; with ``on_bad_image="error"``, every image is
    decoded first and any problem stops the run before it starts."""
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
            raise ParameterError(
                "on_bad_image",
                f"{len(problems)} problem(s) in {cfg.data} (`on_bad_image` error):\n{listing}\n"
                "Fix or remove these files, or pass `on_bad_image` skip to train on the readable images.",
            )
    elif problems and dist.main:
        for p, r in problems[:20]:
            print(f"warning: {p}: {r}", file=sys.stderr)
        if len(problems) > 20:
            print(f"warning: ... and {len(problems) - 20} more", file=sys.stderr)


def _memory_data(cfg: TrainConfig, split: FolderSplit, out: Path, dist: Dist, log: Log, size: int) -> Data:
    """``in_memory``: both splits decoded once into uint8 tensors of side ``size`` on the device (cached on disk)."""
    cache_dir = out.parent / ".fdm-cache"
    mems = []
    # val holds the evaluation crops themselves (what `eval` feeds the network, from the same PIL code):
    # resizing a cache made for training would differ from eval wherever photos are smaller than its resize
    val_crop = Preprocess(cfg.resolution, cfg.crop_pct, cfg.mean, cfg.std)
    for part, side, crop in ((split.train, size, None), (split.val, cfg.resolution, val_crop)):
        if dist.world > 1 and not dist.main:
            torch.distributed.barrier()  # rank 0 builds the cache file first
        mem = load_or_build(part, side, cache_dir, progress=dist.main, crop=crop)
        if dist.world > 1 and dist.main:
            torch.distributed.barrier()
        for path, reason in mem.bad if dist.main else []:
            print(f"warning: {path}: {reason} (skipped)", file=sys.stderr)
        mems.append(mem.to(dist.device))
    tr, va = mems
    gb = (tr.images.numel() + va.images.numel()) / 2**30
    log(f"in memory: {len(tr.labels)} train + {len(va.labels)} val images at {size} px ({gb:.2f} GiB uint8 on "
        f"{dist.device}; cache {tr.cache_file.parent}, {'built' if tr.rebuilt else 'reused'})")  # fmt: skip
    return Data(split.train.classes, split.description, len(tr.labels), len(va.labels), memory=(tr, va))


class MemoryBatches:
    """(images, labels, indices, bad) batches cut from an on-device uint8 tensor and augmented as a
    batch: the in-memory counterpart of the DataLoader, with the same EpochOrder. Augmentation is
    seeded by (seed, epoch, step), so a resumed run sees the same crops."""

    def __init__(
        self,
        mem: MemoryDataset,
        order: Iterable[Any],
        batch: int,
        augment: BatchAugment,
        train: bool,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
    ):
        self.mem, self.order, self.batch, self.augment = mem, order, batch, augment
        self.train, self.seed, self.epoch, self.start = train, seed, epoch, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]]:
        idx = [i for i, _ in self.order] if self.train else list(self.order)
        for k in range(0, len(idx), self.batch):
            sel = torch.tensor(idx[k : k + self.batch], device=self.mem.images.device)
            gen = torch.Generator().manual_seed(mix(self.seed, self.epoch, self.start + k // self.batch))
            x = self.augment(
                self.mem.images, train=self.train, generator=gen, sizes=self.mem.sizes[sel.cpu()], index=sel
            )
            yield x, self.mem.labels[sel], sel.cpu(), []


def loader_kind(cfg: TrainConfig, data: Data, dist: Dist) -> str:
    """memory (``in_memory``), gpu (batched decode on the device) or pil (per-image in workers)."""
    if data.memory is not None:
        return "memory"
    if cfg.loader == "gpu" and data.train_source is None:
        raise ParameterError(
            "loader", "`loader` gpu reads image files, but the built-in digits live in memory; pass `data` DIR"
        )
    # auto: on an H100, nvJPEG decoding alone was measured (issue 6) at ~2.5x the PIL workers' img/s;
    # this batched loader itself has not been timed on a GPU yet (benchmarks/gpu_input_pipeline.sh).
    # It cannot apply auto_augment or random_erasing (config.check_config): those runs read with pil.
    if cfg.loader == "auto":
        strong = cfg.auto_augment != "none" or cfg.random_erasing > 0
        return "gpu" if dist.device.type == "cuda" and data.train_source is not None and not strong else "pil"
    return cfg.loader


@dataclass
class Loaders:
    """What the training loop reads: the validation batches of this process, and its training
    batches of an epoch from a given optimizer step on (``train(epoch, start_step)``)."""

    kind: str
    val: Iterable[Any]
    train: Callable[[int, int], Iterator[Any]]


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _ignore_stop_signals(_worker_id: int) -> None:
    """Data-loader workers leave Ctrl-C and SIGTERM to the main process, which checkpoints before exiting
    (Slurm, docker stop and Kubernetes signal the whole process group: a worker dying first lost the run).
    One sent while the worker started (blocked by ``StopSafeLoader``) is dropped here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class StopSafeLoader(DataLoader):
    """A DataLoader whose workers are started with SIGINT/SIGTERM blocked: PyTorch gives a new worker a
    SIGTERM handler that exits before ``worker_init_fn`` runs, and a worker dying then raised "DataLoader
    worker exited unexpectedly" anywhere in the main process. The main process gets the signal once the
    workers are started."""

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _set_train_resolution(train: SeededView, cfg: TrainConfig, res: int) -> None:
    """Point the per-image training transform (and JPEG draft size) at this epoch's resolution."""
    base = train.base
    base.transform = train_transform(cfg, res)
    if getattr(base, "draft_size", None):
        base.draft_size = 2 * res


def make_loaders(cfg: TrainConfig, data: Data, dist: Dist, kind: str, micro: int) -> Loaders:
    """The loaders of pipeline ``kind`` (see ``loader_kind``) for micro-batches of ``micro`` images."""
    val_idx = list(range(dist.rank, data.n_val, dist.world))
    val_batch = max(micro, 64)
    # batched augmentation draws one generator per batch: give each process its own stream of crops
    batch_seed = cfg.seed if dist.world == 1 else mix(cfg.seed, dist.rank)
    norm = {"crop_pct": cfg.crop_pct, "mean": cfg.mean, "std": cfg.std, "hflip": cfg.hflip}

    def order(epoch: int, start_step: int) -> EpochOrder:
        return EpochOrder(data.n_train, cfg.batch_size, dist.rank, dist.world, cfg.seed, epoch, start_step)

    if kind == "memory":
        assert data.memory is not None
        train_mem, val_mem = data.memory
        augment = lambda res: BatchAugment(res, "rrc", cfg.crop_scale, **norm, **strong_augment(cfg))
        # the val photos are stored as evaluation crops already: the whole image, at its own size
        val_aug = BatchAugment(cfg.resolution, "rrc", cfg.crop_scale, **{**norm, "crop_pct": 1.0})
        val: Iterable[Any] = MemoryBatches(val_mem, val_idx, val_batch, val_aug, False)

        def train(epoch: int, start_step: int) -> Iterator[Any]:
            batches = MemoryBatches(
                train_mem, order(epoch, start_step), micro, augment(train_resolution_at(cfg, epoch)), True,
                batch_seed, epoch, start_step * cfg.accum_steps,
            )  # fmt: skip
            return iter(batches)

    elif kind == "gpu":
        gpu_kw = {"device": dist.device, "workers": cfg.workers, "worker_init_fn": _ignore_stop_signals, **norm}
        val = Prefetcher(
            BatchDecodeLoader(data.val_source, val_batch, cfg.resolution, train=False, indices=val_idx, **gpu_kw),
            dist.device,
        )

        def train(epoch: int, start_step: int) -> Iterator[Any]:
            batches = BatchDecodeLoader(
                data.train_source, micro, train_resolution_at(cfg, epoch), train=True, scale=cfg.crop_scale,
                indices=[i for i, _ in order(epoch, start_step)], seed=batch_seed, epoch=epoch,
                first_batch=start_step * cfg.accum_steps, **gpu_kw,
            )  # fmt: skip
            return iter(Prefetcher(batches, dist.device))

    else:
        loader_kw: dict[str, Any] = {"pin_memory": dist.device.type == "cuda", "collate_fn": collate_skip_bad}
        if cfg.workers:
            loader_kw.update(num_workers=cfg.workers, worker_init_fn=_ignore_stop_signals, prefetch_factor=4)
        val = StopSafeLoader(data.val, batch_size=val_batch, sampler=val_idx, **loader_kw)

        def train(epoch: int, start_step: int) -> Iterator[Any]:
            assert data.train is not None
            _set_train_resolution(data.train, cfg, train_resolution_at(cfg, epoch))
            return iter(StopSafeLoader(data.train, batch_size=micro, sampler=order(epoch, start_step), **loader_kw))

    return Loaders(kind, val, train)
