"""Checkpoints: the weights (``TAG.safetensors``, with metadata, loadable on their own) plus everything
else a run needs to continue exactly (``TAG.state.pt``: counters, optimizer, scaler, RNG states).

The data order and the learning rate are pure functions of (seed, epoch, step), so the counters in
``TrainState`` are all the position a resumed run needs. The two files are written so that a crash
at any point leaves a matching pair (``write_checkpoint``, ``recover``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import pickle
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ParameterError
from .._schema import printable
from .._utils import atomic_write_bytes, remove_orphan_temps
from ..preprocess import Preprocess
from ..weights import check_state_dict, read_weights, save_weights
from .config import TrainConfig
from .distributed import Dist
from .optim import Parts, lr_at, model_kwargs

STATE_VERSION = 1  # of the state file's layout; a run written by another version is not resumed


@dataclass
class TrainState:
    """Where a run stands: the position to continue from and the running sums of the current epoch."""

    epoch: int = 0  # 0-based epoch being trained (== epochs done)
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    step: int = 0  # optimizer steps done in the run
    steps_per_epoch: int = 0
    best_score: float = -1.0  # of the task's metric (``Task.metric``: top-1 %, mAP@0.5 %, ...)
    best_epoch: int = -1
    loss_sum: float = 0.0  # of this epoch's steps, so far
    loss_n: float = 0.0
    bad_count: float = 0.0


def rng_state() -> dict[str, Any]:
    """The global torch, NumPy, Python (and CUDA) generators, as tensors and tuples ``weights_only`` loads."""
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def recover(out: Path, tag: str) -> None:
    """Finish or discard a checkpoint interrupted between its two files (see ``write_checkpoint``)."""
    pending, state_path = out / f"{tag}.safetensors.next", out / f"{tag}.state.pt"
    if not pending.exists():
        return
    try:
        step = read_weights(pending)[1].get("step")
        done = state_path.is_file() and torch.load(state_path, weights_only=True)["step"] == step
    except Exception:  # noqa: BLE001 - whatever is wrong with either file, the pending weights are dropped
        done = False
    if done:
        os.replace(pending, out / f"{tag}.safetensors")
    else:
        pending.unlink()


def write_checkpoint(out: Path, tag: str, weights: dict[str, torch.Tensor], meta: dict, state: dict) -> None:
    """Weights to ``TAG.safetensors.next``, then the state file (the commit), then the rename.

    Each file is written atomically (temporary file, fsync, rename); a crash at any point leaves a
    matching weights/state pair, repaired by ``recover`` on resume.
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


def weights_meta(
    cfg: TrainConfig,
    recipe: str,
    classes: list[str],
    state: TrainState,
    ema: bool,
    score: float | None = None,
    metric: str = "val_top1",
) -> dict[str, Any]:
    """The metadata of a checkpoint's weights: enough to rebuild, preprocess for and label the model."""
    pre = Preprocess(cfg.resolution, cfg.crop_pct, cfg.mean, cfg.std).to_meta()
    meta = {
        "model": cfg.model,
        "num_classes": len(classes),
        "model_kwargs": model_kwargs(cfg),
        "resolution": pre.pop("resolution"),
        "class_names": classes,
        **pre,  # mean, std, crop_pct, interpolation
        "source": f"fdmobilenet train ({recipe})",
        "epoch": state.epoch,
        "step": state.step,
        "ema": ema,
    }
    if score is not None:  # the score `best` follows, under the task's metric name (val_top1, val_map50, ...)
        meta[metric] = round(score, 4)
    return meta


def save_checkpoint(
    out: Path,
    tag: str,
    cfg: TrainConfig,
    recipe: str,
    classes: list[str],
    state: TrainState,
    parts: Parts,
    score: float | None = None,
    use_ema: bool | None = None,
    metric: str = "val_top1",
    extra_meta: dict[str, Any] | None = None,
) -> None:
    """Write checkpoint ``tag`` (``last`` or ``best``): the EMA weights when there is an EMA (unless
    ``use_ema`` is False: a ``best`` whose raw weights validated better), with the raw model in the state
    file so training continues from it."""
    use_ema = parts.ema is not None if use_ema is None else use_ema and parts.ema is not None
    meta = {**weights_meta(cfg, recipe, classes, state, use_ema, score, metric), **(extra_meta or {})}
    st = {
        "version": STATE_VERSION,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "step": state.step,
        "steps_per_epoch": state.steps_per_epoch,
        "best_score": state.best_score,
        "metric": metric,
        "best_epoch": state.best_epoch,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": {"step": state.step, "lr": lr_at(cfg, state.step, state.steps_per_epoch)},
        "scaler": parts.scaler.state_dict(),
        "rng": rng_state(),
        "epoch_loss_sum": state.loss_sum,
        "epoch_loss_n": state.loss_n,
        "epoch_bad": state.bad_count,
    }
    if parts.ema is not None:
        st["model"] = {k: v.detach().cpu() for k, v in parts.model.state_dict().items()}
        st["ema_n"] = int(parts.ema.n_averaged)
    src = parts.ema.module if use_ema else parts.model
    write_checkpoint(out, tag, src.state_dict(), meta, st)


def load_state(path: Path) -> dict[str, Any]:
    """A state file, refused (with what to do) when it is damaged, not ours, or from another layout version."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zero bytes, cut short, or a pickle that asks to run code
        why = (
            "it is empty" if path.stat().st_size == 0
            else "it holds objects other than tensors, which are never loaded (they could run code)"
            if isinstance(e, pickle.UnpicklingError) else f"it is cut short or damaged ({type(e).__name__})"
        )  # fmt: skip
        raise ParameterError(
            "out",
            f"{path} is not a usable training state: {why}. Restore it from a copy, or train into another `out` "
            f"(`pretrained` {path.parent / 'last.safetensors'} starts from its weights)",
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != STATE_VERSION:
        raise ParameterError("out", f"{path} was written by an incompatible version; start a new run in another `out`")
    return ckpt


def restore(ckpt: dict[str, Any], out: Path, parts: Parts, steps_per_epoch: int) -> TrainState:
    """Load the ``last`` checkpoint of ``out`` into ``parts`` and the global RNGs; return its position."""
    weights = read_weights(out / "last.safetensors")[0]
    for sd in (weights, ckpt["model"]) if parts.ema is not None else (weights,):
        try:  # a resume with another `model` or `width` than the run's: say so, not torch's size-mismatch dump
            check_state_dict(parts.model, sd, str(out / "last.safetensors"))
        except ValueError as e:
            raise ParameterError(
                "resume",
                f"{str(e).splitlines()[0].rstrip(':')}: the run was trained with another `model`, `width` or class "
                "count; resume without changing them (config.json has the run's), or train into another `out`",
            ) from None
    parts.model.load_state_dict(ckpt["model"] if parts.ema is not None else weights)
    if parts.ema is not None:
        parts.ema.module.load_state_dict(weights)
        parts.ema.n_averaged.fill_(int(ckpt["ema_n"]))
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    if steps_per_epoch != ckpt["steps_per_epoch"]:
        raise ParameterError(
            "batch_size",
            f"the checkpoint has {ckpt['steps_per_epoch']} steps per epoch but this run has {steps_per_epoch} "
            "(was `batch_size` or the data changed?); resume with the original settings",
        )
    return TrainState(
        ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"], steps_per_epoch, _best_score(ckpt), ckpt["best_epoch"],
        ckpt["epoch_loss_sum"], ckpt["epoch_loss_n"], ckpt["epoch_bad"],
    )  # fmt: skip


def _best_score(ckpt: dict[str, Any]) -> float:
    """The best score so far; states written before metric-neutral keys called it ``best_top1``."""
    return ckpt["best_score"] if "best_score" in ckpt else ckpt["best_top1"]


RUN_MARKER = ".fdmobilenet-run"  # written into every run folder: only there are files replaced or deleted
_OURS = (RUN_MARKER, "last.state.pt", "last.safetensors", "config.json")  # a run of ours (older ones: no marker)


def check_ours(out: Path) -> None:
    """Refuse an existing ``out`` that holds files and no run of ours: its ``metrics.jsonl`` or
    ``bad_images.txt`` would be replaced or deleted. (Chosen over using it without touching them: a run
    mixed into someone's folder could not be told apart from their files later.)"""
    if not out.is_dir() or any((out / n).exists() for n in _OURS):
        return
    theirs = sorted(p.name for p in out.iterdir() if p.name != ".lock")
    if theirs:
        shown = ", ".join(printable(n)[:60] for n in theirs[:3]) + (
            f" (+{len(theirs) - 3} more)" if len(theirs) > 3 else ""
        )
        raise ParameterError(
            "out",
            f"`out` {out} holds files this package did not write ({shown}) and no training run; "
            "choose a new or empty `out`",
        )


@contextlib.contextmanager
def run_lock(out: Path, dist: Dist) -> Iterator[None]:
    """Hold ``OUT/.lock`` for the whole run (main process): a second run into the same folder is refused
    instead of mixing its metrics, config and checkpoints with the first one's."""
    if not dist.main:
        yield
        return
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"`out` {out} is a file; give a folder for the run's checkpoints and metrics")
    check_ours(out)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a read-only mount holds a finished run: nothing to mark
        if not (out / RUN_MARKER).exists():
            (out / RUN_MARKER).write_text("a training run of fdmobilenet: its files may be replaced by `train`\n")
    try:
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # a read-only folder: nobody can write into it, so there is nothing to guard
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        yield
        return
    try:
        try:  # a POSIX lock, owned by this process alone: forked loader workers do not keep it after a SIGKILL
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise ParameterError(
                "out",
                f"`out` {out} is in use by another training run (it holds {out / '.lock'}); wait for it to end "
                "or choose another `out`",
            ) from None
        yield
    finally:
        os.close(fd)


def open_out(out: Path, resume: bool, dist: Dist, log: Callable[..., None]) -> dict[str, Any] | None:
    """Create ``out`` (finishing any half-written checkpoint, deleting temporary files a killed process
    left); its last state when resuming. A folder that already holds a run is never trained over without
    ``resume``; a new run drops metrics left by one that never wrote a checkpoint."""
    state_path = out / "last.state.pt"
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        for tag in ("last", "best"):
            recover(out, tag)
        for p in remove_orphan_temps(out):
            log(f"removed {p}, left by a process killed while writing it")
    dist.barrier()
    if state_path.is_file():
        if not resume:
            raise ParameterError(
                "resume", f"{out} already holds a run; pass `resume` to continue it, or choose another `out`"
            )
        return load_state(state_path)
    if resume:
        log(f"no checkpoint in {out}: starting a new run")
    if dist.main:
        for name in ("metrics.jsonl", "bad_images.txt"):  # of a run stopped before its first checkpoint
            (out / name).unlink(missing_ok=True)
    return None
