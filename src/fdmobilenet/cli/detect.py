"""``eval`` and ``predict`` of a detector: the same commands as for classifiers, the task read from the
weights' metadata (their model name)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .._utils import atomic_write_bytes
from ..classreport import csv_cell, printable
from ..data.detection import open_detection_eval
from ..data.splits import read_split
from ..detect import detect, draw, evaluate_detector

MARKER = ".fdmobilenet-predict"  # a folder `predict -o` made: the only kind it writes into again


def _split_record(split: str | None) -> dict | None:
    if split is None:
        return None
    path = Path(split)
    path = path / "split.json" if path.is_dir() else path
    record = read_split(path)
    if record is None:
        raise ValueError(f"--split {split}: no split.json there; give the training run's folder or its split.json")
    return record


def eval_detector(a: argparse.Namespace, model: Any, meta: dict[str, Any], device: torch.device | str) -> int:
    """mAP of a detector on ``--data`` (its test list, else val, else the run's held-out photos with ``--split``)."""
    names = list(meta.get("class_names") or [])
    record = _split_record(a.split)
    ann = open_detection_eval(a.data, split_record=record, classes=names or None)
    for path, reason in ann.problems[:20]:
        print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    draw_dir = Path(a.report) / "drawn" if a.report else None
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    res = int(meta.get("resolution", 320))
    coco = _has_pycocotools()
    r = evaluate_detector(
        model, ann.records, names or ann.classes, res, a.batch_size, a.workers, device, coco=coco,
        draw_dir=draw_dir, draw_n=8 if draw_dir else 0, progress=not a.json,
    )  # fmt: skip
    for path, reason in r.bad:
        print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    s = r.scores
    if a.report:
        s.write_csv(Path(a.report) / "per_class_ap.csv")
        print(f"wrote {a.report}: per_class_ap.csv, {len(r.drawn)} drawn photos in drawn/", file=sys.stderr)
    if a.json:
        source = {"exported": str(a.onnx), "backend": a.backend} if a.onnx else {"weights": str(a.weights)}
        per_class = [c._asdict() for c in s.per_class]
        row = {k.removeprefix("val_"): v for k, v in s.as_row().items()}
        print(json.dumps({**row, "n": s.n_images, "model": meta["model"], "data": ann.description, **source,
                          "per_class": per_class}))  # fmt: skip
    else:
        coco_txt = f"  COCO mAP@[.5:.95] {s.coco_map:.2f}%" if s.coco_map is not None else ""
        print(
            f"{meta['model']} on {printable(ann.description)}: VOC mAP@0.5 {s.map50:.2f}% (all-point), "
            f"{s.map50_07:.2f}% (11-point){coco_txt}  ({s.n_images} images)"
        )
        print(s.table())
    return 0


def _has_pycocotools() -> bool:
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        print('(COCO mAP needs pycocotools: pip install "fdmobilenet[detection]")', file=sys.stderr)
        return False
    return True


def check_predict_out(out: str | None, inputs: list[Path]) -> Path | None:
    """``-o DIR`` for a detector: a new or empty folder, or one an earlier ``predict`` made; never an input."""
    if out is None or out == "-":
        return None
    folder = Path(out)
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"-o {out}: a detector writes drawn photos and boxes.csv into a folder; give a folder")
        if any(folder.iterdir()) and not (folder / MARKER).is_file():
            raise ValueError(f"-o {out} holds other files; give a new or empty folder (nothing there is replaced)")
    resolved = folder.resolve()
    for p in inputs:
        if resolved == p.resolve().parent or resolved == p.resolve():
            raise ValueError(f"-o {out} is where the input photos are; give another folder so they are never touched")
    return folder


def predict_detector(a: argparse.Namespace, model: Any, meta: dict[str, Any], paths: list[Path], device: Any) -> int:
    """Boxes of every photo: printed, or with ``-o DIR`` drawn photos plus boxes.csv and boxes.json there."""
    names = list(meta.get("class_names") or [])
    folder = check_predict_out(a.out, paths)
    res = int(meta.get("resolution", 320))
    rows: list[list[Any]] = []
    found: list[dict[str, Any]] = []
    errors = 0
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("written by fdmobilenet predict\n")
    for d in detect(model, paths, names, res, a.min_score, device):
        if d.error:
            errors += 1
            print(f"{printable(d.path)}: ERROR {printable(d.error)}", file=sys.stderr)
            continue
        boxes = [
            {"label": n, "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
            for b, s, n in zip(d.boxes, d.scores, d.names)
        ]
        found.append({"path": d.path, "width": d.size[0], "height": d.size[1], "boxes": boxes})
        rows += [[d.path, b["label"], b["score"], *b["box"]] for b in boxes]
        if folder is not None:
            dst = folder / f"{len(found):05d}_{Path(d.path).stem}.jpg"
            draw(d, names).save(dst, quality=90)
        elif not a.json:
            print(f"{printable(d.path)}: {len(boxes)} box(es)")
            for b in boxes:
                print(f"  {b['score'] * 100:6.2f}%  {printable(b['label'])}  {b['box']}")
    if a.json:
        print(json.dumps(found, indent=1))
    if folder is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        w.writerows([csv_cell(c) if isinstance(c, str) else c for c in r] for r in rows)
        atomic_write_bytes(folder / "boxes.csv", buf.getvalue().encode())
        atomic_write_bytes(folder / "boxes.json", json.dumps(found, indent=1).encode())
        print(f"wrote {folder}: {len(found)} drawn photo(s), boxes.csv, boxes.json", file=sys.stderr)
    return 1 if errors else 0
