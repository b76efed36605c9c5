"""``compare``: the paper's experiment (budget-matched families, same recipe) on your data."""

from __future__ import annotations

import argparse

from ..models import PAPER_FAMILIES
from ..train.compare import compare
from ._args import csv_floats, thread_count


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="DIR with train/ and val/, or class folders (see --val-split); or detection data (a VOC folder or "
        "COCO json): then SSDLite detectors are compared, budgets being backbone MFLOPs at 224 px",
    )
    p.add_argument(
        "--budgets", type=csv_floats, default=[12.0, 40.0, 140.0], help="MFLOPs budgets (default: 12,40,140)"
    )
    p.add_argument("--families", default=",".join(PAPER_FAMILIES), help="comma-separated families")
    p.add_argument("--groups", type=int, default=3, help="ShuffleNet V1 group count")
    p.add_argument(
        "--resolution",
        type=int,
        help="input size of every run (default 224); with detection data the detectors' (default: the recipe's, "
        "320), the backbone widths being solved at 224 px whatever it is",
    )
    p.add_argument("--epochs", type=int, help="epochs per run (default 10; detectors: the recipe's)")
    p.add_argument(
        "--seeds",
        type=int,
        help="runs per cell (seeds 0..N-1; default: 3 below 25,600 training images, where one run decides nothing, "
        "else 1); the report gives mean ± sd and a bootstrap verdict per pair of families",
    )
    p.add_argument(
        "--recipe", default="auto", help="auto | paper | small | modern | detection | FILE.yaml (see `train`)"
    )
    p.add_argument("--batch-size", type=int, help="global batch size (default: chosen from the data)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--val-split", type=float, help="validation fraction for DIRs without val/")
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument("--threads", type=thread_count, help="CPU threads of each run (see `train --threads`)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument(
        "--in-memory",
        action=argparse.BooleanOptionalAction,
        help="decode the dataset once into memory (default: when it fits a quarter of free memory, as `train`)",
    )
    p.add_argument("--loader", choices=("auto", "pil", "gpu"), help="input pipeline (see `train --loader`)")
    p.add_argument("--train-resolution", help="training crop size by epoch, e.g. 160,224@9 (see `train`)")
    p.add_argument(
        "--pretrained-from",
        help="folder with converted official weights: adds fine-tuning rows (detection data: +authors detector rows "
        "whose FD-MobileNet backbones start from them)",
    )
    p.add_argument(
        "--backbones",
        metavar="DIR",
        help="detection data: classification weights for every family and budget's backbone, from DIR/backbones.json "
        '({"fd_mobilenet@12": "FILE", ...}), else DIR/<family>-<budget>M.safetensors, else a classification '
        "compare's DIR/runs/<family>-<budget>M-w*-seed*/best.safetensors; each must have the planned width "
        "(default: backbones from scratch)",
    )
    p.add_argument(
        "--extra-row",
        action="append",
        metavar="NAME=FILE",
        help="detection data: an extra detector row whose backbone starts from FILE (classification weights, e.g. "
        "the authors'), at the budget it costs at 224 px; repeatable",
    )
    p.add_argument("--teacher", help="distil every run from this model (see `train --teacher`)")
    p.add_argument("--out", default="runs/compare", help="folder of the runs and the report")


def compare_run(a: argparse.Namespace) -> int:
    keys = ("batch_size", "lr", "val_split", "workers", "loader", "train_resolution", "in_memory", "teacher", "threads")
    overrides = {k: getattr(a, k) for k in (*keys, "device") if getattr(a, k, None) is not None}
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    # a RunStopped carries the run's own exit code (128 + signal, resumable, or 3, diverged); main uses it
    compare(
        a.data, a.budgets, families, a.out, a.resolution, a.epochs, a.seeds, a.recipe, a.groups,
        a.pretrained_from, overrides, backbones=a.backbones, extra_rows=a.extra_row,
    )  # fmt: skip
    return 0
