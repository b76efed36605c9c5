"""``eval`` and ``predict``: a weights file (PyTorch) or an exported ONNX file on your images."""

from __future__ import annotations

import argparse
import json
import sys

from ..data.folders import scan_folder
from ..deploy.runtime import OnnxClassifier
from ..evaluate import evaluate, predict
from ..models import build_from_weights
from ..preprocess import Preprocess
from ._args import positive_int, thread_count


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="a .safetensors file from `convert` or `train`")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument(
        "--resolution", type=positive_int, help="input size (default: the weights'); crop ratio 0.875 is kept"
    )
    p.add_argument("--onnx", help="run an exported .onnx file (fp32 or int8) instead of --weights")
    p.add_argument("--backend", choices=("ort", "openvino"), default="ort", help="runtime for --onnx")
    p.add_argument("--threads", type=thread_count, help="runtime threads for --onnx (default: the runtime's choice)")


def _load(a: argparse.Namespace):
    if a.onnx:
        if a.weights or a.model or a.resolution:
            raise ValueError("--onnx runs the exported file as it is: drop --weights, --model and --resolution")
        model = OnnxClassifier(a.onnx, a.backend, a.threads)
        return model, model.meta, model.transform()
    if not a.weights:
        raise ValueError("give --weights FILE.safetensors (PyTorch) or --onnx FILE.onnx (exported model)")
    model, meta = build_from_weights(a.weights, a.model, a.resolution)
    return model, meta, Preprocess.from_meta(meta, a.resolution).transform()


def eval_arguments(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument(
        "--data", required=True, help="DIR/<class>/<images>; ImageNet synset folders use the 1000-class order"
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print {top1, top5, n, ...} as JSON (percent)")


def eval_run(a: argparse.Namespace) -> int:
    model, meta, tf = _load(a)
    folder = scan_folder(a.data, meta.get("class_names"))
    r = evaluate(model, folder, tf, a.batch_size, a.workers, progress=not a.json)
    for path, reason in r.bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if a.json:
        source = {"onnx": str(a.onnx), "backend": a.backend} if a.onnx else {"weights": str(a.weights)}
        print(json.dumps({**r.as_dict(), "model": meta["model"], **source}))
    else:
        print(f"{meta['model']} on {a.data}: top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}%  ({r.n} images)")
    return 0


def predict_arguments(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--json", action="store_true")


def predict_run(a: argparse.Namespace) -> int:
    model, meta, tf = _load(a)
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    preds = predict(model, a.images, tf, names, a.topk)
    if a.json:
        print(json.dumps([{"path": p.path, "top": p.top, "error": p.error} for p in preds], indent=1))
    else:
        for p in preds:
            if p.error:
                print(f"{p.path}: ERROR {p.error}", file=sys.stderr)
                continue
            print(p.path)
            for name, prob in p.top:
                print(f"  {prob * 100:6.2f}%  {name}")
    return 1 if any(p.error for p in preds) else 0
