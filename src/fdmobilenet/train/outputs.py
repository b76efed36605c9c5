"""What a run leaves for people besides checkpoints: ``metrics.jsonl`` (one row per epoch), the
``logger`` choice (``metrics.csv`` or TensorBoard scalars), ``curves.png`` and, from the best weights'
``val_predictions.csv``, the per-class ``report/``."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._errors import ParameterError
from .._utils import MissingDependencyError, atomic_write_bytes, pyplot, save_figure, write_if_changed
from ..classreport import class_report, read_predictions, render_table, write_report, written_note

# metrics.jsonl columns that are counters or bookkeeping, not curves: TensorBoard gets every other number
NOT_SCALARS = ("epoch", "step", "time_s", "images", "bad_skipped", "val_bad")


def append_metrics(out: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row to ``metrics.jsonl``, rewriting the (small) file atomically: a kill never tears it."""
    path = out / "metrics.jsonl"
    rows = path.read_bytes() if path.is_file() else b""
    atomic_write_bytes(path, rows + (json.dumps(row) + "\n").encode())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a torn or damaged line (a file from an older version, killed mid-append)
    is dropped with a warning naming the file: resume then rewrites it."""
    rows = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(ln) if ln.strip() else None
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
        elif ln.strip():
            print(f"warning: {path}: dropped a damaged line ({ln[:60]!r})", file=sys.stderr)
    return rows


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric rows of epochs a resumed run is about to redo (and damaged lines)."""
    if not path.is_file():
        return
    rows = [r for r in read_metrics(path) if r["epoch"] <= epochs_done]
    write_if_changed(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


class MetricLogger:
    """``logger``: after each epoch's ``metrics.jsonl`` row, ``metrics.csv`` (rewritten whole from the
    JSON rows, so a resumed run's redone epochs never appear twice) or TensorBoard scalars."""

    def __init__(self, kind: str, out: Path):
        self.kind, self.out, self.writer = kind, out, None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ParameterError(
                    "logger",
                    "`logger` tensorboard needs TensorBoard: pip install 'fdmobilenet[train]' (or `logger` csv)",
                ) from None
            self.writer = SummaryWriter(str(out / "tensorboard"))
        elif kind not in ("csv", "none"):
            raise ParameterError("logger", f"`logger` must be none, csv or tensorboard, got {kind!r}")

    def log(self, row: dict[str, Any], epoch: int) -> None:
        if self.writer is not None:
            for k, v in row.items():  # the task's scores (whatever they are named), loss, lr, img/s
                if k not in NOT_SCALARS and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, epoch)
        elif self.kind == "csv":
            write_csv(self.out / "metrics.jsonl", self.out / "metrics.csv")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_csv(jsonl: Path, dst: Path) -> None:
    """``metrics.jsonl`` as a CSV table (columns: every key, in first-seen order)."""
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(dst, buf.getvalue().encode())


def plot_curves(
    out: Path, curves: Sequence[tuple[str, str]] = (("val_top1", "top-1"),), axis: str = "accuracy"
) -> None:
    """``curves.png``: training loss and the validation scores per epoch: the task's ``curves`` ((metrics.jsonl key,
    legend) pairs, ``Task.curves``) on an axis named by ``axis``."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return
    plt = pyplot()
    if plt is None:
        print("(matplotlib is not installed: no curves.png; pip install 'fdmobilenet[train]')")
        return
    rows = read_metrics(path)
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], marker=".")
    a.set(xlabel="epoch", ylabel="train loss", title="loss")
    for key, label in curves:
        if key in rows[0]:  # top-5 is not logged for 5 classes or fewer
            b.plot(ep, [r[key] for r in rows], marker=".", label=label)
    b.set(xlabel="epoch", ylabel=f"val {axis} (%)", title="validation")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "curves.png", dpi=100)


def write_run_report(out: Path, classes: list[str], log: Callable[..., None]) -> None:
    """``report/`` (per-class metrics, confusions) of the best weights' ``val_predictions.csv``, and its
    table in the log; without scikit-learn or matplotlib one line says what to install, and the run is done."""
    path = out / "val_predictions.csv"
    if not path.is_file():  # a run resumed from a version that did not write it, and no better epoch since
        log(f"(no {path}: the per-class report of best.safetensors comes from eval on the run's split)")
        return
    _, targets, preds = read_predictions(path)
    try:
        report = class_report(targets, preds, classes)
        write_report(report, out / "report")
    except MissingDependencyError:
        log("(the per-class report needs scikit-learn and matplotlib: pip install 'fdmobilenet[train]')")
        return
    log(render_table(report))
    log(written_note(report, out / "report"))
