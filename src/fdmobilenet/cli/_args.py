"""Argument types shared by several commands."""

from __future__ import annotations

import argparse


def csv_floats(s: str) -> list[float]:
    """``12,40,140`` -> [12.0, 40.0, 140.0], with an argparse error that shows the expected form."""
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 12,40,140, got {s!r}") from None


def csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]
