"""Prepared datasets (``fdmobilenet prepare``): re-encode an image folder once into resized JPEG shards.

ImageNet photos average ~110 KB and 400x350 px; a tiny network at 224 px needs neither. Resizing
the shorter side to 256 and packing the JPEGs into a few large files makes every later epoch
decode ~2x fewer pixels and read sequentially. Layout of DST:

    meta.json                 classes, settings, shard list (written last: its presence = complete)
    shard-00000.bin           concatenated JPEG bytes
    shard-00000.idx.npy       int64 rows (offset, length, label) per image
    bad.json                  files that could not be decoded, with reasons

Each shard is written atomically, so an interrupted run resumes by skipping finished shards.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .. import _schema
from .._errors import ParameterError
from .._utils import atomic_write_bytes, remove_orphan_temps
from .folders import Folder, scan_folder
from .images import BadImageError, load_image

FORMAT = "fdmobilenet-packed-v1"


def _encode(path: Path, short_side: int, quality: int) -> bytes:
    img = load_image(path, draft_size=short_side)
    w, h = img.size
    if min(w, h) > short_side:
        s = short_side / min(w, h)
        img = img.resize((max(short_side, int(w * s)), max(short_side, int(h * s))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_shard(
    dst: Path, shard: int, samples: list[tuple[str, int]], short_side: int, quality: int
) -> list[tuple[str, str]]:
    """Encode one shard's images; return the (path, reason) of those skipped."""
    blobs, rows, bad, offset = [], [], [], 0
    for path, label in samples:
        try:
            data = _encode(Path(path), short_side, quality)
        except BadImageError as e:
            bad.append((path, e.reason))
            continue
        blobs.append(data)
        rows.append((offset, len(data), label))
        offset += len(data)
    idx = io.BytesIO()
    np.save(idx, np.asarray(rows, dtype=np.int64).reshape(-1, 3))
    atomic_write_bytes(dst / f"shard-{shard:05d}.bin", b"".join(blobs))
    # the index is written after the data: an index on disk means its shard is complete
    atomic_write_bytes(dst / f"shard-{shard:05d}.idx.npy", idx.getvalue())
    atomic_write_bytes(dst / f"shard-{shard:05d}.bad.json", json.dumps(bad).encode())
    return bad


def prepare(
    src: str | Path,
    dst: str | Path,
    short_side: int = 256,
    quality: int = 90,
    shards: int = 0,
    workers: int = 0,
    progress: bool = True,
) -> dict:
    """Pack ``src`` (``<class>/<image>`` folders) into ``dst``; resumable; returns the metadata."""
    if short_side < 32:
        raise ParameterError("short_side", f"`short_side` must be >= 32, got {short_side}")
    if not 1 <= quality <= 100:
        raise ParameterError("quality", f"`quality` must be in 1..100, got {quality}")
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst} is a file; give a folder for the shards (new, or a partial prepare to resume)")
    folder = scan_folder(src)
    if dst.is_dir() and not (dst / "plan.json").is_file() and not is_packed(dst):
        theirs = sorted(p.name for p in dst.iterdir())
        if theirs:
            raise ValueError(
                f"{dst} holds files `prepare` did not write (e.g. {_schema.printable(theirs[0])[:60]}); give a new "
                "or empty folder (or a partial prepare to resume)"
            )
    dst.mkdir(parents=True, exist_ok=True)
    remove_orphan_temps(dst)  # of a killed prepare; re-running one into the same DST at once is not supported
    n_shards = shards or max(1, min(1024, len(folder.samples) // 2000))
    rng = np.random.default_rng(0)  # images of all classes in every shard, same order on every resume
    order = rng.permutation(len(folder.samples))
    settings = {"short_side": short_side, "quality": quality, "shards": n_shards, "n_files": len(folder.samples)}
    plan_file = dst / "plan.json"
    if plan_file.exists() and _schema.read_json(plan_file, 2**16, "plan.json") != settings:
        raise ValueError(
            f"{dst} holds a partial prepare with other settings ({plan_file.read_text()}); use another DST or delete it"
        )
    atomic_write_bytes(plan_file, json.dumps(settings).encode())
    parts = [order[i::n_shards] for i in range(n_shards)]
    todo = [i for i in range(n_shards) if not (dst / f"shard-{i:05d}.idx.npy").exists()]
    jobs = {i: [(str(folder.samples[j][0]), folder.samples[j][1]) for j in parts[i]] for i in todo}
    bar = None
    if progress:
        from .._progress import Progress

        bar = Progress(sum(len(v) for v in jobs.values()), "prepare", "img", leave=True)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers) as pool:
            futs = {pool.submit(write_shard, dst, i, jobs[i], short_side, quality): i for i in todo}
            for fut in as_completed(futs):
                fut.result()
                if bar:
                    bar.update(len(jobs[futs[fut]]))
    else:
        for i in todo:
            write_shard(dst, i, jobs[i], short_side, quality)
            if bar:
                bar.update(len(jobs[i]))
    if bar:
        bar.close()
    bad = [b for i in range(n_shards) for b in json.loads((dst / f"shard-{i:05d}.bad.json").read_text())]
    meta = {
        "format": FORMAT,
        "classes": folder.classes,
        **settings,
        "n_images": int(sum(np.load(dst / f"shard-{i:05d}.idx.npy").shape[0] for i in range(n_shards))),
        "bad": len(bad),
    }
    atomic_write_bytes(dst / "bad.json", json.dumps(bad, indent=1).encode())
    atomic_write_bytes(dst / "meta.json", json.dumps(meta, indent=1).encode())
    return meta


def is_packed(path: str | Path) -> bool:
    """Whether ``path`` is a complete prepared dataset: its meta.json says our format. A meta.json of
    another program's (any other JSON object) is not ours; one that is not a JSON object, or says our
    format with content we would not write, is an error naming it."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    raw = _schema.read_json(meta, 64 * 2**20, "prepared dataset's meta.json")
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        _schema.packed_meta(raw, meta)
        return True
    return False


def read_meta(root: Path) -> dict:
    """A prepared dataset's meta.json, checked (``_schema.packed_meta``)."""
    path = root / "meta.json"
    return _schema.packed_meta(_schema.read_json(path, 64 * 2**20, "prepared dataset's meta.json"), path)


def _load_index(path: Path, n_classes: int, shard_size: int) -> np.ndarray:
    """A shard's index rows, checked: (N, 3) int64, labels among the classes, every row inside its shard.
    Its size is bounded by the shard's (a row per image of at least a few bytes) before it is read."""
    if path.stat().st_size > 1024 + 24 * (shard_size + 1):
        raise _schema.fail(path, f"{path.stat().st_size:,} bytes of index for a {shard_size:,}-byte shard; damaged")
    try:
        rows = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        why = _schema.printable(str(e))[:120]
        raise _schema.fail(path, f"not a shard index ({why}); the prepared data is damaged") from None
    return _schema.shard_index(rows, path, n_classes, shard_size)


@dataclass
class PackedFolder:
    """A prepared dataset opened for reading: memory-mapped shards, (shard, offset, length, label) rows."""

    root: Path
    classes: list[str]
    rows: np.ndarray  # (N, 4) int64: shard, offset, length, label
    _maps: list[np.memmap]

    @classmethod
    def open(cls, root: str | Path) -> PackedFolder:
        root = Path(root)
        if not is_packed(root):
            raise ValueError(f"{root} is not a complete prepared dataset (no meta.json); run `fdmobilenet prepare`")
        meta = read_meta(root)
        rows, maps = [], []
        for i in range(meta["shards"]):
            size = (root / f"shard-{i:05d}.bin").stat().st_size
            idx = _load_index(root / f"shard-{i:05d}.idx.npy", len(meta["classes"]), size)
            rows.append(np.concatenate([np.full((len(idx), 1), i, dtype=np.int64), idx], 1))
            maps.append(
                np.memmap(root / f"shard-{i:05d}.bin", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
            )
        return cls(root, meta["classes"], np.concatenate(rows), maps)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        return self.rows[:, 3]

    def subset(self, indices: Sequence[int]) -> PackedFolder:
        """The images at ``indices`` (a train or validation split), sharing the open shards."""
        return PackedFolder(self.root, self.classes, self.rows[np.asarray(indices, dtype=np.int64)], self._maps)

    def name(self, i: int) -> str:
        shard, off = self.rows[i, :2]
        return f"{self.root}/shard-{shard:05d}.bin@{off}"

    def label(self, i: int) -> int:
        return int(self.rows[i, 3])

    def read_bytes(self, i: int) -> bytes:
        shard, off, length, _ = self.rows[i]
        return self._maps[shard][off : off + length].tobytes()

    def decode(self, i: int, draft_size: int | None = None) -> Image.Image:
        """The image as RGB, with ``load_image``'s checks (``BadImageError`` names the shard and offset)."""
        return load_image(self.name(i), draft_size, data=self.read_bytes(i))

    def bad_files(self) -> list[tuple[str, str]]:
        """(original path, reason) of the files ``prepare`` could not decode and left out."""
        f = self.root / "bad.json"
        return [tuple(b) for b in json.loads(f.read_text())] if f.is_file() else []


class PackedImageDataset(Dataset):
    """``ImageDataset`` over prepared shards: (tensor, label, index, None) or (None, label, index, reason)."""

    def __init__(self, packed: PackedFolder, transform: Callable, draft_size: int | None = None):
        self.packed, self.transform, self.draft_size = packed, transform, draft_size

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i: int):
        try:
            img = self.packed.decode(i, self.draft_size)
        except BadImageError as e:
            return None, self.packed.label(i), i, e.reason
        return self.transform(img), self.packed.label(i), i, None


__all__ = ["Folder", "PackedFolder", "PackedImageDataset", "is_packed", "prepare"]
