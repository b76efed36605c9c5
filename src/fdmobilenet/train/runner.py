"""The experiment runner: a job in, a finished run out. ``compare`` and ``fit --data`` both train through
``run_job``, so both keep finished runs (``done.json``), resume interrupted ones, refuse a folder trained
with other settings, and stop with the run's own exit code.

A ``Job`` is one training run of a classifier (a family at a width, or a released width fine-tuned); the
detection plug-in's ``DetectorJob`` (``compare_detection``) overrides the parts that differ: its settings,
its result row and what is scored after training. The runner itself knows no task.
"""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import train as training
from .._errors import ParameterError, StoppedError
from .._utils import atomic_write_bytes
from ..models import RELEASED_WIDTHS, family_kwargs
from .config import TrainConfig
from .engine import TrainResult
from .outputs import read_metrics

Log = Callable[[str], None]


@dataclass
class Job:
    """One classifier run: ``family`` at ``width`` (``budget`` MFLOPs, ``macs``/``params`` as profiled), or with
    ``pretrained`` the released width fine-tuned from those weights. ``resolution`` and ``run_name`` are for
    callers whose runs differ in resolution or are named otherwise (``fit``'s candidates)."""

    family: str
    budget: float
    width: float
    seed: int
    macs: int
    params: int
    pretrained: str | None = None  # a classifier's weights to fine-tune, or a detector's backbone weights
    resolution: int | None = None  # None: the experiment's
    run_name: str | None = None  # None: family[-ft]-<budget>M-w<width>-seed<seed>

    @property
    def name(self) -> str:
        if self.run_name:
            return self.run_name
        tag = "-ft" if self.pretrained else ""
        return f"{self.family}{tag}-{self.budget:g}M-w{self.width:g}-seed{self.seed}"

    def settings(self, recipe_cfg: dict[str, Any], groups: int) -> dict[str, Any]:
        """The ``TrainConfig`` fields this run sets: model, width (and groups), or weights to fine-tune."""
        got: dict[str, Any] = {} if self.resolution is None else {"resolution": self.resolution}
        if self.pretrained:
            got["model"] = next(n for n, w in RELEASED_WIDTHS.items() if w == self.width)
            got["pretrained"] = self.pretrained
            got["lr"] = training.finetune_lr(recipe_cfg)
        else:
            got.update(model=self.family, width=self.width, **family_kwargs(self.family, groups))
        return got

    def describe(self, cfg: TrainConfig) -> str:
        """The cost the log shows when the run starts."""
        return f"{self.macs / 1e6:.1f} MMACs"

    def result_row(self, cfg: TrainConfig, result: TrainResult, metrics: list[dict[str, Any]]) -> dict[str, Any]:
        """What ``done.json`` records of the finished run (besides its time and speed)."""
        best = max(metrics, key=lambda m: m.get("val_top1", -1))
        return {
            "family": self.family + ("+pretrained" if self.pretrained else ""),
            "budget_mflops": self.budget,
            "width": self.width,
            "macs": self.macs,
            "params": self.params,
            "seed": self.seed,
            "top1": result.best_score,
            "top5": best.get("val_top5"),
        }

    def finish(self, run_dir: Path, overrides: dict[str, Any], row: dict[str, Any], log: Log) -> bool:
        """Work after training that a kept run may still lack; True when ``row`` changed (it is rewritten)."""
        return False


class RunStopped(StoppedError):
    """A run of the experiment ended early; ``exit_code`` is its own (128 + signal, or 3 on divergence)."""

    def __init__(self, name: str, exit_code: int, run_dir: Path):
        if exit_code == training.EXIT_DIVERGED:
            what = (
                f"training {name} diverged (NaN/inf loss); running it again would diverge the same way: lower `lr` "
                f"(or choose another `recipe`) and use another `out`, or delete {run_dir}"
            )
        else:
            sig = exit_code - 128
            name_sig = signal.Signals(sig).name if sig in signal.valid_signals() else f"exit code {exit_code}"
            what = f"training {name} was stopped ({name_sig}); checkpoint kept: re-run the same command to resume"
        super().__init__(what, exit_code)


def same_settings(run_dir: Path, overrides: dict[str, Any]) -> None:
    """A run kept from an earlier experiment must have been trained with the settings asked for now: a
    ``teacher`` (or epochs, lr, backbone weights, ...) added to the same ``out`` would otherwise report the old runs."""
    saved_file = run_dir / "config.json"
    if not saved_file.is_file():
        return
    try:
        saved = json.loads(saved_file.read_text())
    except (ValueError, UnicodeDecodeError):
        return  # a damaged config is reported by the training run that reads it
    ignored = ("out", "threads", "device")  # where a run goes and what it runs on: not what it learns
    asked = json.loads(json.dumps({k: v for k, v in overrides.items() if v is not None and k not in ignored}))
    differ = [k for k, v in asked.items() if isinstance(saved, dict) and k in saved and saved[k] != v]
    if differ:
        k = differ[0]
        raise ParameterError(
            "out",
            f"{run_dir} was trained with `{k}` {saved[k]!r}, not {asked[k]!r}; compare into another `out` "
            "(its runs are kept as they are)",
        )


def job_settings(job: Job, overrides: dict[str, Any], recipe_cfg: dict[str, Any], run_dir: Path, groups: int):
    """The settings of one run: everyone's ``overrides``, then the job's model, width, seed and weights (an ``lr``
    given in ``overrides`` wins over a fine-tuning job's)."""
    own = job.settings(recipe_cfg, groups)
    if "lr" in overrides:
        own.pop("lr", None)
    return {**overrides, "out": str(run_dir), "seed": job.seed, **own}


def run_job(job: Job, overrides: dict[str, Any], recipe: str, out: Path, groups: int, log: Log) -> dict[str, Any]:
    """Train ``job`` into ``OUT/runs/<job.name>`` (or keep it, when ``done.json`` says it finished with these
    settings; resume it when it has a checkpoint) and return its result row."""
    run_dir = out / "runs" / job.name
    done = run_dir / "done.json"
    recipe_cfg = training.load_recipe(recipe)
    settings = job_settings(job, overrides, recipe_cfg, run_dir, groups)
    same_settings(run_dir, settings)
    if done.is_file():
        log(f"[compare] {job.name}: done before, kept")
        row = json.loads(done.read_text())
        if job.finish(run_dir, overrides, row, log):
            atomic_write_bytes(done, json.dumps(row, indent=1).encode())
        return row
    cfg = training.make_config(settings, training.make_config(recipe_cfg))
    resume = (run_dir / "config.json").is_file()
    log(f"[compare] {job.name}: {'resuming' if resume else 'training'} ({job.describe(cfg)})")
    t0 = time.perf_counter()
    result = training.train(cfg, resume=resume, recipe=recipe)
    if result.exit_code != 0:
        raise RunStopped(job.name, result.exit_code, run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    row = {
        **job.result_row(cfg, result, metrics),
        "epochs": cfg.epochs,
        "train_seconds": round(sum(m.get("time_s", 0.0) for m in metrics) or time.perf_counter() - t0, 1),
        "img_per_s": round(statistics.mean(m["img_s"] for m in metrics), 1) if metrics else None,
    }
    job.finish(run_dir, overrides, row, log)
    atomic_write_bytes(done, json.dumps(row, indent=1).encode())
    return row
