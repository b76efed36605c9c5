"""``eval`` and ``predict``: a weights file (PyTorch) or an exported ONNX file on your images."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from .._outputs import check_output
from .._utils import TRAIN_HINT, MissingDependencyError, atomic_write_bytes
from ..classreport import (
    ClassReport,
    check_report_dir,
    class_report,
    csv_cell,
    printable,
    render_table,
    write_report,
    written_note,
)
from ..data.images import find_images
from ..deploy.pipeline import open_exported
from ..deploy.runtime import BACKENDS, MEMORY_ENV, size_text
from ..evaluate import EvalResult, evaluate, open_eval_data, predict, resolve_device
from ..models import build_from_weights
from ..models.pretrained import is_detector_meta as is_detector
from ..preprocess import Preprocess
from ._args import positive_int, thread_count
from .detect import eval_detector, predict_detector


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="a .safetensors file from `convert` or `train`")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument(
        "--resolution", type=positive_int, help="input size (default: the weights'); crop ratio 0.875 is kept"
    )
    p.add_argument(
        "--exported",
        "--onnx",
        dest="onnx",
        metavar="FILE",
        help="run an exported file instead of --weights: .onnx (fp32 or int8), .pte (ExecuTorch) or .tflite (LiteRT)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="ort", help="runtime for an .onnx file")
    p.add_argument(
        "--threads", type=thread_count, help="runtime threads for --exported (default: the runtime's choice)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available); PyTorch only")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (0: decode in this process)")


def _load(a: argparse.Namespace):
    if a.onnx:
        if a.weights or a.model or a.resolution:
            raise ValueError("--exported runs the file as it is: drop --weights, --model and --resolution")
        model = open_exported(a.onnx, a.backend, a.threads)
        if getattr(model, "foreign", False):
            print(
                f"note: {printable(a.onnx)} was not written by `fdmobilenet export`: its graph runs at your own risk, "
                f"with ONNX Runtime capped at {size_text(model.memory_cap)} (${MEMORY_ENV} changes it)",
                file=sys.stderr,
            )
        return model, model.meta, model.transform(), "cpu"
    if not a.weights:
        raise ValueError("give --weights FILE.safetensors (PyTorch) or --exported FILE (.onnx, .pte or .tflite)")
    model, meta = build_from_weights(a.weights, a.model, a.resolution)
    return model, meta, Preprocess.from_meta(meta, a.resolution).transform(), resolve_device(a.device)


def eval_arguments(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument(
        "--data",
        help="DIR/<class>/<images> or the output of `prepare`; ImageNet synset folders use the 1000-class order",
    )
    p.add_argument(
        "--split",
        metavar="RUN",
        help="a training run's folder (or its split.json): score only the validation images it held out of "
        "--data (default: the run's --data)",
    )
    p.add_argument(
        "--json", action="store_true", help="print {top1, top5, n, per_class, confused_pairs, ...} as JSON (percent)"
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write the per-class report there: per_class.csv, confusion.csv, confused_pairs.csv, confusion.png "
        "(a new folder, or one holding only such a report)",
    )


def eval_run(a: argparse.Namespace) -> int:
    if a.report:
        check_report_dir(a.report)  # before the evaluation, which may take long
    model, meta, tf, device = _load(a)
    if is_detector(meta):
        return eval_detector(a, model, meta, device)
    names = meta.get("class_names")
    folder = open_eval_data(a.data, names, a.split)
    r = evaluate(model, folder, tf, a.batch_size, a.workers, device, progress=not a.json, keep_preds=True)
    for path, reason in r.bad:
        print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    report = _class_report(r, names or folder.classes, required=bool(a.report))
    if a.report and report is not None:
        write_report(report, a.report)
        print(written_note(report, a.report), file=sys.stderr)
    what = f"the validation split of {a.split}" if a.split else a.data
    if a.json:
        source = {"exported": str(a.onnx), "backend": a.backend} if a.onnx else {"weights": str(a.weights)}
        per_class = report.as_dict() if report is not None else {}
        print(json.dumps({**r.as_dict(), "model": meta["model"], "data": str(what), **source, **per_class}))
    else:
        print(f"{meta['model']} on {what}: top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}%  ({r.n} images)")
        if report is not None:
            print(render_table(report))
    return 0


def _class_report(r: EvalResult, names: list[str], required: bool) -> ClassReport | None:
    """The per-class report; without scikit-learn one line on stderr (an error when --report asked for it)."""
    if len(names) <= int(max(r.targets.max(), r.preds.max())):  # weights without class names: their indices
        names = [*names, *map(str, range(len(names), int(max(r.targets.max(), r.preds.max())) + 1))]
    try:
        return class_report(r.targets, r.preds, names)
    except MissingDependencyError:
        if required:
            raise
        print(f"(the per-class table needs scikit-learn: {TRAIN_HINT})", file=sys.stderr)
        return None


def predict_arguments(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (searched recursively)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image")
    p.add_argument("--min-score", type=float, default=0.3, help="detectors: boxes scoring at least this (0-1) are kept")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument(
        "-o",
        "--output",
        dest="out",
        help="write a CSV (path, then class, index and probability per rank; error) to this file; "
        "'-' writes it to stdout. Default for a folder: CSV on stdout. Detectors: a folder for the drawn "
        "photos, boxes.csv and boxes.json",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o file that fdmobilenet did not write; a CSV it wrote (recognised by its header "
        "row) is replaced without this; a link, folder or device never. A detector's -o folder has its own rule",
    )
    # its former name; `--out` names a run folder everywhere else (train, compare, fit). Kept for one release
    p.add_argument("--out", dest="out", help=argparse.SUPPRESS)


def _expand(items: list[str]) -> list[Path]:
    """Folders become the images under them (timm's inference script walks folders too)."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = find_images(item)
            if not found:
                raise ValueError(f"{item} holds no image files")
            paths += found
        elif not item.exists():  # a path given on the command line: bad input (exit 2), not a failed image
            raise FileNotFoundError(f"IMAGE {printable(item)} does not exist; check the path")
        else:
            paths.append(item)
    return paths


def _check_out_file(a: argparse.Namespace) -> None:
    """``-o FILE`` before the model loads: never an input photo, and the output policy (``_outputs``: a new
    file, one this command wrote, or ``--overwrite``). An existing folder is a detector's ``-o DIR``, checked
    by ``check_predict_out``."""
    out = a.out
    if not out or out == "-" or Path(out).is_dir():
        return
    if os.path.lexists(out) and any(Path(out).resolve() == p.resolve() for p in _expand(a.images)):
        raise ValueError(f"-o {printable(out)} is one of the input photos: give another file, it would be replaced")
    check_output(out, "output", a.overwrite)


def predict_run(a: argparse.Namespace) -> int:
    _check_out_file(a)
    model, meta, tf, device = _load(a)
    if is_detector(meta):
        return predict_detector(a, model, meta, _expand(a.images), device)
    out = a.out or ("-" if not a.json and any(Path(i).is_dir() for i in a.images) else None)
    if out and out != "-":  # a classifier's -o is a file: a folder (or a link to one) left for a detector is not
        check_output(out, "output", a.overwrite)
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    paths = _expand(a.images)
    preds = predict(model, paths, tf, names, a.topk, a.batch_size, a.workers, device)
    if out:
        errors = _write_csv(preds, a.topk, out)
    elif a.json:
        preds = list(preds)
        print(json.dumps([{"path": p.path, "top": p.top, "error": p.error} for p in preds], indent=1))
        errors = sum(1 for p in preds if p.error)
    else:
        errors = 0
        for p in preds:
            if p.error:
                errors += 1
                print(f"{printable(p.path)}: ERROR {printable(p.error)}", file=sys.stderr)
                continue
            print(printable(p.path))
            for name, prob in p.top:
                print(f"  {prob * 100:6.2f}%  {printable(name)}")
    return 1 if errors else 0


def _write_csv(preds, topk: int, out: str) -> int:
    """One row per image; a file is written whole (atomically) at the end, stdout row by row."""
    buf = sys.stdout if out == "-" else io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", *[f"{c}{r}" for r in range(1, topk + 1) for c in ("class", "index", "prob")], "error"])
    errors = 0
    for p in preds:
        ranks = [(csv_cell(n), i, f"{v:.6f}") for (n, v), i in zip(p.top, p.index)] if p.top else []
        cells = [x for r in ranks for x in r] + [""] * 3 * (topk - len(ranks))
        w.writerow([csv_cell(p.path), *cells, csv_cell(p.error or "")])  # a spreadsheet runs no cell of ours
        if p.error:
            errors += 1
            print(f"{printable(p.path)}: ERROR {printable(p.error)}", file=sys.stderr)
    if out != "-":
        atomic_write_bytes(out, buf.getvalue().encode())
        print(f"wrote {out}", file=sys.stderr)
    return errors
