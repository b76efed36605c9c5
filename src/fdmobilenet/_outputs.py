"""The one output policy of every command that writes a single file (``predict -o`` CSV, ``export``/``quantize
-o``, ``bench --plot``, ``convert``), and how a file this package wrote is recognised.

Why: every writer replaces its output atomically (``atomic_write_bytes``: a temporary file, then a rename),
and a rename replaces whatever held the name: a user's file, a symbolic link (the link, not its target), even
a device node (``predict -o /dev/full`` turned it into a regular file and said "wrote /dev/full"). So, before
any work starts, ``check_output`` lets a path through when it is

- new (nothing there), or
- a regular file this package wrote, recognised from the metadata it writes into every file (below), or
- any other regular file, when the caller passes ``overwrite`` (``--overwrite``);

and refuses everything else in one line naming the parameter: a symbolic link, a folder, a device node, a
FIFO or a socket are refused even with ``overwrite`` (a link is never written through to its target, a
device never becomes a regular file). Folder outputs keep their own marker files (``train --out``:
``.fdmobilenet-run``; ``predict -o DIR`` of a detector: ``.fdmobilenet-predict``).

What counts as written by fdmobilenet, read from the file's content (never its name):

- safetensors: the ``fdmobilenet`` JSON entry of its header's ``__metadata__`` (``weights.save_weights``);
- ONNX (``.onnx`` names only; needs the ``onnx`` package): ``metadata_props`` whose ``producer`` starts
  with ``fdmobilenet `` (``deploy.metadata``);
- TorchScript ``.pt`` and ``.pt2``: a zip whose ``extra/fdmobilenet.json`` names that producer;
- ExecuTorch ``.pte`` and LiteRT ``.tflite``: the flatbuffer's identifier (``ET..``, ``TFL3``) and the
  export metadata's JSON with that producer, stored verbatim (the ``fdmobilenet_meta`` method of a .pte, the
  ``fdmobilenet`` metadata entry of a .tflite). An Ethos-U ``.pte`` (``export --target``) carries no
  metadata, so replacing one needs ``overwrite``;
- PNG: a ``tEXt`` chunk with keyword ``fdmobilenet`` (``_utils.save_figure`` writes it into every figure);
- CSV of ``predict -o``: a first line that is exactly its header, ``path,class1,index1,prob1,...,error``. A
  CSV has no other place for a signature that spreadsheets and ``csv`` readers would not show as data, and a
  file starting with that header is a ``predict`` result (or a copy of one).

A claim read from a file, not a proof: the policy guards against accidents (a mistyped ``-o``), not against
someone crafting a file to be replaced, who could as well pass ``--overwrite``. Nothing here imports from
the rest of the package but ``_errors`` and ``_schema``; the ``onnx`` package is imported only to read an
existing ``.onnx`` file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import stat
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from ._errors import ParameterError
from ._schema import printable

PRODUCER = "fdmobilenet"  # export metadata's producer is "fdmobilenet VERSION" (deploy.metadata.export_metadata)
WEIGHTS_META_KEY = "fdmobilenet"  # weights.META_KEY: the safetensors metadata entry
EXTRA_FILE = "fdmobilenet.json"  # deploy.torch_formats: the extra file of .pt / .pt2 archives
PNG_KEY = "fdmobilenet"  # _utils.save_figure: the tEXt keyword of every figure
_PRODUCER_JSON = f'"producer": "{PRODUCER} '.encode()  # as json.dumps writes the export metadata
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit
_MAX_CSV_HEADER = 1 << 20  # predict's header for 10,000 ranks is under 250 KB
_MAX_EXTRA_FILE = 1 << 24  # the metadata JSON of a .pt/.pt2 (1000 class names: tens of KB)

_SPECIAL = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def check_output(path: str | os.PathLike, param: str = "output", overwrite: bool = False) -> Path:
    """``path`` as a Path once the output policy allows writing it (module docstring); otherwise a
    ``ParameterError`` naming ``param``. Call it before the work that ends in the write, so a refusal
    costs nothing."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p  # new: written atomically by the writer
    shown = printable(str(p))
    if stat.S_ISLNK(st.st_mode):
        raise ParameterError(
            param,
            f"`{param}` {shown} is a symbolic link: fdmobilenet never replaces a link nor writes through one to "
            "its target, even with `overwrite`; give the path of a regular file, or a new one",
        )
    if stat.S_ISDIR(st.st_mode):
        raise ParameterError(param, f"`{param}` {shown} is a folder; give the path of the file to write")
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise ParameterError(
            param,
            f"`{param}` {shown} is {kind}, not a regular file: fdmobilenet writes only regular files, even "
            "with `overwrite`; choose another path",
        )
    if overwrite or written_by_fdmobilenet(p):
        return p
    raise ParameterError(
        param,
        f"`{param}` {shown} exists and was not written by fdmobilenet; pass `overwrite` to replace it, or "
        "choose another path",
    )


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-folder, non-link file is (``a character device``, ...), or None."""
    return next((kind for test, kind in _SPECIAL if test(mode)), None)


def refuse_special_file(path: str | os.PathLike) -> None:
    """The atomic writer's last check: an existing device node, FIFO or socket at ``path`` is never replaced
    by a regular file (a ``FileExistsError`` naming it: exit 2 on the command line), whoever asked for the
    write. Links are left to ``check_output``: a rename replaces the link itself, never its target."""
    try:
        kind = special_kind(os.lstat(path).st_mode)
    except OSError:  # nothing there (or nothing to look at): the write says what is wrong, if anything
        return
    if kind is not None:
        raise FileExistsError(
            errno.EEXIST, f"{kind}, not a regular file: fdmobilenet writes only regular files", str(path)
        )


def written_by_fdmobilenet(path: str | os.PathLike) -> bool:
    """Whether the regular file ``path`` carries this package's own metadata (module docstring): safetensors,
    ONNX, .pt/.pt2, .pte, .tflite, PNG or a ``predict`` CSV. False for anything unreadable or foreign."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(16)
            if head.startswith(_PNG_SIGNATURE):
                return _png_is_ours(f)
            if head.startswith(b"PK\x03\x04"):
                return _zip_is_ours(p)
            if head[4:8] == b"TFL3" or (head[4:6] == b"ET" and head[6:8].isdigit()):
                return _contains(f, _PRODUCER_JSON)
            if len(head) >= 9 and head[8:9] == b"{":
                return _safetensors_is_ours(f, struct.unpack("<Q", head[:8])[0])
            if head.startswith(b"path,"):
                f.seek(0)
                return _is_predict_header(f.read(_MAX_CSV_HEADER).split(b"\n", 1)[0])
    except OSError:
        return False
    return p.suffix.lower() == ".onnx" and _onnx_is_ours(p)


def _contains(f: BinaryIO, needle: bytes) -> bool:
    """Whether the open file holds ``needle`` (memory-mapped: a large file is not read into memory)."""
    with contextlib.suppress(ValueError), mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(needle) >= 0
    return False  # an empty file cannot be mapped


def _png_is_ours(f: BinaryIO) -> bool:
    """A ``tEXt``/``iTXt`` chunk keyed ``fdmobilenet`` before the image data (where text chunks are written)."""
    f.seek(len(_PNG_SIGNATURE))
    while True:
        header = f.read(8)
        if len(header) < 8:
            return False
        size, kind = struct.unpack(">I", header[:4])[0], header[4:]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind in (b"tEXt", b"iTXt") and size < 1 << 16:
            if f.read(size).split(b"\0", 1)[0] == PNG_KEY.encode():
                return True
            f.seek(4, os.SEEK_CUR)  # the CRC
        else:
            f.seek(size + 4, os.SEEK_CUR)


def _zip_is_ours(p: Path) -> bool:
    """A TorchScript/pt2 archive whose ``extra/fdmobilenet.json`` names our producer."""
    try:
        with zipfile.ZipFile(p) as z:
            info = next((i for i in z.infolist() if i.filename.endswith(f"extra/{EXTRA_FILE}")), None)
            if info is None or info.file_size > _MAX_EXTRA_FILE:
                return False
            meta = json.loads(z.read(info))
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):
        return False
    return isinstance(meta, dict) and str(meta.get("producer", "")).startswith(f"{PRODUCER} ")


def _safetensors_is_ours(f: BinaryIO, size: int) -> bool:
    """A safetensors header (8-byte length, then JSON) whose ``__metadata__`` holds our JSON entry."""
    if not 2 <= size <= _MAX_SAFETENSORS_HEADER:
        return False
    f.seek(8)
    raw = f.read(size)
    try:
        meta = json.loads(raw).get("__metadata__") or {}
        return isinstance(json.loads(meta[WEIGHTS_META_KEY]), dict)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def _is_predict_header(line: bytes) -> bool:
    """``path,class1,index1,prob1,...,classK,indexK,probK,error``: the first line ``predict -o`` writes."""
    cells = line.rstrip(b"\r").split(b",")
    ranks = cells[1:-1]
    if len(cells) < 5 or cells[0] != b"path" or cells[-1] != b"error" or len(ranks) % 3:
        return False
    return ranks == [f"{c}{r}".encode() for r in range(1, len(ranks) // 3 + 1) for c in ("class", "index", "prob")]


def _onnx_is_ours(p: Path) -> bool:
    """ONNX metadata_props whose ``producer`` is ours (False without the ``onnx`` package)."""
    try:
        import onnx

        model = onnx.load(str(p), load_external_data=False)
    except Exception:  # not installed, or not an ONNX file: protobuf raises its own DecodeError
        return False
    props = {prop.key: prop.value for prop in model.metadata_props}
    return props.get("producer", "").startswith(f"{PRODUCER} ")
