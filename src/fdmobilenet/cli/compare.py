"""``compare``: the paper's experiment (budget-matched families, same recipe) on your data."""

from __future__ import annotations

import argparse

from ..models import PAPER_FAMILIES
from ..train.compare import compare
from ._args import csv_floats


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="DIR with train/ and val/, or class folders (see --val-split)")
    p.add_argument("--budgets", type=csv_floats, default=[12.0, 40.0, 140.0], help="MFLOPs budgets, e.g. 12,40,140")
    p.add_argument("--families", default=",".join(PAPER_FAMILIES), help="comma-separated families")
    p.add_argument("--groups", type=int, default=3, help="ShuffleNet V1 group count")
    p.add_argument("--resolution", type=int, default=224, help="input size of every run")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run")
    p.add_argument(
        "--seeds",
        type=int,
        help="runs per cell (seeds 0..N-1; default: 3 below 25,600 training images, where one run decides nothing, "
        "else 1); the report gives mean ± sd and a bootstrap verdict per pair of families",
    )
    p.add_argument("--recipe", default="auto", help="auto | paper | small | modern | FILE.yaml (see `train`)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: chosen from the data)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--val-split", type=float, help="validation fraction for DIRs without val/")
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument(
        "--in-memory",
        action=argparse.BooleanOptionalAction,
        help="decode the dataset once into memory (default: when it fits a quarter of free memory, as `train`)",
    )
    p.add_argument("--loader", choices=("auto", "pil", "gpu"), help="input pipeline (see `train --loader`)")
    p.add_argument("--train-resolution", help="training crop size by epoch, e.g. 160,224@9 (see `train`)")
    p.add_argument("--pretrained-from", help="folder with converted official weights: adds fine-tuning rows")
    p.add_argument("--teacher", help="distil every run from this model (see `train --teacher`)")
    p.add_argument("--out", default="runs/compare", help="folder of the runs and the report")


def compare_run(a: argparse.Namespace) -> int:
    overrides = {
        k: getattr(a, k)
        for k in ("batch_size", "lr", "val_split", "workers", "loader", "train_resolution", "in_memory", "teacher")
        if getattr(a, k, None) is not None
    }
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    # a RunStopped carries the run's own exit code (128 + signal, resumable, or 3, diverged); main uses it
    compare(
        a.data, a.budgets, families, a.out, a.resolution, a.epochs, a.seeds, a.recipe, a.groups,
        a.pretrained_from, overrides,
    )  # fmt: skip
    return 0
