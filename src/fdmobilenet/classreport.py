"""Per-class precision, recall, F1 and the confusion matrix of top-1 predictions: where a custom
dataset is debugged (which classes fail, and what they are taken for).

``class_report`` computes (scikit-learn), ``render_table`` is the terminal view, ``write_report`` the
folder (CSVs and a row-normalised matrix image). ``write_predictions`` / ``read_predictions`` keep the
per-image top-1 of a run (``val_predictions.csv``), which needs neither scikit-learn nor matplotlib.
Class names come from folder names or weights metadata, so everything shown or written is escaped:
control characters are dropped and a CSV cell never starts a spreadsheet formula.
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ParameterError
from ._utils import TRAIN_HINT, MissingDependencyError, atomic_write_bytes, pyplot, require, save_figure

MAX_MATRIX_CLASSES = 100  # above this the matrix image is unreadable: only the confused pairs are written
TOP_PAIRS = 20  # rows of confused_pairs.csv
REPORT_FILES = ("per_class.csv", "confusion.csv", "confused_pairs.csv", "confusion.png")
PREDICTIONS_HEADER = ("index", "target", "pred")


@dataclass
class ConfusedPair:
    true: int
    pred: int
    count: int
    share: float  # of the true class's images


@dataclass
class ClassReport:
    class_names: list[str]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # images of each true class
    confusion: np.ndarray  # [true, predicted] counts
    top1: float  # percent
    macro_f1: float  # over the classes in the targets or the predictions (scikit-learn's default)
    pairs: list[ConfusedPair]  # off-diagonal cells, most images first

    @property
    def n(self) -> int:
        return int(self.support.sum())

    def as_dict(self, pairs: int = TOP_PAIRS) -> dict[str, Any]:
        """JSON-ready: ``per_class`` (in class order) and the ``pairs`` most ``confused_pairs``."""
        names = self.class_names
        return {
            "macro_f1": round(self.macro_f1, 6),
            "per_class": [
                {
                    "index": i,
                    "class": printable(names[i]),
                    "precision": round(float(self.precision[i]), 6),
                    "recall": round(float(self.recall[i]), 6),
                    "f1": round(float(self.f1[i]), 6),
                    "support": int(self.support[i]),
                }
                for i in range(len(names))
            ],  # fmt: skip
            "confused_pairs": [
                {
                    "true": printable(names[p.true]),
                    "pred": printable(names[p.pred]),
                    "true_index": p.true,
                    "pred_index": p.pred,
                    "count": p.count,
                    "share": round(p.share, 6),
                }
                for p in self.pairs[:pairs]
            ],  # fmt: skip
        }


def printable(name: object) -> str:
    """``name`` without control or format characters (newlines, escapes, bidi overrides) for a terminal."""
    text = str(name)
    return "".join(" " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C")


def csv_cell(name: object) -> str:
    """``printable`` and never a spreadsheet formula: a leading = + - @ gets a quote mark."""
    text = printable(name)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def class_report(
    targets: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> ClassReport:
    """Per-class precision/recall/F1/support (zero where undefined), the confusion matrix, top-1, macro F1
    and the confused pairs of the top-1 ``preds`` against ``targets`` (class indices into ``class_names``)."""
    metrics = require("sklearn.metrics", "the per-class report", TRAIN_HINT)
    y, p = np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    k = len(class_names)
    if y.shape != p.shape or y.ndim != 1:
        raise ParameterError("preds", f"`targets` and `preds` must be two equally long lists, not {y.shape}/{p.shape}")
    if len(y) == 0:
        raise ParameterError("targets", "no predictions to report on (`targets` is empty)")
    if min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= k:
        raise ParameterError("class_names", f"class indices must lie in 0..{k - 1} (`class_names` holds {k})")
    labels = list(range(k))
    prec, rec, f1, sup = metrics.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    cm = metrics.confusion_matrix(y, p, labels=labels)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0  # macro F1 over these, as scikit-learn does by default
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t_idx, p_idx = np.nonzero(off)
    counts = off[t_idx, p_idx]
    order = np.lexsort((p_idx, t_idx, -counts))  # most images first, then by class index: stable output
    pairs = [
        ConfusedPair(int(t_idx[j]), int(p_idx[j]), int(counts[j]), float(counts[j] / cm[t_idx[j]].sum())) for j in order
    ]
    return ClassReport(
        list(class_names), prec, rec, f1, sup.astype(np.int64), cm, 100.0 * int((y == p).sum()) / len(y),
        float(np.mean(f1[present])), pairs,
    )  # fmt: skip


def render_table(report: ClassReport, show_all: int = 30, worst: int = 15, pairs: int = 5) -> str:
    """Per-class P/R/F1/support, worst F1 first (every class up to ``show_all``, else the ``worst``), then
    the ``pairs`` most confused pairs: the lines a terminal or a training log shows."""
    names = [printable(n) for n in report.class_names]
    k = len(names)
    seen = [i for i in range(k) if report.support[i] or report.confusion[:, i].any()]
    order = sorted(seen, key=lambda i: (report.f1[i], -report.support[i], i))
    shown = order if len(order) <= show_all else order[:worst]
    width = min(max([len(names[i]) for i in shown] + [5]), 40)
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for i in shown:
        name = names[i] if len(names[i]) <= width else names[i][: width - 1] + "~"
        lines.append(
            f"{name:<{width}}  {report.precision[i]:9.3f}  {report.recall[i]:6.3f}  {report.f1[i]:5.3f}  "
            f"{int(report.support[i]):7d}"
        )
    if len(shown) < len(order):
        lines.append(f"({len(order) - len(shown)} more classes with a higher F1: the report's per_class.csv lists all)")
    if len(seen) < k:
        lines.append(f"({k - len(seen)} of the {k} classes are neither in the data nor predicted: left out)")
    lines.append(f"top-1 {report.top1:.2f}%  macro F1 {report.macro_f1:.3f}  ({report.n} images, {k} classes)")
    if report.pairs:
        lines.append("most confused (true -> predicted: images, share of the true class):")
        for pr in report.pairs[:pairs]:
            lines.append(f"  {names[pr.true]} -> {names[pr.pred]}: {pr.count} ({100 * pr.share:.1f}%)")
    else:
        lines.append("no confusions: every image was predicted as its own class")
    return "\n".join(lines)


def check_report_dir(folder: str | os.PathLike, param: str = "report") -> Path:
    """``folder`` if a report may be written there: not a file, and holding nothing but a report's own
    files (so nothing the package did not write is ever replaced)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ParameterError(param, f"`{param}` {printable(path)} is a file; give a folder for the report")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in REPORT_FILES and not _is_our_temp(p.name))
        if foreign:
            raise ParameterError(
                param,
                f"`{param}` {printable(path)} already holds other files ({', '.join(map(printable, foreign[:3]))}"
                f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder",
            )
    return path


def _is_our_temp(name: str) -> bool:
    return name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in REPORT_FILES)


def write_report(report: ClassReport, folder: str | os.PathLike) -> list[Path]:
    """Write ``per_class.csv``, ``confusion.csv`` (rows true, columns predicted), ``confused_pairs.csv``
    (the most confused pairs) and ``confusion.png`` (up to ``MAX_MATRIX_CLASSES`` classes) into ``folder``,
    each atomically; returns the files written. matplotlib is checked before anything is written."""
    folder = Path(folder)
    draw = len(report.class_names) <= MAX_MATRIX_CLASSES
    plt = pyplot() if draw else None
    if draw and plt is None:
        raise MissingDependencyError(f"the confusion matrix image needs matplotlib: {TRAIN_HINT}")
    names = [csv_cell(n) for n in report.class_names]
    rows = [
        [i, names[i], f"{report.precision[i]:.6f}", f"{report.recall[i]:.6f}", f"{report.f1[i]:.6f}",
         int(report.support[i])]
        for i in range(len(names))
    ]  # fmt: skip
    files = {
        "per_class.csv": _csv(["index", "class", "precision", "recall", "f1", "support"], rows),
        "confusion.csv": _csv(
            ["true \\ predicted", *names], [[names[i], *map(int, r)] for i, r in enumerate(report.confusion)]
        ),
        "confused_pairs.csv": _csv(
            ["true_index", "true", "pred_index", "pred", "count", "share"],
            [
                [p.true, names[p.true], p.pred, names[p.pred], p.count, f"{p.share:.6f}"]
                for p in report.pairs[:TOP_PAIRS]
            ],
        ),
    }
    written = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        written.append(folder / name)
    png = folder / "confusion.png"
    if draw:
        save_figure(_matrix_figure(plt, report), png)
        written.append(png)
    else:
        png.unlink(missing_ok=True)  # an earlier report's image would not match this one
    return written


def written_note(report: ClassReport, folder: str | os.PathLike) -> str:
    """One line for the log: where the report is, and why there is no image when there is none."""
    k = len(report.class_names)
    note = f"per-class report in {printable(folder)}"
    if k > MAX_MATRIX_CLASSES:
        note += (
            f" (no confusion.png: {k} classes is over the {MAX_MATRIX_CLASSES} a matrix image stays readable at; "
            f"the {TOP_PAIRS} most confused pairs are in confused_pairs.csv)"
        )
    return note


def _csv(header: list[Any], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _matrix_figure(plt: Any, report: ClassReport) -> Any:
    """The row-normalised confusion matrix; tick labels shrink as classes are added."""
    k = len(report.class_names)
    cm = report.confusion.astype(np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.22 * k, 26)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    font = max(4.0, min(10.0, 0.45 * 0.8 * side * 72 / k))  # about half a cell's height, in points
    names = [printable(n)[:30] for n in report.class_names]
    ax.set_xticks(range(k), names, rotation=90, fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"top-1 {report.top1:.2f}%, macro F1 {report.macro_f1:.3f} ({report.n} images)")
    if k <= 20:
        for t in range(k):
            for p in range(k):
                if cm[t, p]:
                    ax.text(p, t, int(cm[t, p]), ha="center", va="center", fontsize=font * 0.8,
                            color="white" if norm[t, p] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    return fig


def write_predictions(
    path: str | os.PathLike, index: Sequence[int] | np.ndarray, targets: Sequence[int] | np.ndarray,
    preds: Sequence[int] | np.ndarray,
) -> None:  # fmt: skip
    """``index,target,pred`` per image (position in the evaluated set, class indices), atomically: what a
    paired comparison of two runs on the same validation images reads back with ``read_predictions``."""
    rows = zip(*(np.asarray(a, dtype=np.int64).tolist() for a in (index, targets, preds)))
    atomic_write_bytes(path, _csv(list(PREDICTIONS_HEADER), [list(r) for r in rows]))


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, target, pred) int64 arrays of a ``write_predictions`` file."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != PREDICTIONS_HEADER:
            raise ValueError(f"{printable(path)}: not a predictions file (its header is not index,target,pred)")
        data = np.array([[int(c) for c in row] for row in reader if row], dtype=np.int64).reshape(-1, 3)
    return data[:, 0], data[:, 1], data[:, 2]
