"""Detection on what fits here (issue 21): SSDLite detectors trained by ``fdmobilenet train`` on BCCD
(``../shared/datasets/detection/bccd``, validated on a seeded 10 % of its trainval), one case at a time;
rows appended to ``--results`` (JSON lines; a finished (case, seed) is skipped on a re-run), ``--report``
renders them.

    python benchmarks/detection/run.py --case bccd-fd050-authors --seeds 0
    python benchmarks/detection/run.py --case speed --seeds 0
    python benchmarks/detection/run.py --report benchmarks/detection/results.md

Cases:
  bccd-fd050-authors   the README's target: FD-MobileNet 0.5x from the authors' ImageNet weights, 320 px,
                       the `detection` recipe with no other flag (60 epochs)
  bccd-12m-{fd,mb,sh}  the paper's comparison at 12 backbone MFLOPs (224 px convention): FD 0.25x, MobileNet V1
                       0.125x, ShuffleNet V1 g=3 0.225x, each backbone pretrained the same way: the engine's
                       default 10-epoch Imagenette run of issue 20 (``--backbones DIR/<case>-<seed>/best.safetensors``,
                       benchmarks/reference/engine_vs_plain.py cases imagenette-fd/-mb/-sh); same detector recipe
  bccd-12m-fd-authors  FD 0.25x from the authors' ImageNet weights (an extra row: not the same pretraining)
  speed                detector training img/s against the model-only step (random tensors, same batch,
                       320 px), interleaved in one process
  onnx                 bccd-fd050-authors exported to ONNX (NMS in and out of the graph), mAP by eval --exported
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("FDM_SHARED", REPO.parent / "shared"))
FDM = [sys.executable, "-m", "fdmobilenet.cli"]
BCCD = SHARED / "datasets/detection/bccd"
AUTHORS = SHARED / "weights/official"

# case -> (train arguments, backbone: "authors-0.5x" | "authors-0.25x" | "imagenette-fd" ... | None)
CASES: dict[str, tuple[list[str], str | None]] = {
    "bccd-fd050-authors": (["--model", "fd_mobilenet_050"], "authors-0.5x"),
    "bccd-12m-fd": (["--model", "ssdlite_fd_mobilenet", "--width", "0.25"], "imagenette-fd"),
    "bccd-12m-mb": (["--model", "ssdlite_mobilenet_v1", "--width", "0.125"], "imagenette-mb"),
    "bccd-12m-sh": (["--model", "ssdlite_shufflenet_v1", "--width", "0.225", "--groups", "3"], "imagenette-sh"),
    "bccd-12m-fd-authors": (["--model", "fd_mobilenet_025"], "authors-0.25x"),
}


def backbone_file(kind: str | None, seed: int, backbones: Path) -> Path | None:
    """The classification weights a detector starts from."""
    if kind is None:
        return None
    if kind.startswith("authors-"):
        return AUTHORS / f"{kind.removeprefix('authors-')}-FDMobileNet-224.pth.tar"
    path = backbones / f"{kind}-defaults-{seed}" / "best.safetensors"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run benchmarks/reference/engine_vs_plain.py --case {kind} first")
    return path


def run_case(case: str, seed: int, work: Path, backbones: Path, extra: list[str]) -> dict:
    args, kind = CASES[case]
    out = work / f"{case}-{seed}"
    pre = backbone_file(kind, seed, backbones)
    cmd = [*FDM, "train", "--data", str(BCCD), *args, "--seed", str(seed), "--out", str(out), *extra]
    cmd += ["--pretrained", str(pre)] if pre else []
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["val_map50"])
    ev = subprocess.run(
        [*FDM, "eval", "--weights", str(out / "best.safetensors"), "--data", str(BCCD), "--split", str(out), "--json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    scored = json.loads(ev.stdout.strip().splitlines()[-1])
    cfg = json.loads((out / "config.json").read_text())
    return {
        "case": case, "seed": seed, "model": cfg["model"], "width": cfg.get("width"), "backbone": str(pre),
        "resolution": cfg["resolution"], "epochs": cfg["epochs"], "best_epoch": best["epoch"],
        "map50": scored["map50"], "map50_07": scored["map50_07"], "coco_map": scored.get("map"),
        "per_class": scored["per_class"], "n_val": scored["n"],
        "train_img_s": statistics.median(r["img_s"] for r in rows), "wall_s": round(wall, 1), "out": str(out),
    }  # fmt: skip


def speed(seed: int, rounds: int = 3, steps: int = 8, batch: int = 16) -> dict:
    """Detector training step with its real input pipeline vs the same step on random tensors, interleaved."""
    import torch

    from fdmobilenet.data.detection import (
        DetectionDataset,
        collate_detection,
        detection_train_transform,
        open_detection,
    )
    from fdmobilenet.models import create_model

    torch.manual_seed(seed)
    model = create_model("ssdlite_fd_mobilenet_050", num_classes=3, resolution=320).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    split = open_detection(BCCD)
    ds = DetectionDataset(split.train, detection_train_transform(320))
    workers = min(4, os.cpu_count() or 1)

    def step(x, y) -> None:
        opt.zero_grad()
        sum(model(list(x), [{"boxes": t["boxes"], "labels": t["labels"]} for t in y]).values()).backward()
        opt.step()

    fixed = next(iter(torch.utils.data.DataLoader(ds, batch_size=batch, collate_fn=collate_detection)))
    rand_x = torch.rand_like(fixed[0])
    real, model_only = [], []
    for _ in range(rounds):
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, shuffle=True, collate_fn=collate_detection, num_workers=workers,
            persistent_workers=False,
        )  # fmt: skip
        it = iter(loader)
        step(*next(it)[:2])  # workers started, warm
        t = time.time()
        for _ in range(steps):
            step(*next(it)[:2])
        real.append(batch * steps / (time.time() - t))
        t = time.time()
        for _ in range(steps):
            step(rand_x, fixed[1])
        model_only.append(batch * steps / (time.time() - t))
    r, m = statistics.median(real), statistics.median(model_only)
    return {"case": "speed", "seed": seed, "real_img_s": round(r, 1), "model_only_img_s": round(m, 1),
            "ratio": round(r / m, 3), "batch": batch, "resolution": 320, "workers": workers,
            "threads": torch.get_num_threads()}  # fmt: skip


def exported(seed: int, work: Path) -> dict:
    """The README target's detector exported to ONNX (NMS in the graph, and outside it) and scored by
    ``eval --exported`` on the same held-out photos as PyTorch."""
    run = work / f"bccd-fd050-authors-{seed}"
    row: dict = {"case": "onnx", "seed": seed, "weights": str(run / "best.safetensors")}
    for mode in ("graph", "none"):
        dst = work / f"bccd-fd050-{mode}.onnx"
        subprocess.run([*FDM, "export", "--weights", str(run / "best.safetensors"), "-o", str(dst),
                        "--postprocess", mode], check=True)  # fmt: skip
        for kind, src in (("exported", dst), ("weights", run / "best.safetensors")):
            ev = subprocess.run(
                [*FDM, "eval", f"--{kind}", str(src), "--data", str(BCCD), "--split", str(run), "--json"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            got = json.loads(ev.stdout.strip().splitlines()[-1])
            row[f"{'onnx_' + mode if kind == 'exported' else 'torch'}_map50"] = got["map50"]
    return row


def report(results: Path, dst: Path) -> None:
    from fdmobilenet._utils import machine_info

    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    lines = [
        "# Detection: SSDLite on BCCD (generated by `benchmarks/detection/run.py --report`)",
        "",
        f"- machine: {machine_info()}; date {time.strftime('%Y-%m-%d')}",
        "- data: BCCD trainval (292 photos, 3 classes), the run's seeded 10 % hold-out (29 photos, never trained "
        "on) scored by `fdmobilenet eval --split RUN`; VOC mAP@0.5 all-point (and 11-point, the paper's), "
        "COCO mAP@[.5:.95] by pycocotools",
        "",
        "- train img/s were measured with other runs sharing the 2 cores: the `speed` line below is the quiet "
        "side-by-side measurement",
        "- the 12 MFLOPs comparison with every backbone pretrained alike (FD-MobileNet vs MobileNet V1 vs "
        "ShuffleNet V1) is written by `compare`: [compare-12M/results.md](compare-12M/results.md)",
        "",
        "| case | model | backbone from | epochs | seeds | mAP@0.5 | mAP@0.5 (11-pt) | COCO mAP | train img/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"

    for case, rs in by_case.items():
        if case in ("speed", "onnx"):
            continue
        w = f" w{rs[0]['width']}" if rs[0].get("width") else ""
        lines.append(
            f"| {case} | {rs[0]['model']}{w} | {Path(rs[0]['backbone']).name} | {rs[0]['epochs']} | {len(rs)} | "
            f"{ms([r['map50'] for r in rs])} | {ms([r['map50_07'] for r in rs])} | "
            f"{ms([r['coco_map'] for r in rs if r.get('coco_map') is not None] or [float('nan')])} | "
            f"{statistics.mean(r['train_img_s'] for r in rs):.1f} |"
        )
    for r in by_case.get("speed", []):
        lines += [
            "",
            f"Speed (batch {r['batch']}, {r['resolution']} px, {r['workers']} loader workers, {r['threads']} "
            f"threads): detector training on BCCD photos {r['real_img_s']} img/s vs the model-only step on random "
            f"tensors {r['model_only_img_s']} img/s: **{r['ratio']:.2f}x** (target >= 0.8x)",
        ]
    for r in by_case.get("onnx", []):
        lines += [
            "",
            f"Exported (bccd-fd050-authors, same held-out photos, `eval --exported`): PyTorch mAP@0.5 "
            f"{r['torch_map50']:.2f}, ONNX with NMS in the graph {r['onnx_graph_map50']:.2f}, ONNX with NMS in "
            f"Python {r['onnx_none_map50']:.2f} (target: within 0.5)",
        ]
    lines += ["", "Per-class AP@0.5 (all-point), first seed of each case:", ""]
    for case, rs in by_case.items():
        if case not in ("speed", "onnx"):
            pcs = ", ".join(f"{c['name']} {c['ap']:.1f}" for c in rs[0]["per_class"])
            lines.append(f"- {case}: {pcs}")
    dst.write_text("\n".join(lines) + "\n")
    print(dst.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=[*CASES, "speed", "onnx"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/fdm-detection"))
    p.add_argument("--backbones", type=Path, default=Path("/tmp/fdm-imagenette/runs"),
                   help="engine_vs_plain.py's --work/runs: <case>-defaults-<seed>/best.safetensors")  # fmt: skip
    p.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    p.add_argument("--report", type=Path)
    p.add_argument("extra", nargs="*", help="more train flags after --")
    a = p.parse_args()
    if a.report:
        report(a.results, a.report)
        return
    done = set()
    if a.results.is_file():
        done = {(r["case"], r["seed"]) for r in map(json.loads, a.results.read_text().splitlines()) if r}
    for seed in a.seeds:
        if (a.case, seed) in done:
            print(f"{a.case} seed {seed}: already in {a.results}")
            continue
        if a.case == "speed":
            row = speed(seed)
        elif a.case == "onnx":
            row = exported(seed, a.work)
        else:
            row = run_case(a.case, seed, a.work, a.backbones, a.extra)
        with open(a.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "per_class"}))


if __name__ == "__main__":
    main()
