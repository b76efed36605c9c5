"""``prepare``: re-encode an image folder once into resized JPEG shards."""

from __future__ import annotations

import argparse

from ..data.packed import prepare


def prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="image folder: SRC/<class>/<images>")
    p.add_argument("dst", help="output folder for the shards (re-run to resume)")
    p.add_argument("--short-side", type=int, default=256, help="resize so the shorter side is at most this")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoded images")
    p.add_argument("--shards", type=int, default=0, help="number of shard files (default: one per ~2000 images)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")


def prepare_run(a: argparse.Namespace) -> int:
    meta = prepare(a.src, a.dst, a.short_side, a.quality, a.shards, a.workers)
    print(
        f"prepared {meta['n_images']} images in {meta['shards']} shards at {a.dst} ({meta['bad']} unreadable skipped)"
    )
    return 0
