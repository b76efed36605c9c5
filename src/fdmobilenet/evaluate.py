"""Top-1/top-5 evaluation of a folder and top-k prediction of single images."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from .data.folders import Folder
from .data.images import BadImageError, ImageDataset, collate_skip_bad, load_image
from .data.packed import PackedFolder


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent
    n: int
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of skipped files

    def as_dict(self) -> dict:
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "n": self.n, "bad": len(self.bad)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    folder: Folder,
    transform: Callable,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Accuracy of ``model`` on every readable image of ``folder``; unreadable ones are listed, not fatal."""
    loader = DataLoader(
        ImageDataset(folder.samples, transform), batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_bad
    )
    return evaluate_loader(model, loader, folder, device, progress)


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    loader: Iterable,
    folder: Folder | PackedFolder | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Same as ``evaluate`` over any loader yielding ``collate_skip_bad`` batches (``BatchDecodeLoader``'s too).

    ``folder`` (a ``Folder`` or ``PackedFolder``) names the skipped files; without it they are
    counted by index.
    """
    model.eval().to(device)
    correct1 = correct5 = n = 0
    bad: list[tuple[str, str]] = []
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="eval", unit="batch", leave=False, disable=None)
    for imgs, labels, _, bad_items in it:
        bad += [(folder.name(i) if folder is not None else f"#{i}", reason) for i, reason in bad_items]
        if imgs is None:
            continue
        logits = model(imgs.to(device))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices.cpu()
        hit = top == labels[:, None]
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(dim=1).sum().item()
        n += len(labels)
    if n == 0:
        raise ValueError("no readable images to evaluate" + (f" ({len(bad)} unreadable)" if bad else ""))
    return EvalResult(100.0 * correct1 / n, 100.0 * correct5 / n, n, bad)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] | None  # (class name, probability), best first
    error: str | None = None


@torch.no_grad()
def predict(
    model: nn.Module,
    paths: Sequence[str | Path],
    transform: Callable,
    class_names: Sequence[str],
    topk: int = 5,
) -> list[Prediction]:
    """Top-k classes of each image; an unreadable image gets ``error`` and the rest are still predicted."""
    model.eval()
    out: list[Prediction] = []
    for p in paths:
        try:
            x = transform(load_image(p))[None]
        except BadImageError as e:
            out.append(Prediction(str(p), None, e.reason))
            continue
        probs = model(x).softmax(dim=1)[0]
        k = min(topk, probs.numel())
        val, idx = probs.topk(k)
        names = [class_names[i] if i < len(class_names) else str(i) for i in idx.tolist()]
        out.append(Prediction(str(p), list(zip(names, [round(v, 6) for v in val.tolist()]))))
    return out
