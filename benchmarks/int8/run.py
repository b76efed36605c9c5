"""INT8 that keeps accuracy: every quantization route for the authors' 0.5x and 0.25x, scored and timed side by side.

Photos (``photos.py``): Imagenette, 4,000 to calibrate / fine-tune on ("tune"), the other 5,469 scored
("score"), 1000-way ImageNet top-1. Routes, each scored on the same tensors:
  fp32           the fp32 ONNX export (ONNX Runtime) - the reference
  ort-ptq        `export --int8` (ONNX Runtime's static quantizer, percentile, 400 tune photos)
  nncf-ptq       NNCF's post-training quantizer on the fp32 ONNX (fast bias correction, 400 tune photos)
  pt2e-ptq       PyTorch PT2E + XNNPACK quantizer, calibrated on 400 tune photos
  qat            `quantize --epochs 1`: PT2E quantization-aware distillation on the 4,000 tune photos
                 -> QDQ ONNX (ORT, OpenVINO) and ExecuTorch .pte (XNNPACK)
  qat-ort        the QAT-tuned float weights through ONNX Runtime's quantizer (uint8 activations)
Latency: 1 thread, batch 1, all files interleaved in rounds in one process.

    PYTHONPATH=src:benchmarks/int8 python benchmarks/int8/run.py [--widths 0.5,0.25] [--score N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import photos
import torch

from fdmobilenet._utils import machine_info
from fdmobilenet.deploy.executorch import PteClassifier, export_pte, export_quantized_pte
from fdmobilenet.deploy.metadata import set_onnx_metadata
from fdmobilenet.deploy.onnx import export_onnx, export_quantized_onnx, quantize_onnx
from fdmobilenet.deploy.quantize import QatConfig, calibrate, convert, qat_distill, tuned_float
from fdmobilenet.deploy.runtime import OnnxClassifier
from fdmobilenet.models import build_from_weights
from fdmobilenet.models import convert_authors_checkpoint as convert_weights

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CALIB = 400


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def predictions(model, x: torch.Tensor, bs: int = 100) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(photos.normalized(x[i : i + bs])).argmax(1) for i in range(0, len(x), bs)])


def augmented_batches(x: torch.Tensor, bs: int = 32):
    from torchvision.transforms import v2

    aug = v2.Compose([v2.RandomResizedCrop(224, scale=(0.35, 1), antialias=True), v2.RandomHorizontalFlip()])

    def batches(epoch: int):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x) - bs + 1, bs):
            yield photos.normalized(torch.stack([aug(x[j]) for j in order[i : i + bs]]))

    return batches, len(x) // bs


def nncf_ptq(fp32: Path, out: Path, calib: torch.Tensor, meta: dict) -> None:
    import nncf
    import onnx

    data = nncf.Dataset(
        [photos.normalized(calib[i : i + 1]).numpy() for i in range(len(calib))], lambda a: {"input": a}
    )
    q = nncf.quantize(onnx.load(str(fp32)), data, subset_size=len(calib), fast_bias_correction=True)
    set_onnx_metadata(q, {**meta, "precision": "int8"})
    onnx.save(q, str(out))


def build(width: str, xt: torch.Tensor, tune_paths: list[str], qat_epochs: float) -> tuple[dict, dict]:
    """All the files for one width: {route: path}, and QAT wall time."""
    d = WORK / width
    d.mkdir(parents=True, exist_ok=True)
    weights = d / "official.safetensors"
    if not weights.exists():
        convert_weights(photos.SHARED / f"weights/official/{width}x-FDMobileNet-224.pth.tar", weights)
    model, meta = build_from_weights(weights)
    files = {"fp32": d / "fp32.onnx", "ort-ptq": d / "ort-ptq.onnx", "nncf-ptq": d / "nncf-ptq.onnx",
             "pt2e-ptq": d / "pt2e-ptq.onnx", "qat": d / "qat.onnx", "et-fp32": d / "fp32.pte",
             "et-qat": d / "qat.pte", "qat-float": d / "qat-float.onnx", "qat-ort": d / "qat-ort.onnx"}  # fmt: skip
    full = export_onnx(model, files["fp32"], meta, 224)
    calib_idx = torch.randperm(len(xt), generator=torch.Generator().manual_seed(1))[:CALIB]
    log(f"{width}: ort-ptq")
    quantize_onnx(files["fp32"], files["ort-ptq"], [Path(tune_paths[i]) for i in calib_idx], CALIB)
    log(f"{width}: nncf-ptq")
    nncf_ptq(files["fp32"], files["nncf-ptq"], xt[calib_idx], full)
    log(f"{width}: pt2e-ptq")
    q = calibrate(model, (photos.normalized(xt[calib_idx[i : i + 32]]) for i in range(0, CALIB, 32)), 224)
    export_quantized_onnx(q, files["pt2e-ptq"], full)
    log(f"{width}: qat ({qat_epochs} epochs on {len(xt)} photos)")
    batches, steps = augmented_batches(xt)
    t0 = time.monotonic()
    student = qat_distill(model, batches, steps, 224, QatConfig(epochs=qat_epochs), log=log)
    qat_s = time.monotonic() - t0
    q = convert(student)
    export_quantized_onnx(q, files["qat"], {**full, "qat": {"epochs": qat_epochs, "photos": len(xt)}})
    export_quantized_pte(q, files["et-qat"], {**full, "precision": "int8"}, 224)
    export_pte(model, files["et-fp32"], full, 224)
    log(f"{width}: qat-ort (the fine-tuned float weights through ONNX Runtime's quantizer)")
    export_onnx(tuned_float(student, model), files["qat-float"], meta, 224)
    quantize_onnx(files["qat-float"], files["qat-ort"], [Path(tune_paths[i]) for i in calib_idx], CALIB)
    return files, {"qat_seconds": round(qat_s), "qat_steps": round(qat_epochs * steps)}


def runners(files: dict) -> dict:
    """(name -> classifier) for every runtime and file, 2 threads for scoring."""
    out = {}
    for route in ("fp32", "ort-ptq", "nncf-ptq", "pt2e-ptq", "qat", "qat-ort"):
        out[f"ort/{route}"] = OnnxClassifier(files[route], "ort", threads=2)
    for route in ("fp32", "ort-ptq", "nncf-ptq", "qat", "qat-ort"):
        out[f"openvino/{route}"] = OnnxClassifier(files[route], "openvino", threads=2)
    # ExecuTorch's thread pool is per process and cannot be resized once used: 1 thread throughout.
    out["executorch/fp32"] = PteClassifier(files["et-fp32"], threads=1)
    out["executorch/qat"] = PteClassifier(files["et-qat"], threads=1)
    return out


def latency(models: dict, runs: int = 200, rounds: int = 20) -> dict:
    """Median ms per image, 1 thread, batch 1, every runner interleaved in rounds."""
    calls = {}
    for name, m in models.items():
        if name.startswith("executorch"):
            calls[name] = m.runner(1)
        else:
            calls[name] = OnnxClassifier(m.path, m.backend, threads=1).runner(1)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for c in calls.values():
        for _ in range(20):
            c()
    for _ in range(rounds):
        for k, c in calls.items():
            for _ in range(runs // rounds):
                t = time.perf_counter()
                c()
                times[k].append((time.perf_counter() - t) * 1000)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="0.5,0.25")
    ap.add_argument("--score", type=int, default=None, help="score only the first N photos (default: all)")
    ap.add_argument("--qat-epochs", type=float, default=1.0)
    ap.add_argument("--report-only", action="store_true", help="rewrite results.md from results.json")
    a = ap.parse_args()
    if a.report_only:
        write_markdown(json.loads((HERE / "results.json").read_text()))
        return
    torch.set_num_threads(2)
    xt, _, tune_paths = photos.cached("tune", WORK / "photos")
    xs, ys, _ = photos.cached("score", WORK / "photos")
    xs, ys = xs[: a.score], ys[: a.score]
    rows = []
    for width in a.widths.split(","):
        files, extra = build(width, xt, tune_paths, a.qat_epochs)
        models = runners(files)
        preds = {}
        for name, m in models.items():
            log(f"{width}: scoring {name} on {len(xs)} photos")
            preds[name] = predictions(m, xs)
        ref = preds["ort/fp32"]
        ms = latency(models)
        for name, p in preds.items():
            rows.append({"width": width, "runtime": name.split("/")[0], "route": name.split("/")[1],
                         "top1": round((p == ys).float().mean().item() * 100, 2),
                         "agree_fp32": round((p == ref).float().mean().item() * 100, 2),
                         "latency_ms": ms[name], **extra})  # fmt: skip
            log(json.dumps(rows[-1]))
    info = machine_info()
    out = {"machine": info, "scored": len(xs), "calibration_photos": CALIB, "tune_photos": len(xt), "rows": rows}
    (HERE / "results.json").write_text(json.dumps(out, indent=1))
    write_markdown(out)
    log(f"wrote {HERE / 'results.json'} and results.md")


ROUTES = {
    "fp32": "fp32 (reference)",
    "ort-ptq": "`export --int8`: ONNX Runtime static PTQ (percentile, uint8 act.)",
    "nncf-ptq": "NNCF PTQ (fast bias correction)",
    "pt2e-ptq": "PT2E + XNNPACK quantizer, PTQ (`quantize --epochs 0`)",
    "qat": "**`quantize`**: PT2E QAT distillation, 1 epoch",
    "qat-ort": "QAT weights -> ONNX Runtime static PTQ",
}


def write_markdown(out: dict) -> None:
    """results.md: accuracy and latency per width, route and runtime, with the deltas the issue asks for."""
    m = out["machine"]
    lines = [
        "# INT8 that keeps accuracy (generated by `benchmarks/int8/run.py`)",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_flags'])}); date {m['date']}",
        f"- versions: torch {m['torch']}, onnxruntime {m['onnxruntime']}, openvino {m['openvino']}, "
        f"executorch {m['executorch']}, nncf {m['nncf']}",
        f"- photos: Imagenette (ImageNet training photos of 10 classes), seeded split: {out['tune_photos']} to "
        f"calibrate / fine-tune on, **{out['scored']} scored** (never calibrated or tuned on); 1000-way top-1; "
        f"post-training routes calibrate on {out['calibration_photos']} of the tune photos",
        "- `Δ top-1` = INT8 minus fp32 on the same runtime's scored photos (target: >= -1.0); `agree` = same "
        "top-1 class as fp32; latency: 1 thread, batch 1, median of 200 calls, all files interleaved in one "
        "process; `vs ORT fp32` = ORT fp32 median / this median (> 1: faster)",
        "- fp32 top-1 is in-sample for the authors' weights (these are ImageNet training photos): read the "
        "deltas, not the absolute numbers",
        "",
    ]
    for width in dict.fromkeys(r["width"] for r in out["rows"]):
        rows = [r for r in out["rows"] if r["width"] == width]
        fp32 = {r["runtime"]: r["top1"] for r in rows if r["route"] == "fp32"}
        ort_ms = next(r["latency_ms"] for r in rows if r["runtime"] == "ort" and r["route"] == "fp32")
        lines += [f"## FD-MobileNet {width}x (QAT: {rows[0]['qat_steps']} steps, {rows[0]['qat_seconds']} s)", "",
                  "| route | runtime | top-1 | Δ top-1 | agree % | ms | vs ORT fp32 |",
                  "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in rows:
            delta, ms = r["top1"] - fp32[r["runtime"]], r["latency_ms"]
            lines.append(f"| {ROUTES[r['route']]} | {r['runtime']} | {r['top1']:.2f} | {delta:+.2f} | "
                         f"{r['agree_fp32']:.1f} | {ms:.3f} | {ort_ms / ms:.2f}x |")  # fmt: skip
        lines.append("")
    (HERE / "results.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
