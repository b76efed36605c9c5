"""Every detection's VOC outcome with the image it came from, kept apart from ``detection_metrics``'s meter:
a significance test between two detectors (``train.verdicts``) resamples the images and recomputes mAP@0.5
from these alone, thousands of times, without the model or the boxes; ``save``/``load`` carry them between
the ``compare`` run that scored them and the verdict. numpy only.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import ParameterError
from ._utils import atomic_write_bytes

_CELLS = 4_000_000  # weights x detections held at once by ``ImageOutcomes.map50`` (about 32 MB per array)


@dataclass
class ImageOutcomes:
    """The VOC outcome of every detection of an evaluation, with the image it belongs to: enough to recompute
    mAP@0.5 (all-point) over any resample of the images, as if each image were present ``weights[i]`` times.

    ``n_gt`` [images, K]: non-difficult ground-truth boxes per image and class; per kept detection (ignored
    ones, on difficult boxes, are dropped): ``image`` index, ``label`` 1..K, ``score`` and ``tp``."""

    n_gt: np.ndarray
    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    _by_class: list[tuple[np.ndarray, np.ndarray]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_images(self) -> int:
        return len(self.n_gt)

    def _ranked(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per class: the image of each of its detections best first (images in order among equal scores, as
        ``DetectionMeter.compute``), cut after the last true positive (later ones never raise recall or the
        precision envelope), and the positions of the true positives in that ranking."""
        if self._by_class is not None:
            return self._by_class
        out = []
        for c in range(1, self.n_gt.shape[1] + 1):
            mine = np.flatnonzero(self.label == c)
            ranked = mine[np.argsort(-self.score[mine], kind="stable")]
            hits = np.flatnonzero(self.tp[ranked])
            ranked = ranked[: hits[-1] + 1 if len(hits) else 0]
            out.append((self.image[ranked], hits))
        self._by_class = out
        return out

    def map50(self, weights: Any | None = None) -> np.ndarray:
        """All-point VOC mAP@0.5 (percent) for each row of ``weights`` [S, images] (how often each image is
        counted; None: each once, giving [1] equal to ``DetectionMeter.compute().map50``). Classes without
        ground truth under a weighting are left out of its mean, as ``compute`` does; NaN when none has any."""
        w_all = np.ones((1, self.n_images)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w_all.ndim != 2 or w_all.shape[1] != self.n_images:
            raise ParameterError("weights", f"`weights` must be [S, {self.n_images}], not {list(w_all.shape)}")
        k = self.n_gt.shape[1]
        aps = np.full((len(w_all), k), np.nan)
        npos = w_all @ self.n_gt  # [S, K]
        for c, (img, hit) in enumerate(self._ranked(), start=1):
            step = max(1, _CELLS // max(1, len(img)))
            for s0 in range(0, len(w_all), step):
                n = npos[s0 : s0 + step, c - 1]
                if len(hit) == 0:
                    ap = np.zeros(len(n))
                else:
                    # each detection counts as often as its image; precision and recall move only at true positives
                    w = w_all[s0 : s0 + step].astype(np.float32)[:, img]
                    dets = np.cumsum(w, axis=1)[:, hit]
                    w_tp = w[:, hit]
                    tps = np.cumsum(w_tp, axis=1)
                    precision = np.divide(tps, dets, out=np.zeros_like(tps), where=dets > 0)
                    env = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
                    ap = np.divide((w_tp * env).sum(axis=1, dtype=np.float64), n, out=np.zeros(len(n)), where=n > 0)
                aps[s0 : s0 + step, c - 1] = np.where(n > 0, 100 * ap, np.nan)
        defined = ~np.isnan(aps)
        total = np.where(defined, aps, 0.0).sum(axis=1)
        count = defined.sum(axis=1)
        return np.divide(total, count, out=np.full(len(w_all), np.nan), where=count > 0)

    def save(self, path: str | os.PathLike, names: Sequence[str] | None = None) -> None:
        """An ``.npz`` (atomically), with the images' ``names`` (what pairs two models' outcomes) when given."""
        buf = io.BytesIO()
        extra = {} if names is None else {"names": np.asarray([str(n) for n in names])}
        np.savez_compressed(
            buf, n_gt=self.n_gt, image=self.image, label=self.label, score=self.score, tp=self.tp, **extra
        )  # fmt: skip
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[ImageOutcomes, list[str] | None]:
        """What ``save`` wrote, and the image names (None when it had none)."""
        with np.load(path, allow_pickle=False) as z:
            out = cls(z["n_gt"], z["image"], z["label"], z["score"], z["tp"].astype(bool))
            names = [str(n) for n in z["names"]] if "names" in z.files else None
        return out, names
