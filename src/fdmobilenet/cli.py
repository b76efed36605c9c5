"""The ``fdmobilenet`` command: argument parsing only; each sub-command calls one module."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable

# name -> (help, add_arguments(parser), run(args) -> exit code); heavy imports happen in run.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

# Commands whose module owns its arguments: the module defines add_arguments(parser) and run(args).
_MODULE_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train or fine-tune a model on an image folder", "fdmobilenet.train"),
    "export": ("export to ONNX (fp32 / INT8 QDQ), TorchScript or pt2, checked against PyTorch", "fdmobilenet.export"),
    "bench": ("latency and throughput on this machine: PyTorch, ONNX Runtime, OpenVINO", "fdmobilenet.bench"),
    "prepare": ("re-encode an image folder into resized JPEG shards (resumable)", "fdmobilenet.packed"),
    "compare": ("train budget-matched families on your data; accuracy vs MFLOPs report", "fdmobilenet.compare"),
}


def register(name: str, help: str, add_args, run) -> None:
    _COMMANDS[name] = (help, add_args, run)


def _csv_floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 12,40,140, got {s!r}") from None


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# --- models -----------------------------------------------------------------------------------


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'fd_*'")
    p.add_argument("--json", action="store_true", help="print JSON rows")


def _models_run(a: argparse.Namespace) -> int:
    from .complexity import profile
    from .models import FAMILIES, create_model, list_models

    rows = []
    for name in list_models(a.pattern):
        if name in FAMILIES:
            rows.append({"model": name, "macs": None, "params": None})
            continue
        p = profile(create_model(name), 224)
        rows.append({"model": name, "macs": p.macs, "params": p.params})
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<24} {'MMACs@224':>10} {'params':>11}")
    for r in rows:
        if r["macs"] is None:
            print(f"{r['model']:<24} {'(width=)':>10} {'':>11}")
        else:
            print(f"{r['model']:<24} {r['macs'] / 1e6:>10.2f} {r['params']:>11,}")
    return 0


register("models", "list the registered models with MACs and parameters at 224 px", _models_args, _models_run)


# --- profile ----------------------------------------------------------------------------------


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="registered model names")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per model")
    p.add_argument("--layers", action="store_true", help="add a per-layer table")
    p.add_argument("--mflops", type=_csv_floats, help="budgets in M multiply-adds, e.g. 12,40,140: match each family")
    p.add_argument("--families", type=_csv, default=["fd_mobilenet", "mobilenet_v1", "shufflenet_v1"])
    p.add_argument("--groups", type=int, default=3, help="ShuffleNet group count for --mflops")


def _profile_run(a: argparse.Namespace) -> int:
    from .complexity import profile
    from .models import create_model

    todo: list[tuple[str, dict]] = [(n, {}) for n in a.names]
    if a.mflops:
        from .complexity import solve_width

        for budget in a.mflops:
            for fam in a.families:
                extra = {"groups": a.groups} if fam == "shufflenet_v1" else {}
                w = solve_width(fam, budget, resolution=a.resolution, **extra)
                todo.append((fam, {"width": w, **extra, "budget": budget}))
    if not todo:
        raise ValueError("name at least one model (see `fdmobilenet models`) or give --mflops")
    results = []
    for name, kw in todo:
        budget = kw.pop("budget", None)
        p = profile(create_model(name, resolution=a.resolution, **kw), a.resolution, name=name)
        d = p.as_dict(layers=a.layers)
        d.update(kw)
        if budget is not None:
            d["budget_mflops"] = budget
        results.append(d)
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'model':<24} {'width':>6} {'res':>4} {'MMACs':>9} {'params':>11} {'peak act':>10}")
    for d in results:
        width = f"{d['width']:.4g}" if "width" in d else ""
        print(
            f"{d['model']:<24} {width:>6} {d['resolution']:>4} {d['macs'] / 1e6:>9.2f} {d['params']:>11,} "
            f"{d['peak_activation_bytes'] / 2**20:>8.2f}MiB"
        )
        if a.layers:
            print(f"    {'layer':<34} {'type':<12} {'output':<18} {'MMACs':>8} {'params':>9}")
            for layer in d["layers"]:
                shape = "x".join(str(s) for s in layer["out_shape"][1:])
                print(
                    f"    {layer['name']:<34} {layer['kind']:<12} {shape:<18} "
                    f"{layer['macs'] / 1e6:>8.3f} {layer['params']:>9,}"
                )
    return 0


register("profile", "MACs, parameters and peak activation memory (optionally per layer)", _profile_args, _profile_run)


# --- convert ----------------------------------------------------------------------------------


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the authors' .pth.tar checkpoint (or any state_dict file)")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--model", help="registered model name (inferred from the weights if omitted)")


def _convert_run(a: argparse.Namespace) -> int:
    from .weights import convert

    meta = convert(a.src, a.dst, a.model)
    print(f"wrote {a.dst}: {meta['model']}, {meta['num_classes']} classes, source {meta['source']}")
    return 0


register("convert", "convert the authors' weights to safetensors with metadata", _convert_args, _convert_run)


# --- eval and predict -------------------------------------------------------------------------


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="a .safetensors file from `convert` or `train`")
    p.add_argument("--model", help="registered model name (default: the one stored with the weights)")
    p.add_argument("--resolution", type=int, help="input size (default: the weights'); crop ratio 0.875 is kept")
    p.add_argument("--onnx", help="run an exported .onnx file (fp32 or int8) instead of --weights")
    p.add_argument("--backend", choices=("ort", "openvino"), default="ort", help="runtime for --onnx")
    p.add_argument("--threads", type=int, help="runtime threads for --onnx (default: the runtime's choice)")


def _load(a: argparse.Namespace):
    from .data import eval_transform

    if a.onnx:
        if a.weights or a.model or a.resolution:
            raise ValueError("--onnx runs the exported file as it is: drop --weights, --model and --resolution")
        from .runtime import OnnxClassifier

        model = OnnxClassifier(a.onnx, a.backend, a.threads)
        return model, model.meta, model.transform()
    if not a.weights:
        raise ValueError("give --weights FILE.safetensors (PyTorch) or --onnx FILE.onnx (exported model)")
    from .weights import build_from_weights

    model, meta = build_from_weights(a.weights, a.model, a.resolution)
    res = a.resolution or meta.get("resolution", 224)
    tf = eval_transform(
        res,
        meta.get("crop_pct", 0.875),
        meta.get("mean", (0.485, 0.456, 0.406)),
        meta.get("std", (0.229, 0.224, 0.225)),
    )
    return model, meta, tf


def _eval_args(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument(
        "--data", required=True, help="DIR/<class>/<images>; ImageNet synset folders use the 1000-class order"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print {top1, top5, n, ...} as JSON (percent)")


def _eval_run(a: argparse.Namespace) -> int:
    from .data import scan_folder
    from .evaluate import evaluate

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


def _predict_args(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")


def _predict_run(a: argparse.Namespace) -> int:
    from .evaluate import predict

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


register("eval", "top-1/top-5 of weights on an image folder", _eval_args, _eval_run)
register("predict", "top-k classes of image files", _predict_args, _predict_run)


# --- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fdmobilenet", description="FD-MobileNet and its baselines: build, profile, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"fdmobilenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = dict(_COMMANDS)
    for name, (help_text, module) in _MODULE_COMMANDS.items():
        mod = importlib.import_module(module)
        commands[name] = (help_text, mod.add_arguments, mod.run)
    for name, (help_text, add_args, run) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"fdmobilenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
