"""A loader that decodes and augments whole batches on the training device (``train --loader gpu``).

CPU workers only read file bytes; ``torchvision.io.decode_jpeg`` decodes the batch (on the GPU
with ``device='cuda'``, nvJPEG), and ``roi_align`` does RandomResizedCrop (or the evaluation
center crop) for every image at once, one call per group of similar sizes. Files that are not
JPEG or fail to decode fall back to PIL on the CPU, one by one, with the same bad-image accounting
as the regular loader.
``Prefetcher`` runs all of that one or two batches ahead of the training step, on its own CUDA
stream. The same code runs on CPU, which is how it is tested here.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from .._utils import mix
from .augment import center_boxes, crop_resize, normalize, random_flip, rrc_boxes
from .folders import Folder
from .images import BadImageError, load_image
from .packed import PackedFolder

_JPEG_MAGIC = b"\xff\xd8\xff"
Batch = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, list[tuple[int, str]]]


class _Bytes(Dataset):
    """Raw file bytes and label of each sample: all the CPU workers do."""

    def __init__(self, source: Folder | PackedFolder):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[bytes, int, int]:
        return self.source.read_bytes(i), self.source.label(i), i


def _collate(batch: list[tuple[bytes, int, int]]) -> tuple[list[bytes], torch.Tensor, list[int]]:
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch]), [b[2] for b in batch]


class BatchDecodeLoader:
    """Iterate ``(images, labels, indices, bad)`` batches, images already normalised on ``device``.

    The batch format is ``data.collate_skip_bad``'s, so training and ``evaluate_loader`` take
    either loader: ``bad`` lists ``(index, reason)`` of files that were skipped, and a batch with
    no readable image is ``(None, None, None, bad)``.

    ``train=True``: RandomResizedCrop(``scale``) + flip; ``train=False``: resize to
    size/crop_pct + center crop, as a box. ``indices`` fixes the order (for exact resume);
    the crops of batch ``k`` are drawn from a generator seeded by (``seed``, ``epoch``,
    ``first_batch + k``), so they do not depend on workers, prefetching or where a run resumed.
    """

    def __init__(
        self,
        source: Folder | PackedFolder,
        batch_size: int,
        size: int,
        device: str | torch.device = "cpu",
        train: bool = True,
        scale: Sequence[float] = (0.08, 1.0),
        crop_pct: float = 0.875,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        hflip: bool = True,
        workers: int = 0,
        indices: Sequence[int] | None = None,
        seed: int = 0,
        epoch: int = 0,
        first_batch: int = 0,
        worker_init_fn: Any = None,
    ):
        self.source, self.size, self.device, self.train = source, size, torch.device(device), train
        self.scale, self.crop_pct, self.mean, self.std = tuple(scale), crop_pct, tuple(mean), tuple(std)
        self.flip_p = 0.5 if hflip else 0.0
        self.seed, self.epoch, self.first_batch = seed, epoch, first_batch
        ds = _Bytes(source)
        order = list(indices) if indices is not None else list(range(len(ds)))
        self.loader = DataLoader(
            torch.utils.data.Subset(ds, order),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=False,  # bytes, not tensors: nothing to pin
            worker_init_fn=worker_init_fn,
            prefetch_factor=4 if workers else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def decode(self, blobs: list[bytes], idx: list[int]) -> tuple[list[torch.Tensor], list[int], list[tuple[int, str]]]:
        """Decode a batch: JPEGs together on the device, the rest (or failures) with PIL one by one.

        Returns the decoded images, the batch positions they came from, and ``(index, reason)``
        of the files that could not be used.
        """
        out: list[torch.Tensor | None] = [None] * len(blobs)
        bad: list[tuple[int, str]] = []
        jpeg = [k for k, b in enumerate(blobs) if b[:3] == _JPEG_MAGIC]
        if jpeg:
            datas = [torch.frombuffer(bytearray(blobs[k]), dtype=torch.uint8) for k in jpeg]
            try:
                decoded: list[torch.Tensor | None] = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad JPEG fails the batched call: retry each on the device
                decoded = [self._decode_one(d) for d in datas]
            for k, img in zip(jpeg, decoded, strict=True):
                out[k] = img
        for k in range(len(blobs)):
            if out[k] is not None:
                continue
            try:  # PIL from the bytes in hand, with load_image's checks (empty, truncated, bombs, 16-bit)
                img = load_image(self.source.name(idx[k]), data=blobs[k])
                out[k] = torch.from_numpy(np.array(img)).permute(2, 0, 1).to(self.device)
            except BadImageError as e:
                bad.append((idx[k], e.reason))
        keep = [k for k in range(len(blobs)) if out[k] is not None]
        return [out[k] for k in keep], keep, bad  # type: ignore[misc]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            return None  # PIL gets it next, and names the problem if it fails too

    def transform(self, images: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Crop-and-resize every image of a ragged batch: one ``roi_align`` call per group of similar sizes.

        One canvas for the whole batch would be batch x the largest photo (a single 2000 px image
        in an ImageNet batch of 512 makes it 6 GB), so the images are grouped by size first
        (``size_groups``); typically a few calls per batch.
        """
        heights, widths = [im.shape[1] for im in images], [im.shape[2] for im in images]
        hs, ws = torch.tensor(heights, dtype=torch.float64), torch.tensor(widths, dtype=torch.float64)
        if self.train:
            boxes = rrc_boxes(hs, ws, self.scale, generator=generator)
        else:
            boxes = center_boxes(hs, ws, self.crop_pct)
        x = torch.empty(len(images), 3, self.size, self.size, device=self.device)
        for group in size_groups(heights, widths):
            at = torch.tensor(group, device=self.device)
            x[at] = crop_resize(_canvas([images[k] for k in group]), boxes[group], self.size)
        if self.train:
            x = random_flip(x, self.flip_p, generator)
        return normalize(x, self.mean, self.std)

    def __iter__(self) -> Iterator[Batch]:
        # the DataLoader's workers start here, in the caller's thread, not in a prefetch thread
        return self._batches(iter(self.loader))

    def _batches(self, loader: Iterator) -> Iterator[Batch]:
        for k, (blobs, labels, idx) in enumerate(loader):
            images, keep, bad = self.decode(blobs, idx)
            if not images:
                yield None, None, None, bad
                continue
            gen = torch.Generator().manual_seed(mix(self.seed, self.epoch, self.first_batch + k))
            kept = torch.tensor([idx[j] for j in keep], dtype=torch.long)
            yield self.transform(images, gen), labels[keep].to(self.device, non_blocking=True), kept, bad


def size_groups(heights: list[int], widths: list[int], slack: float = 1.5) -> list[list[int]]:
    """Positions of a ragged batch in groups whose padded canvas (count x max height x max width)
    holds at most ``slack`` times their own pixels; sorted by shape, so a batch of a few common
    shapes (ImageNet: mostly 500x375 and 375x500) makes a few groups."""
    order = sorted(range(len(heights)), key=lambda k: (heights[k], widths[k]))
    groups: list[list[int]] = []
    current: list[int] = []
    pixels = max_h = max_w = 0
    for k in order:
        h, w = max(max_h, heights[k]), max(max_w, widths[k])
        if current and (len(current) + 1) * h * w > slack * (pixels + heights[k] * widths[k]):
            groups.append(current)
            current, pixels, h, w = [], 0, heights[k], widths[k]
        current.append(k)
        pixels += heights[k] * widths[k]
        max_h, max_w = h, w
    return [*groups, current] if current else groups


def _canvas(images: list[torch.Tensor]) -> torch.Tensor:
    """Images of different sizes in one (N, C, H, W) tensor, each padded by repeating its edge pixels:
    roi_align's bilinear samples within half a pixel of an image's right or bottom edge then see the
    edge itself (as at the canvas border), not black. One pad kernel per image, one stack."""
    h_max, w_max = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    pad = lambda im: F.pad(im, (0, w_max - im.shape[2], 0, h_max - im.shape[1]), mode="replicate")
    return torch.stack([pad(im) if im.shape[1:] != (h_max, w_max) else im for im in images])


class Prefetcher:
    """Iterate ``batches`` in a background thread, ``depth`` batches ahead of the consumer.

    The producer's GPU work (decode, crop) runs on a CUDA stream of its own, so it overlaps the
    training step's kernels; each batch carries an event the consumer's stream waits on before
    using it. On CPU the thread still overlaps reading and decoding with the step. Errors in the
    producer are raised in the consumer; ``close()`` (or leaving a ``with`` block) stops it early.
    """

    _END = object()

    def __init__(self, batches: Iterable[Any], device: str | torch.device = "cpu", depth: int = 2):
        self.batches, self.device, self.depth = batches, torch.device(device), depth
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _produce(self, source: Iterator[Any]) -> None:
        cuda = self.device.type == "cuda"
        try:
            if cuda:
                torch.cuda.set_device(self.device)  # the current device is per thread
            stream = torch.cuda.Stream(self.device) if cuda else None
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                for item in source:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if not self._put((item, event)):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put((e, None))
            return
        self._put((self._END, None))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        self.close()  # one producer at a time; iterating again (each validation) starts afresh
        self._queue, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
        source = iter(self.batches)  # worker processes fork from this thread, not the producer
        self._thread = threading.Thread(target=self._produce, args=(source,), daemon=True, name="fdm-prefetch")
        self._thread.start()
        try:
            while True:
                item, event = self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    parts = item if isinstance(item, tuple | list) else (item,)
                    for t in parts:  # the allocator must not reuse these until the consumer's stream is done
                        if isinstance(t, torch.Tensor) and t.is_cuda:
                            t.record_stream(current)
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
