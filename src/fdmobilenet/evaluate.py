"""Top-1/top-5 evaluation of a folder (plain, prepared, or a training run's validation split), optionally
with each image's top-1 (for ``classreport``) and of several models over one pass of the data, and
batched top-k prediction of image files, on any device."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ._errors import ParameterError, ParameterPathError
from ._progress import Progress
from .data.folders import Folder, scan_folder
from .data.images import ImageDataset, collate_skip_bad
from .data.packed import PackedFolder, PackedImageDataset, is_packed
from .data.splits import load_folders, read_split, relabelled


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a missing GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", f"`device` {spec}: no CUDA device is available here; use `device` cpu")
    return device


def open_eval_data(
    data: str | Path | None, class_names: Sequence[str] | None = None, split: str | Path | None = None
) -> Folder | PackedFolder:
    """What to score: an image folder, a ``prepare``d folder, or with ``split`` (a training run's folder or
    its split.json) only the validation images that run held out of ``data`` (default: the run's data).

    Labels follow ``class_names`` (the weights') by name, so a folder's own order never matters.
    """
    if split is not None:
        path = Path(split) / "split.json" if Path(split).is_dir() else Path(split)
        record = read_split(path)
        if record is None:
            raise ParameterPathError(
                "split", f"`split` {split}: no split.json (the run used a train/val layout: `data` DIR/val)"
            )
        folder = load_folders(data or record["root"], record["val_split"], record["seed"], record).val
    elif data is None:
        raise ParameterError("data", "give `data` DIR (an image folder or the output of prepare) or `split` RUN_DIR")
    elif is_packed(data):
        folder = PackedFolder.open(data)
    else:
        return scan_folder(data, class_names)
    return _relabel(folder, class_names)


def _relabel(folder: Folder | PackedFolder, class_names: Sequence[str] | None) -> Folder | PackedFolder:
    """Labels as indices into ``class_names`` (matched by name), so they agree with the model's outputs."""
    if class_names is None or list(folder.classes) == list(class_names):
        return folder
    index = {c: i for i, c in enumerate(class_names)}
    unknown = [c for c in folder.classes if c not in index]
    if unknown:
        raise ValueError(f"classes {unknown[:5]} of the data are not among the {len(index)} the weights know")
    return relabelled(folder, list(class_names), np.array([index[c] for c in folder.classes], dtype=np.int64))


def eval_dataset(folder: Folder | PackedFolder, transform: Callable) -> torch.utils.data.Dataset:
    if isinstance(folder, PackedFolder):
        return PackedImageDataset(folder, transform)
    return ImageDataset(folder.samples, transform)


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent
    n: int
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of skipped files
    correct1: int = 0  # the counts behind top1/top5, which processes of a run add up
    correct5: int = 0
    # with ``keep_preds``: per scored image, in dataset-index order, its index, true class and top-1 class
    index: np.ndarray | None = None
    targets: np.ndarray | None = None
    preds: np.ndarray | None = None

    def as_dict(self) -> dict:
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "n": self.n, "bad": len(self.bad)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    folder: Folder | PackedFolder,
    transform: Callable,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    keep_preds: bool = False,
) -> EvalResult:
    """Accuracy of ``model`` on every readable image of ``folder``; unreadable ones are listed, not fatal.
    ``keep_preds`` also returns each image's target and top-1 class (for ``classreport``)."""
    loader = DataLoader(
        eval_dataset(folder, transform),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        pin_memory=torch.device(device).type == "cuda",
    )
    return evaluate_loader(model, loader, folder, device, progress, keep_preds)


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    loader: Iterable,
    folder: Folder | PackedFolder | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    keep_preds: bool = False,
) -> EvalResult:
    """Same as ``evaluate`` over any loader yielding ``collate_skip_bad`` batches (``BatchDecodeLoader``'s too).

    ``folder`` (a ``Folder`` or ``PackedFolder``) names the skipped files; without it they are
    counted by index.
    """
    return evaluate_models({"model": model}, loader, folder, device, progress, keep_preds)["model"]


@torch.no_grad()
def evaluate_models(
    models: Mapping[str, nn.Module],
    loader: Iterable,
    folder: Folder | PackedFolder | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    keep_preds: bool = False,
) -> dict[str, EvalResult]:
    """``evaluate_loader`` of several models over one pass of ``loader``: each batch is decoded once and
    every model scores it (training validates its EMA and raw weights so). Results by the same names."""
    if not models:
        raise ParameterError("models", "`models` is empty: give at least one model to evaluate")
    for m in models.values():
        m.eval().to(device)
    c1 = dict.fromkeys(models, 0)
    c5 = dict.fromkeys(models, 0)
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    idxs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    n = 0
    bad: list[tuple[str, str]] = []
    bar = Progress(_len(loader), "eval", "batch", enabled=progress)
    for imgs, labels, idx, bad_items in loader:
        bar.update()
        bad += [(folder.name(i) if folder is not None else f"#{i}", reason) for i, reason in bad_items]
        if imgs is None:
            continue
        imgs, labels = imgs.to(device), labels.cpu()
        for name, model in models.items():
            logits = model(imgs)
            k = min(5, logits.shape[1])
            # a stable sort, not topk: quantized logits tie exactly, and then the lower index wins, as in argmax
            top = logits.sort(dim=1, descending=True, stable=True).indices[:, :k].cpu()
            hit = top == labels[:, None]
            c1[name] += int(hit[:, 0].sum())
            c5[name] += int(hit.any(dim=1).sum())
            if keep_preds:
                kept[name].append(top[:, 0])
        if keep_preds:
            idxs.append(torch.as_tensor(idx).cpu())
            targets.append(labels)
        n += len(labels)
    bar.close()
    if n == 0:
        raise ValueError("no readable images to evaluate" + (f" ({len(bad)} unreadable)" if bad else ""))
    results = {}
    order = index = target = None
    if keep_preds:
        index = torch.cat(idxs).numpy().astype(np.int64)
        order = np.argsort(index, kind="stable")
        index, target = index[order], torch.cat(targets).numpy().astype(np.int64)[order]
    for name in models:
        r = EvalResult(100.0 * c1[name] / n, 100.0 * c5[name] / n, n, list(bad), c1[name], c5[name])
        if keep_preds:
            r.index, r.targets = index, target
            r.preds = torch.cat(kept[name]).numpy().astype(np.int64)[order]
        results[name] = r
    return results


def _len(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] | None  # (class name, probability), best first
    error: str | None = None
    index: list[int] | None = None  # the class indices of ``top``


@torch.no_grad()
def predict(
    model: nn.Module,
    paths: Sequence[str | Path],
    transform: Callable,
    class_names: Sequence[str],
    topk: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[Prediction]:
    """Top-k classes of each image, in order, batched on ``device``; an unreadable image gets ``error``
    and the rest are still predicted. A generator, so a large folder streams to its output."""
    model.eval().to(device)
    samples = [(Path(p), -1) for p in paths]
    loader = DataLoader(
        ImageDataset(samples, transform), batch_size=batch_size, num_workers=workers, collate_fn=_collate_all
    )
    for imgs, idx, bad in loader:
        done: dict[int, Prediction] = {i: Prediction(str(samples[i][0]), None, reason) for i, reason in bad}
        if imgs is not None:
            probs = model(imgs.to(device)).float().softmax(dim=1).cpu()
            val, top = probs.topk(min(topk, probs.shape[1]), dim=1)
            for i, v, t in zip(idx.tolist(), val.tolist(), top.tolist()):
                names = [class_names[c] if c < len(class_names) else str(c) for c in t]
                done[i] = Prediction(str(samples[i][0]), list(zip(names, [round(p, 6) for p in v])), index=t)
        yield from (done[i] for i in sorted(done))


def _collate_all(batch):
    imgs, _, idx, bad = collate_skip_bad(batch)
    return imgs, idx, bad
