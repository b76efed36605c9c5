"""The training loop of one process: ``train(cfg)`` sets a run up (from scratch or from its last
checkpoint), then alternates ``train_one_epoch`` (optimizer steps, signal and NaN checks, step
checkpoints) and ``end_epoch`` (bad-file accounting, validation, metrics, checkpoints).

A run ends in one of four ways: all epochs done (exit 0), a SIGTERM/SIGINT (checkpoint at the next
step boundary, exit 128 + signal), a NaN/inf loss or weights (``Diverged``, exit ``EXIT_DIVERGED``,
the last good checkpoint kept), or an error. The global RNGs are used in a fixed order (seeding,
model init, EMA, loaders, steps), which is what lets a resumed run end with the same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import StoppedError
from .._progress import Progress
from .._utils import write_if_changed
from .checkpoint import TrainState, open_out, restore, run_lock, save_checkpoint
from .choose import task_for
from .config import (
    EXIT_DIVERGED,
    WARMUP_MAX_FRACTION,
    TrainConfig,
    batch_layout,
    for_data,
    for_machine,
    train_resolution_at,
)
from .distributed import Dist, Stop, init_distributed
from .inputs import Data, Loaders
from .optim import Parts, build_parts, check_memory, lr_at, peak_lr, set_train_mode
from .outputs import MetricLogger, append_metrics, plot_curves, truncate_metrics
from .tasks import Task


class Diverged(StoppedError):
    """The loss or the weights became NaN/inf; the message says which settings to change."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_DIVERGED)


@dataclass
class TrainResult:
    """How a run ended: 0 (done), 128 + signal (stopped, resumable) or ``EXIT_DIVERGED``."""

    exit_code: int
    best_score: float | None = None  # the best validation score of the task's ``metric``
    best_epoch: int | None = None
    out: Path | None = None
    epochs_done: int = 0
    error: StoppedError | None = None  # why the run stopped early (main process; the CLI prints it)
    metric: str = "val_top1"  # what ``best_score`` measures (``Task.metric``: val_top1, val_map50, ...)


@dataclass
class Run:
    """Everything one process of a run holds; ``TrainState`` holds where it stands."""

    cfg: TrainConfig
    recipe: str
    task: Task  # classification or detection: data, model, loss, batches and validation score
    dist: Dist
    stop: Stop
    log: Callable[..., None]
    out: Path
    data: Data
    loaders: Loaders
    parts: Parts  # raw model, EMA, optimizer, scaler: what checkpoints save
    model: nn.Module  # what a step calls: the raw model, DDP-wrapped and/or compiled
    ddp_model: nn.Module  # the raw model or its DDP wrapper (for no_sync)
    trainable: list[nn.Parameter]
    amp_dtype: torch.dtype | None
    channels_last: bool
    micro: int  # images per forward pass in this process
    start_epoch: int  # the epoch this process started (or resumed) in
    tb: Any  # the logger setting's MetricLogger (main process) or None
    t_start: float = 0.0  # when this process started training (for the ETA)


@dataclass
class EpochStats:
    """What ``end_epoch`` needs from the training half of an epoch."""

    t0: float  # when the epoch started
    img_s: float  # training throughput of this process
    bad: list[tuple[str, str]]  # (file, reason) skipped by this process


def train(cfg: TrainConfig, resume: bool = False, recipe: str = "paper") -> TrainResult:
    """Train ``cfg``; on ``resume`` continue the run in ``cfg.out``. Returns the exit code and best top-1."""
    dist = init_distributed(cfg)
    was_deterministic, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with run_lock(Path(cfg.out), dist), Stop() as stop:
            run, state = _setup(cfg, resume, recipe, dist, stop)
            return _fit(run, state)
    except Diverged as e:
        return TrainResult(EXIT_DIVERGED, out=Path(cfg.out), error=e if dist.main else None)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(was_threads)
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _seed_everything(cfg: TrainConfig, dist: Dist) -> None:
    """Kernel determinism as asked, then the global seeds the model initialisation draws from."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)


def _setup(cfg: TrainConfig, resume: bool, recipe: str, dist: Dist, stop: Stop) -> tuple[Run, TrainState]:
    """Everything before the first step, in the order the exact-resume guarantee depends on."""
    log = (lambda *a: print(*a, flush=True)) if dist.main else (lambda *a: None)
    out = Path(cfg.out)
    ckpt = open_out(out, resume, dist, log)
    cfg = for_machine(cfg)
    task = task_for(cfg)
    _seed_everything(cfg, dist)
    check_memory(cfg, 2, 1, dist.device)  # before any data is resized to cfg.resolution
    data = task.build_data(cfg, out, dist, log)
    if cfg.data is not None:  # config.json records the pipeline chosen, so a resumed run keeps it
        cfg = dataclasses.replace(cfg, in_memory=data.memory is not None)
    cfg, note = for_data(cfg, data.n_train)
    if note:
        log(note)
    if cfg.warmup_epochs > WARMUP_MAX_FRACTION * cfg.epochs:  # config.json records the warm-up the run has
        cfg = dataclasses.replace(cfg, warmup_epochs=round(WARMUP_MAX_FRACTION * cfg.epochs, 6))
        log(f"warm-up {cfg.warmup_epochs:g} epochs (a tenth of the run at most)")
    kind = task.loader_kind(cfg, data, dist)
    steps_per_epoch, micro = batch_layout(cfg, data.n_train, dist.world)
    check_memory(cfg, len(data.classes), micro, dist.device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else dist.device.type == "cuda"
    task.setup_loss(cfg, data, dist, log, out, resumed=ckpt is not None, channels_last=channels_last)
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if dist.device.type == "cuda" else "none")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    lr0 = lr_at(cfg, 0, steps_per_epoch)
    model = task.build_model(cfg, data.classes, log, load_pretrained=ckpt is None)
    parts = build_parts(cfg, model, dist.device, channels_last, lr0, amp)
    state = TrainState(steps_per_epoch=steps_per_epoch)
    if ckpt is not None:
        state = restore(ckpt, out, parts, steps_per_epoch)
        truncate_metrics(out / "metrics.jsonl", state.epoch)
        if state.epoch >= cfg.epochs:
            log(f"{out} has finished its {cfg.epochs} epochs: nothing to train (a larger `epochs` continues it)")
        else:
            at = f"epoch {state.epoch + 1}, step {state.step_in_epoch}/{steps_per_epoch} (global step {state.step})"
            log(f"resumed {out} at {at}")
    model = ddp_model = parts.model
    if dist.world > 1:
        ddp_model = model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    if cfg.compile:  # after DDP, as PyTorch recommends, so compiled graphs break at gradient buckets
        model = torch.compile(model)
    if dist.main:
        write_if_changed(out / "config.json", json.dumps({"recipe": recipe, **asdict(cfg)}, indent=1).encode())
    n_params = sum(p.numel() for p in parts.model.parameters())
    log(
        f"training {cfg.model} ({n_params / 1e6:.2f}M parameters, {len(data.classes)} classes) on {data.description}\n"
        f"  recipe {recipe}; {cfg.epochs} epochs x {steps_per_epoch} steps; global batch {cfg.batch_size} "
        f"({dist.world} process(es) x {cfg.accum_steps} x {micro}); peak lr {peak_lr(cfg):.4g}; "
        f"{dist.device.type}{', ' + amp if amp_dtype else ''}; {kind} input pipeline; output in {out}"
    )
    tb = MetricLogger(cfg.logger, out) if dist.main and state.epoch < cfg.epochs else None  # finished: write nothing
    loaders = task.make_loaders(cfg, data, dist, kind, micro)
    trainable = [p for p in parts.model.parameters() if p.requires_grad]
    run = Run(
        cfg=cfg, recipe=recipe, task=task, dist=dist, stop=stop, log=log, out=out, data=data, loaders=loaders,
        parts=parts, model=model, ddp_model=ddp_model, trainable=trainable, amp_dtype=amp_dtype,
        channels_last=channels_last, micro=micro, start_epoch=state.epoch, tb=tb,
    )  # fmt: skip
    return run, state


def _fit(run: Run, state: TrainState) -> TrainResult:
    """The epochs from where ``state`` stands to the end, or to a signal."""
    cfg = run.cfg
    run.t_start = time.time()
    for epoch in range(run.start_epoch, cfg.epochs):
        stats = train_one_epoch(run, state, epoch)
        if stats is None:
            return _interrupted(run, state)
        end_epoch(run, state, epoch, stats)
        if run.dist.all_reduce([float(run.stop.signum is not None)], "max")[0] and epoch + 1 < cfg.epochs:
            return _interrupted(run, state, written=True)
    if run.tb is not None:
        run.tb.close()
    if run.dist.main:
        if run.start_epoch < cfg.epochs:  # (a finished run was said so at the start)
            plot_curves(run.out, run.task.curves, run.task.curve_axis)
            run.task.report(run)
        run.log(
            f"done: best {run.task.metric_label} {state.best_score:.2f}% at epoch {state.best_epoch + 1}; "
            f"checkpoint {run.out / 'best.safetensors'}"
        )
    return TrainResult(0, state.best_score, state.best_epoch, run.out, cfg.epochs, metric=run.task.metric)


def train_one_epoch(run: Run, state: TrainState, epoch: int) -> EpochStats | None:
    """The optimizer steps of ``epoch`` from ``state.step_in_epoch`` on; None when a signal stopped it."""
    cfg, dist = run.cfg, run.dist
    t0 = time.time()
    res = train_resolution_at(cfg, epoch)
    if res != train_resolution_at(cfg, max(epoch - 1, 0)) or (epoch == run.start_epoch and res != cfg.resolution):
        run.log(f"epoch {epoch + 1}: training at {res} px (evaluation at {cfg.resolution} px)")
    loader = run.loaders.train(epoch, state.step_in_epoch)
    set_train_mode(run.parts.model, cfg.freeze_backbone)
    bad: list[tuple[str, str]] = []
    bar = Progress(
        state.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", "step", state.step_in_epoch, enabled=dist.main
    )
    seen, t_imgs = 0.0, time.time()
    with contextlib.closing(bar):
        for s in range(state.step_in_epoch, state.steps_per_epoch):
            try:
                batches = [next(loader) for _ in range(cfg.accum_steps)]
            except RuntimeError:  # a loader worker killed by the signal just as it started, before ignoring it
                if run.stop.signum is None or dist.world > 1:
                    raise
                return None
            for _, _, _, skipped in batches:
                bad += [(run.data.train_name(i), r) for i, r in skipped]
            empty = any(b[0] is None for b in batches)
            empty_any, stop_any = dist.all_reduce([float(empty), float(run.stop.signum is not None)], "max")
            if stop_any:
                return None
            if not empty_any:
                g_loss, g_n, lr = _optimizer_step(run, state, batches, epoch)
                state.loss_sum += g_loss
                state.loss_n += g_n
                seen += g_n
                bar.set_postfix(
                    loss=f"{g_loss / max(g_n, 1):.3f}", img_s=f"{seen / (time.time() - t_imgs):.0f}", lr=f"{lr:.3g}"
                )
            state.step += 1
            state.step_in_epoch += 1
            bar.update(1)
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and s + 1 < state.steps_per_epoch:
                checkpoint(run, state, "last")
    return EpochStats(t0, seen / max(time.time() - t_imgs, 1e-9), bad)


def _optimizer_step(run: Run, state: TrainState, batches: list[Any], epoch: int) -> tuple[float, float, float]:
    """One optimizer step over ``accum_steps`` micro-batches; (global loss sum, global images, lr)."""
    cfg, dist, parts = run.cfg, run.dist, run.parts
    lr = lr_at(cfg, state.step, state.steps_per_epoch)
    for g in parts.optimizer.param_groups:
        g["lr"] = lr
    parts.optimizer.zero_grad(set_to_none=True)
    step_loss = step_n = 0.0
    for j, (x, y, _, _) in enumerate(batches):
        x, y = run.task.to_device(x, y, dist, state.step, j)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = dist.world == 1 or j == cfg.accum_steps - 1
        with (
            contextlib.nullcontext() if sync else run.ddp_model.no_sync(),
            torch.autocast(dist.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None),
        ):
            loss = run.task.loss(run, x, y, j)
            parts.scaler.scale(loss / cfg.accum_steps).backward()
        step_loss += float(loss.detach()) * len(y)
        step_n += len(y)
    parts.scaler.unscale_(parts.optimizer)
    gnorm = float(nn.utils.clip_grad_norm_(run.trainable, cfg.clip_grad or float("inf")))
    # fp16: GradScaler skips steps whose gradients overflowed and lowers its scale (its first steps do so on
    # purpose), so only the loss says the run diverged; without a scaler a non-finite gradient norm does too
    grads_ok = math.isfinite(gnorm) or parts.scaler.is_enabled()
    g_loss, g_n, nonfinite = dist.all_reduce([step_loss, step_n, float(not (math.isfinite(step_loss) and grads_ok))])
    if nonfinite:
        raise Diverged(
            f"loss {g_loss / max(g_n, 1):.4g} / gradient norm {gnorm:.4g} is not finite at epoch "
            f"{epoch + 1}, global step {state.step} (lr {lr:.4g}); stopped. The last good checkpoint "
            f"{run.out / 'last.safetensors'} was kept. Lower `lr` (or use `clip_grad`), check the data, "
            "and `resume`."
        )
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)
    return g_loss, g_n, lr


def end_epoch(run: Run, state: TrainState, epoch: int, stats: EpochStats) -> None:
    """Count bad files over processes, validate (EMA and raw weights in one pass), log a metrics row, write
    ``last`` (and ``best`` with the task's files, e.g. ``val_predictions.csv``)."""
    cfg, dist, out, metric = run.cfg, run.dist, run.out, run.task.metric
    _record_bad(run, state, epoch, stats.bad)
    scores, local = run.task.validate(run, _candidates(run.parts))
    chosen = max(scores, key=lambda k: scores[k].value)  # the EMA wins ties: it is what `last` holds
    score = scores[chosen]
    train_loss = state.loss_sum / max(state.loss_n, 1)
    lr_now = lr_at(cfg, max(state.step - 1, 0), state.steps_per_epoch)
    is_best = score.value > state.best_score
    if is_best:
        state.best_score, state.best_epoch = score.value, epoch
    if len(scores) > 1:  # the EMA's and the raw weights' score, and which one this epoch's best is
        ema, raw = scores["ema"].value, scores["raw"].value
        row_ema = {f"{metric}_ema": round(ema, 4), f"{metric}_raw": round(raw, 4)}
        shown = f" ({chosen}; ema {ema:.2f}%, raw {raw:.2f}%)"
    else:
        row_ema, shown = {}, ""
    row = {
        "epoch": epoch + 1,
        "step": state.step,
        "train_loss": round(train_loss, 5),
        **score.row,
        "lr": lr_now,
        "time_s": round(time.time() - stats.t0, 2),
        "img_s": round(stats.img_s, 1),
        "images": int(state.loss_n),  # trained on in this epoch (unreadable ones excluded)
        "bad_skipped": int(state.bad_count),
        "val_bad": int(score.nbad),
        **row_ema,
    }
    if dist.main:
        append_metrics(out, row)
        if run.tb is not None:
            run.tb.log(row, epoch + 1)
        if row["time_s"] > 5 and epoch + 1 < cfg.epochs:  # curves.png during a long run too (cheap beside it)
            plot_curves(out, run.task.curves, run.task.curve_axis)
    extra = f"  skipped {int(state.bad_count)} unreadable train image(s), listed in {out / 'bad_images.txt'}"
    extra = (extra if state.bad_count else "") + (f"  ({score.nbad} unreadable val image(s))" if score.nbad else "")
    left = cfg.epochs - epoch - 1  # the rest of the run at this process's pace so far (validation included)
    eta = f"  ETA {_hms((time.time() - run.t_start) / (epoch + 1 - run.start_epoch) * left)}" if left else ""
    run.log(
        f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {train_loss:.4f}  {score.text}{shown}  "
        f"lr {lr_now:.4g}  {row['time_s']:.1f}s  {row['img_s']:.0f} img/s{eta}{extra}"
    )
    state.loss_sum = state.loss_n = state.bad_count = 0.0
    state.epoch, state.step_in_epoch = epoch + 1, 0
    checkpoint(run, state, "last", scores[next(iter(scores))].value)
    if is_best:
        checkpoint(run, state, "best", score.value, use_ema=chosen == "ema")
        run.task.write_best(run, local[chosen])


def _hms(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def _candidates(parts: Parts) -> dict[str, nn.Module]:
    """The weights to validate: the EMA first (what ``last`` holds), then the raw model; or the model alone."""
    return {"ema": parts.ema.module, "raw": parts.model} if parts.ema is not None else {"model": parts.model}


def _record_bad(run: Run, state: TrainState, epoch: int, bad: list[tuple[str, str]]) -> None:
    """Add every process's skipped training files to the count and to ``bad_images.txt``."""
    if run.dist.world > 1:
        gathered: list[Any] = [None] * run.dist.world
        torch.distributed.all_gather_object(gathered, bad)
        bad = [b for part in gathered for b in part]
    state.bad_count += len(bad)
    if bad and run.dist.main:
        with open(run.out / "bad_images.txt", "a") as f:
            f.writelines(f"epoch {epoch + 1}\t{p}\t{r}\n" for p, r in bad)


def checkpoint(run: Run, state: TrainState, tag: str, score: float | None = None, use_ema: bool | None = None) -> None:
    """Write checkpoint ``tag`` at ``state`` (main process), unless the weights are no longer finite."""
    # every rank checks (the weights are identical), so all stop together on a NaN
    if not all(torch.isfinite(p).all() for p in run.parts.model.parameters()):
        raise Diverged(
            f"the weights became NaN/inf at epoch {state.epoch + 1}, global step {state.step}; the last good "
            f"checkpoint {run.out / 'last.safetensors'} was kept. Lower `lr` (or use `clip_grad`) and `resume`."
        )
    if run.dist.main:
        save_checkpoint(
            run.out,
            tag,
            run.cfg,
            run.recipe,
            run.data.classes,
            state,
            run.parts,
            score,
            use_ema,
            run.task.metric,
            run.task.checkpoint_meta(run.parts.model, run.data.classes),
        )


def _interrupted(run: Run, state: TrainState, written: bool = False) -> TrainResult:
    """A signal arrived: make sure ``last`` holds this position, then exit 128 + signal."""
    if not written:
        checkpoint(run, state, "last")
    signum = run.stop.signum or signal.SIGTERM
    run.log(
        f"caught {signal.Signals(signum).name}: checkpoint written at epoch {state.epoch + 1}, "
        f"step {state.step_in_epoch}; resume the run to continue"
    )
    code = 128 + int(signum)
    return TrainResult(code, state.best_score, state.best_epoch, run.out, state.epoch, metric=run.task.metric)
