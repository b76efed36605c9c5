"""INT8 calibration study: which calibration method and which float layers keep top-1 closest to fp32.

Uses the authors' 0.25x and 0.5x weights and the shared photos. Calibration photos are never
the ones scored: ImageNet half A (25 photos, even-numbered class folders) calibrates and half B
(the other 25) is scored; flower photos (another domain, no ImageNet labels) calibrate for the
all-50 score. Because 25 or 50 photos resolve top-1 only in steps of 4 or 2 points, every
configuration is also scored by top-1 *agreement* with fp32 on 500 flower photos that are not
in any calibration set.

    PYTHONPATH=src python benchmarks/calibration.py [--shared ../shared] [--out benchmarks/calibration.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from fdmobilenet.data.folders import scan_folder
from fdmobilenet.deploy import OnnxClassifier, export_onnx, image_paths, load_batch, quantize_onnx
from fdmobilenet.models import build_from_weights
from fdmobilenet.models import convert_authors_checkpoint as convert


def top1_top5(model, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    logits = model.run(x)
    top = np.argsort(-logits, axis=1)[:, :5]
    return 100.0 * float((top[:, 0] == labels).mean()), 100.0 * float((top == labels[:, None]).any(1).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("FDM_SHARED", "../shared"))
    ap.add_argument("--out", default="benchmarks/calibration.md")
    ap.add_argument("--models", default="0.25x,0.5x")
    ap.add_argument("--methods", default="minmax,entropy,percentile:99.999,percentile:99.99")
    ap.add_argument("--flowers-calibration", type=int, default=200)
    ap.add_argument("--flowers-agreement", type=int, default=500)
    a = ap.parse_args()
    shared = Path(a.shared)
    imagenet = shared / "datasets/imagenet-sample-50"
    flowers = shared / "datasets/flowers-256/train"
    tmp = Path(tempfile.mkdtemp(prefix="fdm-calib-"))

    # ImageNet halves as symlinked class folders, so the CLI's folder logic applies unchanged.
    synsets = sorted(p.name for p in imagenet.iterdir() if p.is_dir())
    for half, keep in (("A", 0), ("B", 1)):
        for i, s in enumerate(synsets):
            if i % 2 == keep:
                (tmp / half / s).parent.mkdir(parents=True, exist_ok=True)
                (tmp / half / s).symlink_to((imagenet / s).resolve())
    flower_files = image_paths(flowers)
    random.Random(0).shuffle(flower_files)
    flowers_cal = flower_files[: a.flowers_calibration]
    flowers_agree = flower_files[a.flowers_calibration : a.flowers_calibration + a.flowers_agreement]

    rows = []
    for tag in a.models.split(","):
        st = tmp / f"{tag}.safetensors"
        convert(shared / f"weights/official/{tag}-FDMobileNet-224.pth.tar", st)
        model, meta = build_from_weights(st)
        fp32 = tmp / f"{tag}.onnx"
        full_meta = export_onnx(model, fp32, meta)
        sets = {}
        for name, root in (("B", tmp / "B"), ("all", imagenet)):
            folder = scan_folder(root)
            sets[name] = (
                load_batch([p for p, _ in folder.samples], full_meta).numpy(),
                np.array([lab for _, lab in folder.samples]),
            )
        agree_x = load_batch(flowers_agree, full_meta).numpy()
        ref = OnnxClassifier(fp32)
        ref_top = ref.run(agree_x).argmax(1)
        base = {"model": meta["model"]}
        rows.append(
            {
                **base,
                "precision": "fp32",
                "calibration": "-",
                "method": "-",
                "keep_float": "-",
                "B_top1": top1_top5(ref, *sets["B"])[0],
                "all_top1": top1_top5(ref, *sets["all"])[0],
                "all_top5": top1_top5(ref, *sets["all"])[1],
                "agree": 100.0,
            }
        )
        print(rows[-1], file=sys.stderr)
        for cal_name, cal in (("imagenet half A (25)", tmp / "A"), (f"flowers ({len(flowers_cal)})", flowers_cal)):
            for spec in a.methods.split(","):
                method, _, pct = spec.partition(":")
                for keep in ((), ("classifier",), ("stem", "classifier")):
                    out = tmp / f"{tag}-{method}{pct}-{len(keep)}-{cal_name[:3]}.onnx"
                    quantize_onnx(fp32, out, cal, 10_000, method, keep, percentile=float(pct or 99.99))
                    for backend in ("ort", "openvino"):
                        q = OnnxClassifier(out, backend)
                        r = {
                            **base,
                            "precision": f"int8 ({backend})",
                            "calibration": cal_name,
                            "method": spec,
                            "keep_float": ",".join(keep) or "none",
                            "B_top1": top1_top5(q, *sets["B"])[0],
                            "all_top1": top1_top5(q, *sets["all"])[0],
                            "all_top5": top1_top5(q, *sets["all"])[1],
                            "agree": 100.0 * float((q.run(agree_x).argmax(1) == ref_top).mean()),
                        }
                        rows.append(r)
                        print(r, file=sys.stderr)
    write_report(a, rows)
    return 0


def write_report(a: argparse.Namespace, rows: list[dict]) -> None:
    import onnxruntime

    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = "not installed"
    lines = [
        "# INT8 calibration study (generated by `benchmarks/calibration.py`)",
        "",
        f"- date: {datetime.date.today()}; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"openvino {ov_version}",
        "- `B top-1`: the 25 ImageNet photos of half B (never calibrated on); 1 photo = 4 points.",
        "- `all top-1/top-5`: all 50 ImageNet photos; calibration on half A overlaps these (half A is scored too), "
        "so read the flowers-calibrated rows for an unbiased all-50 figure; 1 photo = 2 points.",
        f"- `agree`: top-1 agreement with the fp32 model on {a.flowers_agreement} flower photos not used for "
        "calibration (the finer-grained fidelity measure).",
        "- weights: per-channel symmetric int8; activations: per-tensor asymmetric uint8; QDQ format.",
        "",
        "| model | precision | calibration | method | kept float | B top-1 | all top-1 | all top-5 | agree % |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['calibration']} | {r['method']} | {r['keep_float']} | "
            f"{r['B_top1']:.0f} | {r['all_top1']:.0f} | {r['all_top5']:.0f} | {r['agree']:.1f} |"
        )
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
