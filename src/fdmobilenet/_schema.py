"""Checks for structured data read from a user's file, before anything acts on it.

Every file the package reads back (weights metadata, a prepared dataset's ``meta.json`` and shard
indexes, a run's ``split.json`` and ``config.json``, recipe YAML) may have been edited, damaged or
crafted. The readers pass what they parsed through these small typed checks: a wrong type, a value
out of bounds, a string with control characters or a list far longer than any real file holds is a
``FileError`` (a ValueError: the command line exits 2) that names the file and quotes at most a short
excerpt of the value, never its whole ``repr`` (an alias bomb expands to gigabytes). Bounds are checked
before anything is allocated from them. Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import unicodedata
from pathlib import Path
from typing import Any

MAX_TEXT = 200  # a class name, a model name: longer is not a name
MAX_PATH_TEXT = 4096  # a path recorded in a file
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; no classifier here has more than this
MAX_LIST = 10_000_000  # file names recorded in split.json (ImageNet's 1.28 M, with room)
MAX_JSON_BYTES = 256 * 2**20  # a metadata/record file: split.json of ImageNet is ~30 MB
MAX_SHARDS = 100_000
MAX_KWARGS = 16  # model_kwargs entries
MAX_WIDTH = 16.0  # width multiplier: 16x the paper's widest already needs >10 GB of weights
MAX_GROUPS = 64

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40
_SHORT.maxtuple = _SHORT.maxset = _SHORT.maxfrozenset = _SHORT.maxdeque = _SHORT.maxarray = 4
_SHORT.maxlong = 40


class FileError(ValueError):
    """A file's content cannot be used; the message names the file (and the key) and says what was expected."""


def excerpt(value: Any, limit: int = 80) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` printable characters, whatever its size or nesting."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # a broken __repr__ or a pathological value
        text = f"<{type(value).__name__}>"
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    """``text`` without control or format characters (escapes, newlines, bidi overrides): shown as data."""
    return "".join(" " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C")


def fail(source: str | os.PathLike, message: str) -> FileError:
    return FileError(f"{source}: {message}")


def _where(key: str) -> str:
    return f"'{key}'" if key else "the content"


def mapping(value: Any, source: str | os.PathLike, key: str = "", what: str = "") -> dict[str, Any]:
    """``value`` as a dict with string keys."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        expected = what or "a JSON object"
        raise fail(source, f"{_where(key)} must be {expected}, got {type(value).__name__} {excerpt(value, 40)}")
    return value


def integer(value: Any, source: str | os.PathLike, key: str, lo: int, hi: int) -> int:
    """A whole number in ``lo..hi`` (a float that is whole, as JSON writers may give, is accepted)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise fail(source, f"{_where(key)} must be a whole number in {lo}..{hi}, got {excerpt(value, 40)}")
    return value


def _finite(value: Any) -> bool:
    """A real number (not a bool) that fits a float and is not NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        return False


def number(value: Any, source: str | os.PathLike, key: str, lo: float, hi: float, lo_open: bool = False) -> float:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if not _finite(value) or not (lo < value if lo_open else lo <= value) or value > hi:
        where = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise fail(source, f"{_where(key)} must be a finite number in {where}, got {excerpt(value, 40)}")
    return float(value)


def text(value: Any, source: str | os.PathLike, key: str, max_len: int = MAX_TEXT, empty: bool = False) -> str:
    """A string of printable characters (no control, escape or format characters) of at most ``max_len``."""
    if not isinstance(value, str):
        raise fail(source, f"{_where(key)} must be a string, got {type(value).__name__} {excerpt(value, 40)}")
    if len(value) > max_len or (not value and not empty):
        raise fail(source, f"{_where(key)} must be 1..{max_len} characters, got {len(value)}: {excerpt(value, 40)}")
    if printable(value) != value:
        raise fail(source, f"{_where(key)} holds control characters (escapes, newlines): {excerpt(value, 60)}")
    return value


def text_list(
    value: Any, source: str | os.PathLike, key: str, max_items: int, max_len: int = MAX_TEXT, unique: bool = False
) -> list[str]:
    """A list of ``text`` strings, at most ``max_items`` of them."""
    if not isinstance(value, list):
        raise fail(source, f"{_where(key)} must be a list of strings, got {type(value).__name__} {excerpt(value, 40)}")
    if len(value) > max_items:
        raise fail(source, f"{_where(key)} lists {len(value)} entries, more than the {max_items} allowed")
    for i, v in enumerate(value):
        text(v, source, f"{key}[{i}]", max_len)
    if unique and len(set(value)) != len(value):
        seen: set[str] = set()
        dup = next(v for v in value if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise fail(source, f"{_where(key)} names {excerpt(dup, 60)} twice")
    return value


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES, what: str = "") -> Any:
    """The JSON value of a file, or a FileError naming it (too large, not UTF-8, not JSON, nested too deep)."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise fail(path, f"{size:,} bytes, more than any {what or 'such file'} needs ({max_bytes:,}); not ours")
    try:
        return parse_json(path.read_bytes().decode("utf-8"), path)
    except UnicodeDecodeError as e:
        raise fail(path, f"not UTF-8 text ({e.reason} at byte {e.start}); the file is damaged") from None


def parse_json(raw: str, source: str | os.PathLike) -> Any:
    """``json.loads`` with errors that name ``source`` (deep nesting included)."""
    try:
        return json.loads(raw)
    except ValueError as e:
        raise fail(source, f"not valid JSON ({printable(str(e))[:120]}); the file is damaged") from None
    except RecursionError:
        raise fail(source, "JSON nested too deeply; the file is damaged or crafted") from None


def load_yaml(
    path: str | os.PathLike, max_bytes: int = 2**20, max_depth: int = 32, max_nodes: int = 100_000, what: str = ""
) -> Any:
    """A YAML file's value, safely (no Python tags) and with limits: its size, its nesting depth (20,000
    ``[`` overflowed the parser's stack) and the size it expands to through aliases (a 492-byte alias bomb
    expanded to gigabytes), all checked before anything is built. Errors are ``FileError``s naming the file;
    YAML's own (``yaml.YAMLError``) propagate for the caller to word."""
    import yaml

    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise fail(path, f"{size:,} bytes, more than any {what or 'such file'} needs ({max_bytes:,})")
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None

    depth = 0  # flow nesting, counted before YAML's scanner sees it (20,000 ``[`` take it seconds)
    for ch in raw:
        depth += (ch in "[{") - (ch in "]}")
        if depth > max_depth:
            raise fail(path, f"nested deeper than {max_depth} levels; not a {what or 'file'} of ours")

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            if self.depth > max_depth:
                raise fail(path, f"nested deeper than {max_depth} levels; not a {what or 'file'} of ours")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = Loader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path, max_nodes, {}, set())
        return loader.construct_document(node)
    except RecursionError:
        raise fail(path, "nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(node: Any, path: Path, limit: int, memo: dict[int, int], active: set[int]) -> int:
    """Nodes of ``node`` with every alias expanded (a shared node counts each time it is used), at most ``limit``."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise fail(path, "an alias refers to a node that contains it (a recursive structure)")
    active.add(key)
    n = 1
    value = node.value if isinstance(node.value, list) else []
    for item in value:
        for child in item if isinstance(item, tuple) else (item,):
            n += _expanded_size(child, path, limit, memo, active)
            if n > limit:
                raise fail(path, f"expands to more than {limit:,} values through its aliases (an alias bomb)")
    active.discard(key)
    memo[key] = n
    return n


# --- the files -------------------------------------------------------------------------------------


def scalar_kwargs(value: Any, source: str | os.PathLike, key: str = "model_kwargs") -> dict[str, Any]:
    """Architecture keyword arguments: a few names with plain values; ``width`` and ``groups`` bounded."""
    kw = mapping(value, source, key)
    if len(kw) > MAX_KWARGS:
        raise fail(source, f"'{key}' has {len(kw)} entries, more than any model takes")
    for k, v in kw.items():
        if not k.isidentifier() or len(k) > 64:
            raise fail(source, f"'{key}' has a key that is no argument name: {excerpt(k, 40)}")
        if k == "width":
            number(v, source, f"{key}.width", 0, MAX_WIDTH, lo_open=True)
        elif k == "groups":
            integer(v, source, f"{key}.groups", 1, MAX_GROUPS)
        elif isinstance(v, str):
            text(v, source, f"{key}.{k}")
        elif not (v is None or isinstance(v, bool) or _finite(v)):
            raise fail(source, f"'{key}.{k}' must be a number, a string or a boolean, got {excerpt(v, 40)}")
    return kw


_META_TEXT = ("model", "task", "source", "source_name", "interpolation", "backbone")


def weights_meta(value: Any, source: str | os.PathLike) -> dict[str, Any]:
    """A weights file's metadata: the keys a model is built or labelled from, typed and bounded."""
    meta = mapping(value, source, "", "a JSON object (the fdmobilenet metadata)")
    for k in _META_TEXT:
        if k in meta:
            text(meta[k], source, k, MAX_PATH_TEXT if k.startswith("source") else MAX_TEXT)
    if "num_classes" in meta:
        integer(meta["num_classes"], source, "num_classes", 0, MAX_CLASSES)
    if "resolution" in meta and meta["resolution"] is not None:
        integer(meta["resolution"], source, "resolution", 1, 2**20)
    for k in ("class_names", "synsets"):
        if k in meta:
            text_list(meta[k], source, k, MAX_CLASSES)
    if "model_kwargs" in meta:
        scalar_kwargs(meta["model_kwargs"], source)
    for k in ("score_thresh", "nms_thresh"):  # a detector's post-processing and anchors
        if k in meta:
            number(meta[k], source, k, 0, 1)
    for k in ("detections_per_img", "topk_candidates"):
        if k in meta:
            integer(meta[k], source, k, 1, 100_000)
    for k in ("anchor_min_ratio", "anchor_max_ratio", "backbone_width"):
        if k in meta:
            number(meta[k], source, k, 0, MAX_WIDTH, lo_open=True)
    return meta


def packed_meta(value: Any, source: str | os.PathLike) -> dict[str, Any]:
    """A prepared dataset's ``meta.json`` (``data/packed.py`` writes it)."""
    meta = mapping(value, source)
    text(meta.get("format"), source, "format")
    text_list(meta.get("classes"), source, "classes", MAX_CLASSES, unique=True)
    integer(meta.get("shards"), source, "shards", 1, MAX_SHARDS)
    for k in ("short_side", "quality", "n_images", "n_files", "bad"):
        if k in meta:
            integer(meta[k], source, k, 0, 2**40)
    return meta


def shard_index(rows: Any, source: str | os.PathLike, n_classes: int, shard_size: int) -> Any:
    """A shard's ``(N, 3)`` int64 rows (offset, length, label), each within the shard and the classes."""
    import numpy as np

    if not isinstance(rows, np.ndarray) or rows.dtype != np.int64 or rows.ndim != 2 or rows.shape[1] != 3:
        shape = getattr(rows, "shape", None)
        raise fail(source, f"must hold (N, 3) int64 rows, got {getattr(rows, 'dtype', type(rows).__name__)} {shape}")
    if len(rows):
        off, length, label = rows[:, 0], rows[:, 1], rows[:, 2]
        bad = (label < 0) | (label >= n_classes)
        if bad.any():
            raise fail(
                source,
                f"label {int(label[bad][0])} is not one of the {n_classes} classes in meta.json; the prepared "
                "dataset is damaged: run prepare again into a new folder",
            )
        if (off < 0).any() or (length < 0).any() or ((off + length) > shard_size).any():
            raise fail(source, f"a row points outside its shard ({shard_size:,} bytes); the prepared data is damaged")
    return rows


def split_record(value: Any, source: str | os.PathLike) -> dict[str, Any]:
    """A run's ``split.json``: root, val_split, seed and the validation files."""
    rec = mapping(value, source)
    text(rec.get("root"), source, "root", MAX_PATH_TEXT)
    number(rec.get("val_split"), source, "val_split", 0, 1, lo_open=True)
    integer(rec.get("seed"), source, "seed", 0, 2**63 - 1)
    text_list(rec.get("val"), source, "val", MAX_LIST, MAX_PATH_TEXT)
    return rec


def saved_config(value: Any, source: str | os.PathLike) -> dict[str, Any]:
    """A run's ``config.json``: an object with a recipe name; its fields are checked as TrainConfig fields."""
    cfg = mapping(value, source)
    if "recipe" not in cfg:
        raise fail(source, "has no 'recipe'; it was not written by `fdmobilenet train`")
    text(cfg["recipe"], source, "recipe", MAX_PATH_TEXT)
    return cfg
