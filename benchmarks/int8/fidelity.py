"""INT8 that holds across the label space: every quantization route calibrated on photos of 10 classes,
measured against fp32 on photos of *other* classes (issue 22).

Photos (``fidelity_photos.py``): routes calibrate / fine-tune on Imagenette (1,000 photos of its 10 classes;
post-training routes use 400 of them, ``quantize``'s default ``--calibration-size``); they are measured,
without labels, on photos of other classes - imagenet-sample-50 (50 ImageNet classes, none of Imagenette's),
300 flower photos, 300 CIFAR-10 photos upsampled from 32 px - as top-1 agreement with fp32 and
KL(fp32 || int8); also on 100 held-out Imagenette photos (the calibration classes) and on altered copies of
those (``altered_photos``: what ``quantize`` measures when given no other photos). Top-1 on
imagenet-sample-50 is the labelled figure (1000-way; 1 photo = 2 points). Every route's INT8 graph runs in
PyTorch (PT2E's reference int8 arithmetic), 1 thread.

Routes (``ROUTES``): the old default (``qat``: 1 epoch of distillation, KL), a restrained QAT, plain PT2E
calibration, and calibration with range equalization and/or bias correction, float stem + classifier, and
generic (COCO) photos mixed into the calibration.

    PYTHONPATH=src:benchmarks/int8 nice -n 15 python benchmarks/int8/fidelity.py [--widths 0.25,0.5] [--routes ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import fidelity_photos as fp
import torch

from fdmobilenet._utils import machine_info
from fdmobilenet.deploy.fidelity import altered_photos, int8_fidelity
from fdmobilenet.deploy.quantize import PtqConfig, QatConfig, calibrate, convert, qat_distill
from fdmobilenet.preprocess import Preprocess

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CALIB = 400  # post-training routes: quantize's default --calibration-size

ROUTES = {
    "qat": "old default: `quantize --epochs 1` (QAT distillation, KL, lr 1e-4, 1,000 photos)",
    "qat-logits": "QAT, restrained: logit-matching loss, classifier frozen, observers set by calibration first",
    "ptq": "PT2E calibration only (old `quantize --epochs 0`)",
    "ptq-bc": "+ bias correction",
    "ptq-eq": "+ range equalization",
    "ptq-eq-bc": "+ equalization + bias correction (former default)",
    "ptq-eq-bc-float": "+ equalization + bias correction, stem and classifier fp32",
    "ptq-eq-bc-generic": "+ equalization + bias correction, 160 COCO photos mixed into the calibration",
    "ptq-eq-ada-bc": "**+ equalization + AdaRound (500 steps a layer) + bias correction (new default)**",
    "ptq-eq-ada-bc-early": "+ equalization + AdaRound + bias correction, stem and blocks 0-1 fp32",
    "ptq-a16-bc": "A16W8 (`--activations int16`: 16-bit activations, INT8 weights) + bias correction",
    "ptq-a16-eq-ada-bc": "A16W8 + equalization + AdaRound + bias correction",
    "ptq-a16-ada-bc": "**A16W8 + AdaRound + bias correction (`quantize --activations int16`)**",
    "ptq-a16-ada-bc-w32": "16-bit activations, fp32 weights (+ bias correction): all A16W8 loses is its INT8 weights",
    "ptq-a8-w32": "INT8 activations, fp32 weights (+ bias correction), no equalization",
    "ptq-eq-a8-w32": "INT8 activations, equalized, fp32 weights (+ bias correction): what INT8 activations cost",
    "ethosu-int8": "Ethos-U graph (`export --target ethos-u55-128`: Arm's INT8 scheme, int32 biases) + equalization "
    "+ AdaRound + bias correction",
    "ethosu-a16": "Ethos-U graph, A16W8 (`export --target ethos-u55-128 --activations int16`) + AdaRound + bias "
    "correction",
    "fp32-input-int8": "floor: fp32 with only its input rounded to INT8 (as every INT8 graph's is)",
    "fp32-noise": "floor: fp32 on the same photos with invisible noise (each pixel +-1 grey level)",
}
EARLY = ("stem", "blocks.0", "blocks.1")  # the layers with the fewest channels: 8-16 at 0.25x


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def aug_batches(x: torch.Tensor, bs: int = 32):
    """``batches(epoch)`` of augmented (random crop 0.35-1, flip) photos, like ``quantize``'s fine-tuning."""
    from torchvision.transforms import v2

    aug = v2.Compose([v2.RandomResizedCrop(224, scale=(0.35, 1), antialias=True), v2.RandomHorizontalFlip()])

    def batches(epoch: int):
        torch.manual_seed(100 + epoch)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x) - bs + 1, bs):
            yield fp.normalized(torch.stack([aug(x[j]) for j in order[i : i + bs]]))

    return batches, len(x) // bs


def grey_noise(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``x`` (normalized photos) with each pixel moved by -1, 0 or +1 grey level: a change nobody can see."""
    g = torch.Generator().manual_seed(seed)
    step = 1 / (255 * torch.tensor(Preprocess().std).view(1, 3, 1, 1))
    return x + torch.randint(-1, 2, x.shape, generator=g).float() * step


def input_int8(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to 256 levels over the whole normalized range: what an INT8 graph's input step does."""
    lo, hi = (
        float(fp.normalized(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).min()),
        float(fp.normalized(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).max()),
    )
    s = (hi - lo) / 255
    return ((x - lo) / s).round() * s + lo


def build(route: str, model, tune_u8: torch.Tensor, calib: list[torch.Tensor], generic: list[torch.Tensor]):
    """The converted INT8 graph of one route (the floors: fp32 on altered input)."""
    if route == "fp32-noise":
        return lambda x: model(grey_noise(x))
    if route == "fp32-input-int8":
        return lambda x: model(input_int8(x))
    if route.startswith("ethosu"):  # the graph the .pte is lowered from, run in PyTorch (no NPU here)
        from fdmobilenet.deploy.ethosu import quantize_ethosu

        cfg = PtqConfig(activations="int16" if route.endswith("a16") else "int8")
        return quantize_ethosu(model, 224, "ethos-u55-128", calib, cfg)
    if route.startswith("qat"):
        batches, steps = aug_batches(tune_u8)
        if route == "qat":
            return convert(qat_distill(model, batches, steps, 224, QatConfig(), log=lambda s: None))
        cfg = QatConfig(loss="logits", train_classifier=False)
        return convert(qat_distill(model, batches, steps, 224, cfg, log=lambda s: None, calibration=calib))
    parts = set(route.split("-"))
    cfg = PtqConfig(
        equalize="eq" in parts,
        bias_correction="bc" in parts or "w32" in parts,
        rounding_steps=500 if "ada" in parts and "w32" not in parts else 0,
        float_layers=("stem", "classifier") if "float" in parts else EARLY if "early" in parts else (),
        activations="int16" if "a16" in parts else "int8",
    )
    if "w32" in parts:  # activations quantized, weights left fp32: the two error sources apart
        return activations_only(model, calib, cfg)
    return calibrate(model, calib + (generic if "generic" in parts else []), 224, cfg)


def activations_only(model, calib: list[torch.Tensor], cfg: PtqConfig):
    """The PT2E graph with its activation quantizers only (the weight quantizers removed), bias-corrected."""
    from dataclasses import replace

    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from fdmobilenet.deploy.fold import fold_batchnorm
    from fdmobilenet.deploy.quantize import _quantizer, capture, correct_layers, equalize

    quantizer = _quantizer(False, (), cfg.observer, "xnnpack", cfg.activations)
    quantizer.set_global(replace(quantizer.global_config, weight=None))
    folded = fold_batchnorm(model).eval()
    if cfg.equalize:
        equalize(folded, calib)
    prepared = prepare_pt2e(capture(model, 224, folded), quantizer)
    with torch.no_grad():
        for x in calib:
            prepared(x)
    quantized = convert(prepared)
    correct_layers(quantized, folded, torch.cat(calib)[: cfg.bias_correction_photos], 0, True)
    return quantized


@torch.no_grad()
def stable_photos(model, x: torch.Tensor) -> torch.Tensor:
    """The photos whose fp32 top-1 survives invisible noise (3 draws of +-1 grey level): where agreement means
    something. On the others fp32's own answer is a coin toss between near-equal logits."""
    ref = model(x).argmax(1)
    keep = torch.ones(len(x), dtype=torch.bool)
    for seed in (11, 12, 13):
        keep &= model(grey_noise(x, seed)).argmax(1) == ref
    return x[keep]


def top1(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():  # ties (quantized logits) go to the lower index, as in argmax and the agreement
        top = torch.as_tensor(model(x)).sort(dim=1, descending=True, stable=True).indices[:, :5]
    return 100.0 * float((top[:, 0] == y).float().mean()), 100.0 * float((top == y[:, None]).any(1).float().mean())


def pooled(groups: dict, names) -> dict:
    n = sum(groups[k]["n"] for k in names)
    return {
        "n": n,
        "agreement": round(sum(groups[k]["agreement"] * groups[k]["n"] for k in names) / n, 2),
        "kl": round(sum(groups[k]["kl"] * groups[k]["n"] for k in names) / n, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="0.25,0.5")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--report-only", action="store_true", help="rewrite fidelity.md from fidelity.json")
    a = ap.parse_args()
    out_json = HERE / "fidelity.json"
    if a.report_only:
        write_markdown(json.loads(out_json.read_text()))
        return
    torch.set_num_threads(1)
    cache = WORK / "photos"
    tune_u8, _ = fp.cached("calib", cache)
    order = torch.randperm(len(tune_u8), generator=torch.Generator().manual_seed(1))[:CALIB]
    calib = [fp.normalized(tune_u8[order[i : i + 50]]) for i in range(0, CALIB, 50)]
    generic_u8, _ = fp.cached("generic", cache)
    generic = [fp.normalized(generic_u8[i : i + 50]) for i in range(0, len(generic_u8), 50)]
    sets = {name: fp.normalized(fp.cached(name, cache)[0]) for name in fp.MEASURED}
    sets["imagenette"] = sets["imagenette"][::3][:100]  # 10 per class
    sets["altered"] = altered_photos(sets["imagenette"], seed=0)
    y50 = fp.sample50_labels(fp.cached("sample50", cache)[1])
    old = json.loads(out_json.read_text()) if out_json.exists() else {"rows": []}
    keep = {(r["width"], r["route"]): r for r in old["rows"]}
    for width in a.widths.split(","):
        model, _ = fp.official_model(width, WORK)
        fp32_top = top1(model, sets["sample50"], y50)
        sets_w = {**sets, "stable": stable_photos(model, torch.cat([sets[k] for k in fp.OTHER]))}
        keep[(width, "fp32")] = {"width": width, "route": "fp32", "top1_sample50": fp32_top[0],
                                 "top5_sample50": fp32_top[1]}  # fmt: skip
        for route in a.routes.split(","):
            log(f"{width}x: {route}")
            t0 = time.monotonic()
            torch.manual_seed(0)
            quantized = build(route, model, tune_u8, calib, generic)
            built = time.monotonic() - t0
            r = int8_fidelity(model, quantized, sets_w, batch_size=50)
            t1, t5 = top1(quantized, sets["sample50"], y50)
            row = {"width": width, "route": route, "build_s": round(built, 1), "top1_sample50": t1,
                   "top5_sample50": t5, "other": pooled(r["groups"], fp.OTHER), "groups": r["groups"]}  # fmt: skip
            keep[(width, route)] = row
            log(json.dumps(row))
            save(out_json, keep)
    save(out_json, keep)
    write_markdown(json.loads(out_json.read_text()))
    log(f"wrote {out_json} and fidelity.md")


def save(path: Path, rows: dict) -> None:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if sys.platform == "linux" else ""
    info = {**machine_info(), "lscpu": lscpu.strip().splitlines()}
    out = {"machine": info, "calibration_photos": CALIB, "tune_photos": 1000, "threads": 1,
           "command": "PYTHONPATH=src:benchmarks/int8 nice -n 15 python benchmarks/int8/fidelity.py",
           "rows": list(rows.values())}  # fmt: skip
    path.write_text(json.dumps(out, indent=1))


def write_markdown(out: dict) -> None:
    """fidelity.md: per width, each route's agreement with fp32 on other classes, KL, sample-50 top-1."""
    m = out["machine"]
    model_name = next((x.split(":", 1)[1].strip() for x in m.get("lscpu", []) if x.startswith("Model name")), m["cpu"])
    lines = [
        "# INT8 that holds across the label space (generated by `benchmarks/int8/fidelity.py`)",
        "",
        f"- machine: {model_name}, {m['cores']} cores; {out['threads']} thread; date {m['date']}; `{out['command']}`",
        f"- versions: torch {m['torch']}, executorch {m['executorch']}, onnxruntime {m['onnxruntime']}",
        f"- calibration: Imagenette only (10 classes): post-training routes {out['calibration_photos']} photos, "
        f"QAT routes {out['tune_photos']} (1 epoch, batch 32: 31 steps)",
        "- **other classes** (never calibrated on; pooled): imagenet-sample-50 (50 photos of 50 ImageNet classes, "
        "none of Imagenette's), 300 flower photos, 300 CIFAR-10 photos upsampled from 32 px; `agree` = same "
        "top-1 class as fp32, `KL` = KL(fp32 || int8) in nats, mean over photos",
        "- also: 100 held-out Imagenette photos (`inet`, the calibration classes) and altered copies of them "
        "(`altered`: blurred, zoomed, blended - what `quantize` measures when given no other photos)",
        "- `top-1 s50` = 1000-way top-1 on imagenet-sample-50 (1 photo = 2 points); Δ = INT8 minus fp32. "
        "Target (issue 22): agreement >= 97 % on other classes and Δ within 1 point",
        "- `stable`: the photos of other classes whose fp32 top-1 survives invisible noise (3 draws of each pixel "
        "+-1 grey level; the count is under each table): on the rest fp32's own answer is a toss-up between "
        "near-equal logits, which no INT8 graph (its input is rounded too) can be expected to repeat. The two "
        "`floor` rows are fp32 itself on such input",
        "- INT8 graphs run in PyTorch (PT2E's reference int8 arithmetic, the QDQ ONNX / XNNPACK .pte numerics)",
        "- A16W8 rows: `quantize --activations int16` (16-bit activations, INT8 weights: QDQ ONNX at opset 21, "
        "Ethos-U); the `fp32 weights` rows quantize the activations only, which splits the error into its two "
        "sources. Re-runs move a route by about a point (the INT8 default between this run and the one before: "
        "83.7 -> 82.9 % at 0.25x, 85.7 -> 86.8 % at 0.5x)",
        "",
    ]
    rows = out["rows"]
    for width in dict.fromkeys(r["width"] for r in rows):
        fp32 = next(r for r in rows if r["width"] == width and r["route"] == "fp32")
        lines += [
            f"## FD-MobileNet {width}x (fp32 top-1 on sample-50: {fp32['top1_sample50']:.0f}, "
            f"top-5 {fp32['top5_sample50']:.0f})",
            "",
            "| route | other classes: agree % | KL | sample-50 | flowers | CIFAR | stable | inet | altered "
            "| top-1 s50 | Δ | build s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        order = list(ROUTES)
        for r in sorted(rows, key=lambda r: order.index(r["route"]) if r["route"] in order else len(order)):
            if r["width"] != width or r["route"] == "fp32":
                continue
            g = r["groups"]
            cells = " | ".join(
                f"{g[k]['agreement']:.1f}" if k in g else "-"
                for k in ("sample50", "flowers", "cifar", "stable", "imagenette")
            )
            lines.append(
                f"| {ROUTES.get(r['route'], r['route'])} | {r['other']['agreement']:.1f} | {r['other']['kl']:.3f} "
                f"| {cells} | {g['altered']['agreement']:.1f} | {r['top1_sample50']:.0f} "
                f"| {r['top1_sample50'] - fp32['top1_sample50']:+.0f} | {r['build_s']:.0f} |"
            )
        counted = [r["groups"]["stable"]["n"] for r in rows if r["width"] == width and "stable" in r.get("groups", {})]
        stable = counted[0] if counted else None
        if stable is not None:
            lines.append(f"\n`stable`: {stable} of the 650 photos of other classes.")
        lines.append("")
    (HERE / "fidelity.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
