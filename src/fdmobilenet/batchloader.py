"""A loader that decodes and augments whole batches on the training device.

CPU workers only read file bytes; ``torchvision.io.decode_jpeg`` decodes the batch (on the GPU
with ``device='cuda'``, nvJPEG), and one ``roi_align`` call does RandomResizedCrop (or the
evaluation center crop) for every image at once. Files that are not JPEG or fail to decode fall
back to PIL on the CPU, one by one, with the same bad-image accounting as the regular loader.
The same code runs on CPU, which is how it is tested here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from .augment import center_boxes, crop_resize, normalize, random_flip, rrc_boxes
from .data import BadImageError, Folder, load_image
from .packed import PackedFolder

_JPEG_MAGIC = b"\xff\xd8\xff"


class _Bytes(Dataset):
    """Raw file bytes and label of each sample: all the CPU workers do."""

    def __init__(self, source: Folder | PackedFolder):
        self.source = source

    def __len__(self) -> int:
        return len(self.source.samples) if isinstance(self.source, Folder) else len(self.source)

    def __getitem__(self, i: int):
        if isinstance(self.source, Folder):
            path, label = self.source.samples[i]
            try:
                data = Path(path).read_bytes()
            except OSError:
                data = b""
            return data, int(label), i
        return self.source.read_bytes(i), int(self.source.rows[i, 3]), i


def _collate(batch):
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch]), [b[2] for b in batch]


class BatchDecodeLoader:
    """Iterate ``(images, labels, bad)`` with images already normalised on ``device``.

    ``train=True``: RandomResizedCrop(``scale``) + flip; ``train=False``: resize to
    size/crop_pct + center crop, as a box. ``indices`` fixes the order (for exact resume).
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
        workers: int = 0,
        indices: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ):
        self.source, self.size, self.device, self.train = source, size, torch.device(device), train
        self.scale, self.crop_pct, self.mean, self.std = tuple(scale), crop_pct, tuple(mean), tuple(std)
        self.generator = generator
        ds = _Bytes(source)
        order = list(indices) if indices is not None else list(range(len(ds)))
        self.loader = DataLoader(
            torch.utils.data.Subset(ds, order),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def _path(self, i: int) -> str:
        return str(self.source.samples[i][0]) if isinstance(self.source, Folder) else f"{self.source.root}#{i}"

    def decode(self, blobs: list[bytes], idx: list[int]) -> tuple[list[torch.Tensor], list[int], list[tuple[str, str]]]:
        """Decode a batch: JPEGs together on the device, the rest (or failures) with PIL one by one."""
        out: list[torch.Tensor | None] = [None] * len(blobs)
        bad: list[tuple[str, str]] = []
        jpeg = [k for k, b in enumerate(blobs) if b[:3] == _JPEG_MAGIC]
        if jpeg:
            datas = [torch.frombuffer(bytearray(blobs[k]), dtype=torch.uint8) for k in jpeg]
            try:
                decoded = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
                for k, img in zip(jpeg, decoded, strict=True):
                    out[k] = img
            except RuntimeError:
                pass  # one bad JPEG fails the batched call: decode them one by one below
        for k in range(len(blobs)):
            if out[k] is not None:
                continue
            try:
                if not blobs[k]:
                    raise BadImageError(self._path(idx[k]), "empty or unreadable file")
                if isinstance(self.source, Folder):
                    img = load_image(self.source.samples[idx[k]][0])
                else:
                    import io

                    from PIL import Image

                    img = Image.open(io.BytesIO(blobs[k])).convert("RGB")
                out[k] = torch.from_numpy(np.array(img)).permute(2, 0, 1).to(self.device)
            except (BadImageError, OSError, ValueError) as e:
                bad.append((self._path(idx[k]), getattr(e, "reason", str(e))))
        keep = [k for k in range(len(blobs)) if out[k] is not None]
        return [out[k] for k in keep], keep, bad

    def transform(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Crop-and-resize every image of a ragged batch in one call: pad to the largest, box each."""
        hs = torch.tensor([im.shape[1] for im in images], dtype=torch.float64)
        ws = torch.tensor([im.shape[2] for im in images], dtype=torch.float64)
        batch = torch.zeros(len(images), 3, int(hs.max()), int(ws.max()), dtype=torch.uint8, device=self.device)
        for k, im in enumerate(images):
            batch[k, :, : im.shape[1], : im.shape[2]] = im
        if self.train:
            boxes = rrc_boxes(hs, ws, self.scale, generator=self.generator)
            x = random_flip(crop_resize(batch, boxes, self.size), 0.5, self.generator)
        else:
            x = crop_resize(batch, center_boxes(hs, ws, self.crop_pct), self.size)
        return normalize(x, self.mean, self.std)

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None, list[tuple[str, str]]]]:
        for blobs, labels, idx in self.loader:
            images, keep, bad = self.decode(blobs, idx)
            if not images:
                yield None, None, bad
                continue
            yield self.transform(images), labels[keep].to(self.device, non_blocking=True), bad
