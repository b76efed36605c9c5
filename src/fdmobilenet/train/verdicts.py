"""Is a difference between two families real? Mean ± sd over seeds, and a paired bootstrap verdict.

One seed decides nothing: the same recipe at another seed (another initialisation, data order and,
for class folders, another held-out split) moves top-1 by a point or more on small data. So each
(family, budget) gets the mean and the sample sd over its seeds, and each pair of families at a
budget gets the difference in top-1 with a 95 % interval from a bootstrap that resamples both the
seeds and the validation photos, the same photos for both families (paired: a photo that every
model gets wrong does not widen the interval). The inputs are the per-photo predictions each run
writes at the end of training (``RUN/val_predictions.csv``: ``index,target,pred``).

Detectors are compared the same way on their own score, VOC mAP@0.5 (all-point): mAP is not a mean over
images, so each resample recomputes it from every detection's outcome, counting each image as often as it
was drawn (``detection_metrics.ImageOutcomes``, written by ``compare`` as ``RUN/val_detections.npz``).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..detection_metrics import ImageOutcomes

PREDICTIONS = "val_predictions.csv"
DETECTIONS = "val_detections.npz"  # a detector run's per-image outcomes (``compare`` writes it after training)
RESAMPLES = 2000
BOOTSTRAP_SEED = 20  # fixed, so the same runs always give the same report
LEVEL = 0.95
MISSING = "no verdict: per-photo predictions missing"
MISSING_DETECTIONS = "no verdict: per-image detections missing"
_CELLS_PER_CHUNK = 4_000_000  # resamples x photos held in memory at once (about 32 MB of counts)


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd (n - 1) of ``values``; the sd is None for one value, which has no spread to show."""
    if not values:
        raise ValueError("mean_sd needs at least one value")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_sd(mean: float, sd: float | None, n: int) -> str:
    """``81.20 ± 1.05`` over several seeds; ``81.20, 1 seed`` for one (never a ``± 0.00`` that claims no spread)."""
    return f"{mean:.2f} ± {sd:.2f}" if n > 1 and sd is not None else f"{mean:.2f}, 1 seed"


@dataclass
class Predictions:
    """One run's validation predictions in index order."""

    target: np.ndarray  # int64 class index per photo
    correct: np.ndarray  # bool per photo


def read_predictions(path: Path) -> Predictions | None:
    """``RUN/val_predictions.csv`` (``index,target,pred``), or None when the run did not write one (older runs)
    or it cannot be read (its indices must be 0..n-1, each once)."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="") as f:
            rows = [(int(r["index"]), int(r["target"]), int(r["pred"])) for r in csv.DictReader(f)]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not rows:
        return None
    a = np.array(sorted(rows), dtype=np.int64)
    if not np.array_equal(a[:, 0], np.arange(len(a))):
        return None
    return Predictions(a[:, 1], a[:, 1] == a[:, 2])


def _photo_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` bootstrap samples of ``n`` photos, as how often each photo was drawn: (size, n)."""
    draws = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def paired_bootstrap(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    shared_photos: bool = True,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Top-1 of A minus top-1 of B in points, and its ``level`` interval (percentile bootstrap).

    ``a[s]`` and ``b[s]`` are the per-photo correctness (0/1) of the two families at seed ``s`` on the same
    photos. Each resample draws seeds with replacement and photos with replacement, the same photos for
    both families (and for every seed when ``shared_photos``: all seeds held out the same photos), and takes
    the mean accuracy of A minus that of B over them. The generator is seeded, so the result is reproducible.
    """
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs the same seeds, at least one, for both families")
    diffs = [np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) for x, y in zip(a, b, strict=True)]
    if any(d.shape != diffs[0].shape for d in diffs):
        shared_photos = False
    s = len(diffs)
    point = statistics.fmean(float(d.mean()) for d in diffs)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // max(len(d) for d in diffs))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        seed_counts = rng.multinomial(s, np.full(s, 1.0 / s), size=size)  # (size, s)
        if shared_photos:
            counts = _photo_counts(rng, len(diffs[0]), size)
            per_seed = np.stack([counts @ d for d in diffs], axis=1) / len(diffs[0])
        else:
            per_seed = np.stack([_photo_counts(rng, len(d), size) @ d / len(d) for d in diffs], axis=1)
        out.append((seed_counts * per_seed).sum(axis=1) / s)
    boot = np.concatenate(out) * 100
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return point * 100, float(lo), float(hi)


def verdict_word(a: str, b: str, lo: float, hi: float) -> str:
    """``A ahead`` / ``B ahead`` when the interval excludes 0, else ``within noise``."""
    if lo > 0:
        return f"{a} ahead"
    if hi < 0:
        return f"{b} ahead"
    return "within noise"


def pair_verdict(
    budget: float,
    fam_a: str,
    fam_b: str,
    runs_a: dict[int, Path],
    runs_b: dict[int, Path],
    task: str = "classification",
) -> dict[str, Any]:
    """The verdict on ``fam_a`` against ``fam_b`` at one budget, from the run folders of each seed; ``task``
    ``detection`` compares mAP@0.5 from ``val_detections.npz``, else top-1 from ``val_predictions.csv``."""
    seeds = sorted(set(runs_a) & set(runs_b))
    entry: dict[str, Any] = {"budget": budget, "a": fam_a, "b": fam_b, "diff": None, "lo": None, "hi": None}
    entry.update(verdict=MISSING, photos=None, seeds=len(seeds), covers=None)
    if task == "detection":
        return _detection_verdict(entry, [runs_a[s] for s in seeds], [runs_b[s] for s in seeds])
    preds_a = [read_predictions(runs_a[s] / PREDICTIONS) for s in seeds]
    preds_b = [read_predictions(runs_b[s] / PREDICTIONS) for s in seeds]
    if not seeds or any(p is None for p in (*preds_a, *preds_b)):
        return entry
    if any(not np.array_equal(pa.target, pb.target) for pa, pb in zip(preds_a, preds_b, strict=True)):
        entry["verdict"] = "no verdict: the two families' runs held out different photos"
        return entry
    shared = all(np.array_equal(p.target, preds_a[0].target) for p in preds_a)
    diff, lo, hi = paired_bootstrap([p.correct for p in preds_a], [p.correct for p in preds_b], shared)
    entry.update(diff=round(diff, 2), lo=round(lo, 2), hi=round(hi, 2), verdict=verdict_word(fam_a, fam_b, lo, hi))
    entry.update(photos=len(preds_a[0].target), covers="photos" if len(seeds) == 1 else "photos and seeds")
    return entry


def read_detections(path: Path) -> tuple[ImageOutcomes, list[str]] | None:
    """``RUN/val_detections.npz`` and its image names, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        outcomes, names = ImageOutcomes.load(path)
    except (OSError, ValueError, KeyError):
        return None
    if names is None or len(names) != outcomes.n_images:
        return None
    return outcomes, names


def _detection_verdict(entry: dict[str, Any], dirs_a: list[Path], dirs_b: list[Path]) -> dict[str, Any]:
    found_a = [read_detections(d / DETECTIONS) for d in dirs_a]
    found_b = [read_detections(d / DETECTIONS) for d in dirs_b]
    if not dirs_a or any(x is None for x in (*found_a, *found_b)):
        entry["verdict"] = MISSING_DETECTIONS
        return entry
    if any(x[1] != y[1] for x, y in zip(found_a, found_b, strict=True)):  # type: ignore[index]
        entry["verdict"] = "no verdict: the two detectors' runs held out different images"
        return entry
    shared = all(x[1] == found_a[0][1] for x in found_a)  # type: ignore[index]
    a, b = [x[0] for x in found_a], [x[0] for x in found_b]  # type: ignore[index]
    diff, lo, hi = paired_bootstrap_map(a, b, shared)
    if math.isnan(lo) or math.isnan(hi):
        entry.update(diff=None if math.isnan(diff) else round(diff, 2), verdict="no verdict: no ground truth")
        return entry
    entry.update(
        diff=round(diff, 2), lo=round(lo, 2), hi=round(hi, 2), verdict=verdict_word(entry["a"], entry["b"], lo, hi)
    )
    entry.update(photos=a[0].n_images, covers="photos" if len(a) == 1 else "photos and seeds")
    return entry


def paired_bootstrap_map(
    a: Sequence[ImageOutcomes],
    b: Sequence[ImageOutcomes],
    shared_images: bool = True,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """mAP@0.5 (all-point) of A minus that of B in points, and its ``level`` interval (percentile bootstrap).

    As ``paired_bootstrap``: each resample draws seeds with replacement and images with replacement, the
    same images for both detectors (and for every seed when ``shared_images``), and recomputes both mAPs
    over them (an image drawn twice counts twice), then averages A − B over the drawn seeds.
    """
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap_map needs the same seeds, at least one, for both detectors")
    if any(x.n_images != y.n_images for x, y in zip(a, b, strict=True)):
        raise ValueError("paired_bootstrap_map needs both detectors scored on the same images at each seed")
    if any(x.n_images != a[0].n_images for x in a):
        shared_images = False
    s = len(a)
    point = statistics.fmean(float(x.map50()[0] - y.map50()[0]) for x, y in zip(a, b, strict=True))
    rng = np.random.default_rng(seed)
    chunk = 250  # resamples at a time: ImageOutcomes.map50 bounds its own memory per class
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        seed_counts = rng.multinomial(s, np.full(s, 1.0 / s), size=size)  # (size, s)
        shared = _photo_counts(rng, a[0].n_images, size) if shared_images else None
        per_seed = []
        for x, y in zip(a, b, strict=True):
            counts = shared if shared is not None else _photo_counts(rng, x.n_images, size)
            per_seed.append(x.map50(counts) - y.map50(counts))
        out.append((seed_counts * np.stack(per_seed, axis=1)).sum(axis=1) / s)
    boot = np.concatenate(out)
    if np.isnan(boot).all():
        return point, math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(boot, [tail, 100 - tail])
    return point, float(lo), float(hi)


def verdicts(
    runs: dict[tuple[str, float], dict[int, Path]], first: str = "fd_mobilenet", task: str = "classification"
) -> list[dict[str, Any]]:
    """Every pair of families at each budget (``first`` as A against each other family, then the other pairs).

    ``runs`` maps (family, budget) to {seed: run folder}; ``task`` ``detection`` compares detectors' mAP@0.5.
    """
    out = []
    for budget in sorted({b for _, b in runs}):
        fams = [f for f, b in runs if b == budget]
        fams.sort(key=lambda f: f != first)  # stable: FD-MobileNet first, the others in their given order
        for i, fa in enumerate(fams):
            for fb in fams[i + 1 :]:
                out.append(pair_verdict(budget, fa, fb, runs[(fa, budget)], runs[(fb, budget)], task))
    return out


def describe_split(records: Sequence[dict | None], data: str | Path, n_val: int | None) -> dict[str, Any]:
    """Which photos the numbers are measured on: the runs' ``split.json`` (root, fraction, seed), or
    ``DATA/train and DATA/val``; ``n_val`` is the number of validation photos when known otherwise."""
    recs = [r for r in records if r]
    if not recs:
        text = f"{Path(data) / 'train'} and {Path(data) / 'val'}"
        return {"text": text, "root": str(data), "val_split": None, "seeds": [], "photos": n_val}
    photos = len(recs[0]["val"]) if isinstance(recs[0].get("val"), list) else n_val
    split_seeds = sorted({r.get("seed") for r in recs if r.get("seed") is not None})
    frac = recs[0].get("val_split")
    held = f"{frac:.0%} held out" if isinstance(frac, int | float) and math.isfinite(frac) else "a held-out part"
    if len(split_seeds) == 1:
        how = f"split seed {split_seeds[0]}"
    else:
        how = f"one split per seed (split seeds {', '.join(map(str, split_seeds))})"
    text = f"{recs[0].get('root', data)}, {held}, {how}"
    return {"text": text, "root": recs[0].get("root"), "val_split": frac, "seeds": split_seeds, "photos": photos}
