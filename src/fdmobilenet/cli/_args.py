"""Argument types shared by several commands."""

from __future__ import annotations

import argparse
import os


def csv_floats(s: str) -> list[float]:
    """``12,40,140`` -> [12.0, 40.0, 140.0], with an argparse error that shows the expected form."""
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 12,40,140, got {s!r}") from None


def csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def positive_int(s: str) -> int:
    """An integer >= 1 (``--topk -3`` is an argparse error, not a traceback deeper in)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def thread_count(s: str) -> int:
    """Threads of a runtime: 1 up to a few per core (more only thrash; 100,000 crashed OpenMP)."""
    from ..train.config import MAX_THREADS

    v = positive_int(s)
    if v > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS} (this machine has {os.cpu_count()} cores)")
    return v
