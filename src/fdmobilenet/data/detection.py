"""Detection data as users have it: PASCAL VOC folders and COCO ``instances_*.json`` files, read into one
per-image annotation record, split into train/val by the folder's own lists, and turned into tensors.

Reading never stops on one bad file: malformed or hostile XML, unknown classes, impossible boxes and
missing photos are collected as ``(file, reason)`` problems and only that box or image is left out,
as ``data.images`` does for unreadable photos. Structural mistakes (a path that is no detection data,
a list that does not exist) are one-line ``ParameterError``s naming the path and what is expected.

Coordinates: records hold float32 ``[x1, y1, x2, y2]`` boxes in pixels of the stored image, corners
on the pixel grid (a box covering the whole W x H image is ``[0, 0, W, H]``): COCO's ``xywh`` as it is,
VOC's 1-based inclusive pixel indices as ``[xmin - 1, ymin - 1, xmax, ymax]`` (torchvision and
Detectron do the same). Record labels are class indices 0..K-1; the tensors ``DetectionDataset`` hands
a model use 1..K, 0 being background (torchvision SSD's convention). Photos are used as stored: EXIF
orientation is not applied, because annotation files refer to the stored pixels (as COCO's do).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .._errors import ParameterError, ParameterPathError
from .._utils import mix
from ..preprocess import IMAGENET_MEAN
from .images import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, BadImageError, load_image

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

MAX_XML_BYTES = 4 << 20  # a VOC file is ~1 KB per object; 4 MiB is thousands of objects
MAX_COCO_JSON_BYTES = 1 << 30  # COCO's own instances_train2017.json is 448 MB
EDGE_TOLERANCE_PX = 4  # boxes this far past the image edge are clipped without a word (off-by-one tools)
VOC_LIST_NAMES = ("train", "val", "trainval", "test")

LAYOUT_HELP = (
    "expected a PASCAL VOC folder (Annotations/, JPEGImages/, optionally ImageSets/Main/<list>.txt), "
    "a VOCdevkit folder holding one VOC* folder, a COCO instances_*.json file, "
    "or a folder with annotations/instances_*.json"
)

Problem = tuple[str, str]  # (file, reason): what was left out and why


@dataclass
class ImageAnnotation:
    """One photo's boxes. ``boxes`` float32 [N, 4] xyxy pixels (see the module docstring), ``labels`` int64
    [N] class indices 0..K-1, ``difficult`` bool [N] (VOC's flag, or COCO's ``iscrowd``: both are ignored
    when scoring); ``name`` is the VOC image id or COCO file name, what a split record lists."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    name: str


@dataclass
class AnnotationSet:
    """The records read from one source, the class names their labels index, and what was left out."""

    records: list[ImageAnnotation]
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)
    description: str = ""


@dataclass
class DetectionSplit:
    """Training data: ``train``/``val`` records, ``classes``, ``lists`` (which list fed each part, e.g.
    ``{"train": "train", "val": "val"}``), ``record`` (the seeded hold-out, for ``split.json``; None when
    the data brings its own validation list) and every problem met while reading."""

    train: list[ImageAnnotation]
    val: list[ImageAnnotation]
    classes: list[str]
    description: str
    record: dict | None
    lists: dict[str, str]
    problems: list[Problem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers


class _Skip(Exception):
    """A file or object that is left out; the message is the problem's reason."""


def _number(text: str | None, what: str) -> float:
    """A finite number from annotation text. Decimals are accepted (labelling tools write them) and kept."""
    if text is None or not text.strip():
        raise _Skip(f"{what} is missing")
    try:
        v = float(text)
    except ValueError:
        raise _Skip(f"{what} {_quote(text)} is not a number") from None
    if not math.isfinite(v):
        raise _Skip(f"{what} {_quote(text)} is not a finite number")
    return v


def _quote(text: str, limit: int = 40) -> str:
    """Untrusted text for a message: one line, bounded, quoted."""
    text = "".join(c if c.isprintable() else "?" for c in str(text).strip())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _fmt(v: float) -> str:
    return f"{v:g}"


def _check_box(box: Sequence[float], width: int, height: int, shown: str) -> tuple[list[float], str | None]:
    """The box clipped to the image and a problem reason (None: fine). Boxes within ``EDGE_TOLERANCE_PX`` of
    the image are clipped quietly; further out but still overlapping it they are clipped and reported (the
    object is there, its box is sloppy); entirely outside or of zero size they raise ``_Skip``."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise _Skip(f"zero-size box {shown}")
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        raise _Skip(f"box {shown} is outside the {width}x{height} image")
    over = max(-x1, -y1, x2 - width, y2 - height)
    clipped = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    if over > EDGE_TOLERANCE_PX:
        return clipped, f"box {shown} extends {_fmt(over)} px outside the {width}x{height} image; clipped to it"
    return clipped, None


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise _Skip(f"{what} is {size:,} bytes, over the {limit:,}-byte limit")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header alone, for annotations that do not state it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Skip(f"the annotation gives no image size and the image is unreadable ({type(e).__name__})") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise _Skip(f"image {w}x{h} is over the {MAX_IMAGE_PIXELS:,}-pixel limit")
    return w, h


def _plain_name(name: str) -> bool:
    """A file name with no folder part: ids and names from annotation files must not reach outside their folder."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _relative_name(name: str) -> bool:
    """A relative path that stays inside its folder (COCO file names may have sub-folders)."""
    parts = name.replace("\\", "/").split("/")
    return (
        bool(name)
        and "\0" not in name
        and not name.startswith(("/", "\\"))
        and ":" not in parts[0]
        and all(p not in ("", ".", "..") for p in parts)
    )


def _infer_classes(names: set[str]) -> list[str]:
    """VOC's 20 classes in their standard order when every name is one of them (so VOC and VOC-named
    subsets agree on label indices), else the names found, sorted."""
    if names and names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)


def _finish(
    raw: list[tuple[Path, int, int, str, list[tuple[str, list[float], bool, str]], str]],
    classes: Sequence[str] | None,
    problems: list[Problem],
) -> tuple[list[ImageAnnotation], list[str]]:
    """Records from parsed entries ``(image, w, h, name, [(class, xyxy, difficult, shown), ...], file)``:
    decide the classes, then check every box against them and its image."""
    if classes is None:
        classes = _infer_classes({c for *_, objs, _ in raw for c, *_ in objs})
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    records = []
    for path, w, h, name, objs, src in raw:
        boxes, labels, difficult = [], [], []
        for cls, box, diff, shown in objs:
            if cls not in index:
                problems.append((src, f"{shown}: unknown class {_quote(cls)} (the classes are {_list(classes)})"))
                continue
            try:
                clipped, note = _check_box(box, w, h, _box_text(box))
            except _Skip as e:
                problems.append((src, f"{shown}: {e}"))
                continue
            if note:
                problems.append((src, f"{shown}: {note}"))
            boxes.append(clipped)
            labels.append(index[cls])
            difficult.append(diff)
        records.append(
            ImageAnnotation(
                path,
                w,
                h,
                np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64),
                np.asarray(difficult, dtype=bool),
                name,
            )
        )
    return records, classes


def _box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(_fmt(v) for v in box) + "]"


def _list(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "") if names else "none"


# ------------------------------------------------------------------------------------------------- VOC


def _voc_root(path: Path, param: str = "data") -> Path | None:
    """The VOC folder at ``path``: itself, its only VOC* sub-folder (a VOCdevkit), or that inside its VOCdevkit."""
    if (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return path
    for base in (path, path / "VOCdevkit"):
        if not base.is_dir():
            continue
        found = [
            d
            for d in sorted(base.iterdir())
            if d.is_dir() and (d / "Annotations").is_dir() and (d / "JPEGImages").is_dir()
        ]
        if len(found) > 1:
            raise ParameterError(
                param,
                f"`{param}` {base} holds several VOC folders ({', '.join(d.name for d in found)}); point it at one",
            )
        if found:
            return found[0]
    return None


def _safe_xml(data: bytes) -> ET.Element:
    """Parse VOC XML refusing DOCTYPE and ENTITY declarations (entity expansion bombs, external entities):
    a first expat pass with handlers that stop at either, then ElementTree on the now known-plain text."""

    def refuse(*_: Any) -> None:
        raise _Skip("XML with a DOCTYPE or ENTITY declaration is refused")

    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    try:
        p.Parse(data, True)
        return ET.fromstring(data)
    except (expat.ExpatError, ET.ParseError) as e:
        raise _Skip(f"malformed XML ({e})") from None


def _text(el: ET.Element | None, tag: str) -> str | None:
    child = el.find(tag) if el is not None else None
    return child.text if child is not None else None


def _voc_image(root: Path, image_id: str, filename: str | None) -> Path:
    """JPEGImages/<id>.jpg, else the XML's <filename> (a plain name only), else <id> with another image suffix."""
    images = root / "JPEGImages"
    candidates = [images / f"{image_id}.jpg"]
    if filename and _plain_name(filename.strip()):
        candidates.append(images / filename.strip())
    candidates += [images / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)]
    for c in candidates:
        if c.is_file():
            return c
    raise _Skip(f"image is missing (no {candidates[0]})")


def _parse_voc_file(root: Path, image_id: str, problems: list[Problem]):
    """One VOC XML file as a parsed entry for ``_finish``; raises ``_Skip`` when the whole image is left out."""
    xml_path = root / "Annotations" / f"{image_id}.xml"
    if not xml_path.is_file():
        raise _Skip("annotation file is missing")
    tree = _safe_xml(_read_bounded(xml_path, MAX_XML_BYTES, "annotation file"))
    if tree.tag != "annotation":
        raise _Skip(f"not a VOC annotation (root element <{tree.tag[:40]}>, expected <annotation>)")
    image = _voc_image(root, image_id, _text(tree, "filename"))
    size = tree.find("size")
    try:
        w, h = round(_number(_text(size, "width"), "width")), round(_number(_text(size, "height"), "height"))
        if w <= 0 or h <= 0:
            raise _Skip("size is not positive")
    except _Skip:
        w, h = _header_size(image)  # some tools write 0 x 0 or nothing: the photo knows
    objs = []
    for k, obj in enumerate(tree.iter("object")):
        cls = (_text(obj, "name") or "").strip()
        shown = f"object {k + 1}" + (f" ({_quote(cls)})" if cls else "")
        try:
            if not cls:
                raise _Skip("no <name>")
            bb = obj.find("bndbox")
            if bb is None:
                raise _Skip("no <bndbox>")
            xmin, ymin, xmax, ymax = (_number(_text(bb, t), t) for t in ("xmin", "ymin", "xmax", "ymax"))
            diff_text = (_text(obj, "difficult") or "0").strip().lower()
            if diff_text not in ("0", "1", "true", "false", "0.0", "1.0"):
                problems.append((str(xml_path), f"{shown}: difficult {_quote(diff_text)} is not 0 or 1; read as 0"))
            difficult = diff_text in ("1", "true", "1.0")
        except _Skip as e:
            problems.append((str(xml_path), f"{shown}: {e}"))
            continue
        objs.append((cls, [xmin - 1, ymin - 1, xmax, ymax], difficult, shown))
    return image, w, h, image_id, objs, str(xml_path)


def _voc_ids(root: Path, image_set: str, problems: list[Problem]) -> list[str]:
    """The ids in ImageSets/Main/<image_set>.txt (first word of each line: <class>_<set>.txt works too)."""
    if not _plain_name(image_set):
        raise ParameterError("image_set", f"`image_set` {_quote(image_set)} is not a list name such as trainval")
    path = root / "ImageSets" / "Main" / f"{image_set}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt")) if path.parent.is_dir() else []
        raise ParameterPathError(
            "image_set", f"{path} does not exist; `image_set` names a list there ({_list(have) if have else 'none'})"
        )
    ids, seen = [], set()
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if not _plain_name(words[0]) or words[0].startswith("."):
            problems.append((str(path), f"line {n}: image id {_quote(words[0])} is not a plain file name"))
        elif words[0] not in seen:
            seen.add(words[0])
            ids.append(words[0])
    return ids


def _all_voc_ids(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "Annotations").glob("*.xml") if not p.name.startswith("."))


def _read_voc_ids(
    root: Path, ids: Sequence[str], classes: Sequence[str] | None, problems: list[Problem]
) -> tuple[list[ImageAnnotation], list[str]]:
    raw = []
    for image_id in ids:
        try:
            raw.append(_parse_voc_file(root, image_id, problems))
        except _Skip as e:
            problems.append((str(root / "Annotations" / f"{image_id}.xml"), str(e)))
        except OSError as e:  # unreadable file, a folder named like one, ...
            problems.append((str(root / "Annotations" / f"{image_id}.xml"), f"unreadable ({e.strerror or e})"))
    return _finish(raw, classes, problems)


def read_voc(root: str | Path, image_set: str | None = None, classes: Sequence[str] | None = None) -> AnnotationSet:
    """The images of VOC list ``ImageSets/Main/<image_set>.txt`` (None: every ``Annotations/*.xml``).

    ``classes`` None infers them (``VOC_CLASSES`` when every name is a VOC class, else the sorted names
    found); given (a trained model's), other names are problems. ``difficult`` is kept per box. Images
    whose boxes were all left out are kept with the boxes that remain, possibly none.
    """
    path = Path(root)
    if not path.is_dir():
        raise ParameterPathError("root", f"`root` {path} does not exist; {LAYOUT_HELP}")
    voc = _voc_root(path, "root")
    if voc is None:
        raise ParameterError("root", f"`root` {path} is not a VOC folder; {LAYOUT_HELP}")
    problems: list[Problem] = []
    ids = _all_voc_ids(voc) if image_set is None else _voc_ids(voc, image_set, problems)
    records, names = _read_voc_ids(voc, ids, classes, problems)
    which = "every annotation" if image_set is None else f"{image_set}.txt"
    return AnnotationSet(records, names, problems, f"VOC {voc} ({which}, {len(records)} images)")


# ------------------------------------------------------------------------------------------------ COCO


def _coco_image_dir(json_path: Path, first_file: str | None) -> Path:
    """Where a COCO file's photos are: <root>/<split> for instances_<split>.json (COCO's own layout),
    <root>/images/<split>, <root>/images or <root>, <root> being the folder above annotations/."""
    base = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    split = json_path.stem.removeprefix("instances_")
    candidates = [base / split, base / "images" / split, base / "images", base]
    for c in candidates:
        if c.is_dir() and (first_file is None or (c / first_file).is_file()):
            return c
    return next((c for c in candidates if c.is_dir()), base)


def _coco_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_coco(
    annotation_json: str | Path, image_dir: str | Path | None = None, classes: Sequence[str] | None = None
) -> AnnotationSet:
    """A COCO ``instances_*.json``: ``bbox`` xywh -> xyxy, ``iscrowd`` boxes flagged like VOC's difficult,
    classes in category-id order (``classes`` given: matched by name, others are problems), images
    without annotations kept as negatives. ``image_dir`` None: found beside the file (``_coco_image_dir``)."""
    jpath = Path(annotation_json)
    if not jpath.is_file():
        raise ParameterPathError("annotation_json", f"`annotation_json` {jpath} does not exist; {LAYOUT_HELP}")
    try:
        doc = json.loads(_read_bounded(jpath, MAX_COCO_JSON_BYTES, "the annotation file"))
    except _Skip as e:
        raise ParameterError("annotation_json", f"{jpath}: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ParameterError("annotation_json", f"{jpath} is not valid JSON ({e})") from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("images"), list)
        or not isinstance(doc.get("categories"), list)
    ):
        raise ParameterError(
            "annotation_json", f"{jpath} is not a COCO instances file (expected an object with images and categories)"
        )
    if not isinstance(doc.get("annotations"), list):
        raise ParameterError(
            "annotation_json",
            f"{jpath} has no annotations list (an image-info file of a test set has no boxes to learn)",
        )
    src = str(jpath)
    problems: list[Problem] = []
    cats: dict[int, str] = {}
    for c in doc["categories"]:
        cid = _coco_int(c.get("id")) if isinstance(c, dict) else None
        if cid is None or not isinstance(c.get("name"), str) or cid in cats:
            problems.append((src, f"category {_quote(json.dumps(c)[:60])} has no unique integer id and name; skipped"))
            continue
        cats[cid] = c["name"].strip()
    images: dict[int, dict] = {}
    for im in doc["images"]:
        iid = _coco_int(im.get("id")) if isinstance(im, dict) else None
        name = im.get("file_name") if iid is not None else None
        if iid is None or not isinstance(name, str) or iid in images:
            problems.append((src, f"image entry {_quote(json.dumps(im)[:60])} has no unique integer id and file_name"))
        elif not _relative_name(name):
            problems.append(
                (src, f"image {iid}: file_name {_quote(name)} is not a relative path inside the image folder")
            )
        else:
            images[iid] = im
    first = next(iter(images.values()))["file_name"] if images else None
    idir = Path(image_dir) if image_dir is not None else _coco_image_dir(jpath, first)
    objs: dict[int, list] = {iid: [] for iid in images}
    for a in doc["annotations"]:
        aid = a.get("id", "?") if isinstance(a, dict) else "?"
        shown = f"annotation {_quote(str(aid), 20)}"
        try:
            if not isinstance(a, dict):
                raise _Skip("is not an object")
            iid = _coco_int(a.get("image_id"))
            if iid not in images:
                raise _Skip(f"image_id {_quote(str(a.get('image_id')), 20)} is not in images")
            shown += f" (image {_quote(images[iid]['file_name'], 60)})"
            cid = _coco_int(a.get("category_id"))
            if cid not in cats:
                raise _Skip(f"category_id {_quote(str(a.get('category_id')), 20)} is not in categories")
            bbox = a.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise _Skip("bbox is not [x, y, width, height]")
            x, y, w, h = (_number(str(v), "bbox value") if not isinstance(v, bool) else math.nan for v in bbox)
            if any(math.isnan(v) for v in (x, y, w, h)):
                raise _Skip("bbox is not [x, y, width, height]")
        except _Skip as e:
            problems.append((src, f"{shown}: {e}"))
            continue
        objs[iid].append((cats[cid], [x, y, x + w, y + h], bool(a.get("iscrowd", 0)), shown))
    raw = []
    for iid, im in images.items():
        path = idir / im["file_name"]
        try:
            if not path.is_file():
                raise _Skip("image is missing")
            w, h = _coco_int(im.get("width")), _coco_int(im.get("height"))
            if w is None or h is None or w <= 0 or h <= 0:
                w, h = _header_size(path)
        except _Skip as e:
            problems.append((str(path), str(e)))
            continue
        raw.append((path, w, h, im["file_name"], objs[iid], src))
    if classes is None:  # category-id order, even for categories with no box here
        classes = [cats[k] for k in sorted(cats)]
    records, names = _finish(raw, classes, problems)
    return AnnotationSet(records, names, problems, f"COCO {jpath} ({len(records)} images in {idir})")


def _coco_files(folder: Path) -> list[Path]:
    d = folder / "annotations" if (folder / "annotations").is_dir() else folder
    return sorted(p for p in d.glob("instances_*.json") if p.is_file())


def _coco_pick(files: list[Path], prefix: str) -> Path | None:
    hits = [p for p in files if p.stem.startswith(f"instances_{prefix}")]
    if len(hits) > 1:
        raise ParameterError(
            "data", f"`data` has several {prefix} files ({', '.join(p.name for p in hits)}); point it at one json file"
        )
    return hits[0] if hits else None


# ------------------------------------------------------------------------------------ layout and splits


def is_detection_data(path: str | Path) -> bool:
    """A cheap layout check (no file is parsed): VOC folder, VOCdevkit, COCO json or COCO folder."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".json"
    if not p.is_dir():
        return False
    try:
        return _voc_root(p) is not None or bool(_coco_files(p))
    except ParameterError:
        return True  # several VOC folders: detection data, and open_detection says what to do
    except OSError:
        return False


def _locate(data: str | Path | None) -> tuple[str, Path]:
    """("voc", VOC folder) or ("coco", json file or folder) for ``data``; a one-line error otherwise."""
    if data is None:
        raise ParameterError("data", f"`data` is needed; {LAYOUT_HELP}")
    p = Path(data)
    if not p.exists():
        raise ParameterPathError("data", f"`data` {p} does not exist; {LAYOUT_HELP}")
    if p.is_file():
        if p.suffix.lower() != ".json":
            raise ParameterError("data", f"`data` {p} is a file but not a COCO .json; {LAYOUT_HELP}")
        return "coco", p
    voc = _voc_root(p)
    if voc is not None:
        return "voc", voc
    if _coco_files(p):
        return "coco", p
    raise ParameterError("data", f"`data` {p} is not detection data; {LAYOUT_HELP}")


def _hold_out(n: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded ``fraction`` of ``n`` items: at least one, never all."""
    if not 0 < fraction < 1:
        raise ParameterError("val_split", f"`val_split` must be between 0 and 1 (exclusive), got {fraction}")
    if n < 2:
        raise ParameterError("data", f"`data` has {n} usable image(s); a validation hold-out needs at least 2")
    k = min(n - 1, max(1, round(fraction * n)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mix(seed, n))).tolist()
    return sorted(perm[:k])


def _split_pool(
    records: list[ImageAnnotation],
    pool_names: Sequence[str],
    fraction: float,
    seed: int,
    split_record: dict | None,
    where: str,
) -> tuple[list[ImageAnnotation], list[ImageAnnotation], dict]:
    """Train/val records of a pool: the recorded validation names, else a fresh seeded hold-out of the
    pool's names (names, not records: which images fail to read does not move the split)."""
    if split_record is not None:
        val_names = set(split_record.get("val", []))
        missing = val_names - set(pool_names)
        if missing:
            raise ParameterError(
                "out",
                f"split.json lists {len(missing)} validation images no longer in {where}, e.g. {min(missing)}; "
                "restore them or start a new run in another `out`",
            )
        fraction, seed = split_record.get("val_split", fraction), split_record.get("seed", seed)
    else:
        val_names = {pool_names[i] for i in _hold_out(len(pool_names), fraction, seed)}
    train = [r for r in records if r.name not in val_names]
    val = [r for r in records if r.name in val_names]
    record = {"val_split": fraction, "seed": seed, "val": [n for n in pool_names if n in val_names]}
    return train, val, record


def _require_boxes(train: list[ImageAnnotation], val: list[ImageAnnotation], classes: list[str], where: str) -> None:
    if not train or not val:
        part = "training" if not train else "validation"
        raise ParameterError("data", f"`data` {where} has no readable {part} images; see the problems listed")
    if not classes or not any(len(r.labels) for r in train):
        raise ParameterError("data", f"`data` {where} has no labelled objects to learn; see the problems listed")


def open_detection(
    data: str | Path, val_split: float = 0.1, seed: int = 0, split_record: dict | None = None
) -> DetectionSplit:
    """Train and validation records of ``data`` (see ``LAYOUT_HELP``).

    A VOC folder's ``ImageSets/Main`` lists are its splits: ``train`` + ``val`` when both exist, else
    ``trainval`` (else ``train``, else every annotation not in ``test``) with a seeded ``val_split``
    hold-out (at least one image). ``test`` never feeds training or checkpoint choice. COCO: an
    ``instances_train*`` + ``instances_val*`` pair, else the one file with a hold-out. ``split_record``
    (a run's ``split.json``) brings back its hold-out on resume. Classes are inferred over train + val.
    """
    kind, where = _locate(data)
    problems: list[Problem] = []
    if kind == "voc":
        lists = where / "ImageSets" / "Main"
        have = {n for n in VOC_LIST_NAMES if (lists / f"{n}.txt").is_file()}
        if {"train", "val"} <= have:
            ids_t, ids_v = _voc_ids(where, "train", problems), _voc_ids(where, "val", problems)
            records, classes = _read_voc_ids(where, list(dict.fromkeys(ids_t + ids_v)), None, problems)
            tset, vset = set(ids_t), set(ids_v)
            train = [r for r in records if r.name in tset]
            val = [r for r in records if r.name in vset]
            desc = f"VOC {where}: train.txt ({len(train)} images) for training, val.txt ({len(val)}) for validation"
            _require_boxes(train, val, classes, str(where))
            return DetectionSplit(train, val, classes, desc, None, {"train": "train", "val": "val"}, problems)
        if "trainval" in have or "train" in have:
            pool_name = "trainval" if "trainval" in have else "train"
            pool = _voc_ids(where, pool_name, problems)
            label = f"{pool_name}.txt"
        else:
            test = set(_voc_ids(where, "test", problems)) if "test" in have else set()
            pool, pool_name = [i for i in _all_voc_ids(where) if i not in test], "all"
            label = "every annotation" + (" not in test.txt" if test else "")
        records, classes = _read_voc_ids(where, pool, None, problems)
        train, val, record = _split_pool(records, pool, val_split, seed, split_record, f"{where} ({label})")
        record = {"format": "voc", "root": str(where), "image_set": pool_name, **record}
    else:
        files = [where] if where.is_file() else _coco_files(where)
        tfile, vfile = (None, None) if where.is_file() else (_coco_pick(files, "train"), _coco_pick(files, "val"))
        if tfile and vfile:
            t = read_coco(tfile)
            v = read_coco(vfile, classes=t.classes)
            problems += t.problems + v.problems
            desc = (
                f"COCO {tfile.name} ({len(t.records)} images) for training, "
                f"{vfile.name} ({len(v.records)}) for validation"
            )
            _require_boxes(t.records, v.records, t.classes, str(where))
            lists = {"train": tfile.name, "val": vfile.name}
            return DetectionSplit(t.records, v.records, t.classes, desc, None, lists, problems)
        usable = [f for f in files if not f.stem.startswith("instances_test")]
        if len(usable) != 1:
            raise ParameterError(
                "data",
                f"`data` {where} has {len(usable)} COCO files ({_list([f.name for f in usable])}); expected one, "
                "or an instances_train* and instances_val* pair",
            )
        s = read_coco(usable[0])
        problems += s.problems
        records, classes, pool_name = s.records, s.classes, usable[0].name
        label = pool_name
        names = [r.name for r in records]  # COCO lists its images in the file itself: the pool is what reads
        train, val, record = _split_pool(records, names, val_split, seed, split_record, str(usable[0]))
        record = {"format": "coco", "root": str(usable[0]), "image_set": pool_name, **record}
    _require_boxes(train, val, classes, str(where))
    desc = (
        f"{where} ({label}, {len(records)} images) with a seeded {record['val_split']:.0%} validation hold-out "
        f"({len(val)} images)"
    )
    return DetectionSplit(train, val, classes, desc, record, {"train": pool_name, "val": pool_name}, problems)


def open_detection_eval(
    data: str | Path | None = None,
    image_set: str | None = None,
    split_record: dict | None = None,
    classes: Sequence[str] | None = None,
) -> AnnotationSet:
    """The records ``eval`` scores. VOC: list ``image_set`` when given, else ``test``, else ``val``, else the
    held-out part of ``split_record`` (the training run's ``split.json``: how a trainval-only folder such as
    BCCD is scored); none of these is an error. COCO: the ``instances_val*`` file, else the record's
    hold-out, else a json file given alone as a whole. ``data`` None: the record's root.

    Pass the trained model's ``classes`` so labels index the model's classes (names it lacks are
    problems); None infers them from the scored images alone.
    """
    if data is None and split_record is not None:
        data = split_record.get("root")
    kind, where = _locate(data)
    problems: list[Problem] = []
    if kind == "voc":
        lists = where / "ImageSets" / "Main"
        chosen = image_set or next((n for n in ("test", "val") if (lists / f"{n}.txt").is_file()), None)
        if chosen is not None:
            ids = _voc_ids(where, chosen, problems)
            records, names = _read_voc_ids(where, ids, classes, problems)
            return AnnotationSet(records, names, problems, f"VOC {where} ({chosen}.txt, {len(records)} images)")
        if split_record is None:
            raise ParameterError(
                "split_record",
                f"`data` {where} has no test or val list in ImageSets/Main; pass the training run's split record "
                "(`split_record`, its split.json) to score the held-out images, or name a list with `image_set`",
            )
        pool_name = split_record.get("image_set", "trainval")
        ids = _all_voc_ids(where) if pool_name == "all" else _voc_ids(where, pool_name, problems)
        val_names = set(split_record.get("val", []))
        if classes is None:  # infer over the whole pool, as training did, then keep the held-out part
            pool, names = _read_voc_ids(where, ids, None, problems)
            keep = {r.name for r in pool} & val_names
            records = [r for r in pool if r.name in keep]
            problems = [p for p in problems if Path(p[0]).stem in val_names]
        else:
            records, names = _read_voc_ids(where, [i for i in ids if i in val_names], classes, problems)
        missing = val_names - set(ids)
        if missing:
            raise ParameterError(
                "split_record", f"the split record lists {len(missing)} images not in {where}, e.g. {min(missing)}"
            )
        return AnnotationSet(
            records, names, problems, f"VOC {where} (the {len(records)} images held out of {pool_name})"
        )
    jfile = where if where.is_file() else _coco_pick(_coco_files(where), "val")
    if jfile is None:
        if split_record is None or not split_record.get("root"):
            raise ParameterError(
                "split_record",
                f"`data` {where} has no instances_val*.json; pass the training run's split record "
                "(`split_record`) to score its held-out images",
            )
        jfile = Path(split_record["root"])
    s = read_coco(jfile, classes=classes)
    if split_record is not None and Path(split_record.get("root", "")).resolve() == jfile.resolve():
        val_names = set(split_record.get("val", []))
        s.records = [r for r in s.records if r.name in val_names]
        s.description = f"COCO {jfile} (the {len(s.records)} images held out for validation)"
    return s


# ---------------------------------------------------------------------------------------- tensors


class DetectionDataset(Dataset):
    """``(image, target, i, reason)`` per record, for ``collate_detection``.

    ``image`` float32 CHW in [0, 1] as the transform leaves it; ``target`` holds ``boxes`` (float32 [N, 4]
    xyxy pixels of the transformed image), ``labels`` (int64, 1..K: 0 is background), ``difficult`` (bool),
    ``orig_size`` ([h, w] of the annotated image, to map boxes back) and ``image_id`` (``i``). An image that
    cannot be decoded, or whose proportions contradict its annotation, gives ``(None, None, i, reason)``.
    A photo stored at another size than annotated but with the same proportions has its boxes scaled.
    ``draft_size``: JPEGs may be decoded at 1/2..1/8 scale with the shorter side still that large (as
    ``ImageDataset``), boxes following. All randomness is the global torch RNG's, so ``order.SeededView``
    makes it reproducible.
    """

    def __init__(self, records: Sequence[ImageAnnotation], transform: Callable, draft_size: int | None = None):
        self.records, self.transform, self.draft_size = list(records), transform, draft_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        try:
            img = load_image(rec.path, self.draft_size)
        except BadImageError as e:
            return None, None, i, e.reason
        w, h = img.size
        sx, sy = w / rec.width, h / rec.height
        if abs(sx - sy) > 0.02 * max(sx, sy) + 2 / min(w, h):  # rounding of a resized or draft-decoded photo
            return (
                None,
                None,
                i,
                (
                    f"image is {w}x{h} but its annotation is for {rec.width}x{rec.height} "
                    "(EXIF orientation is not applied); fix the annotation or the photo"
                ),
            )
        boxes = torch.from_numpy(rec.boxes) * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(rec.labels) + 1,
            "difficult": torch.from_numpy(rec.difficult).clone(),
        }
        out, target = self.transform(img, target)
        target = {
            "boxes": target["boxes"].as_subclass(torch.Tensor).to(torch.float32),
            "labels": target["labels"].as_subclass(torch.Tensor),
            "difficult": target["difficult"].as_subclass(torch.Tensor),
            "orig_size": torch.tensor([rec.height, rec.width], dtype=torch.int64),
            "image_id": i,
        }
        return out.as_subclass(torch.Tensor), target, i, None


def collate_detection(batch):
    """``(images [B, 3, R, R] or None, targets, indices, [(index, reason), ...] of bad ones)``: the good
    samples stacked, as ``images.collate_skip_bad`` does (all bad: None for the first three)."""
    good = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    if not good:
        return None, None, None, bad
    return (
        torch.stack([b[0] for b in good]),
        [b[1] for b in good],
        torch.tensor([b[2] for b in good], dtype=torch.long),
        bad,
    )


class _ShrinkLongSide(v2.Transform):
    """Downscale (never up) so the longer side is at most ``limit``: zoom-out canvases of big photos
    (up to ``zoom_out``**2 times the pixels) stay bounded, and nothing is lost at the final resolution."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        s = self.limit / max(h, w)
        return {"size": [max(1, round(h * s)), max(1, round(w * s))] if s < 1 else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["size"] is None:
            return inpt
        return self._call_kernel(v2.functional.resize, inpt, params["size"])


class _IoUCrop(v2.RandomIoUCrop):
    """SSD's IoU crop, left out for images without boxes (it would only spin until it drew "keep") and
    images under 4 px a side (its crop sizes would round to zero)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        if min(h, w) < 4 or v2.get_bounding_boxes(flat_inputs).shape[0] == 0:
            return {}
        return super().make_params(flat_inputs)


def _labels_and_difficult(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """What SanitizeBoundingBoxes drops with each removed box: labels and difficult stay aligned."""
    target = inputs[1]
    return target["labels"], target["difficult"]


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ParameterError("resolution", f"`resolution` must be a whole number >= 1, got {resolution!r}")


def detection_train_transform(
    resolution: int, mean: Sequence[float] = IMAGENET_MEAN, zoom_out: float = 4.0
) -> Callable[[Any, dict], tuple[torch.Tensor, dict]]:
    """SSD's training augmentation, box-aware: photometric distortion, zoom-out onto a canvas of the
    ``mean`` colour (half the time, up to ``zoom_out`` x each side; 4 is SSD's value and helps small
    objects on VOC-like photos, 1 turns it off, 2 suits data whose objects are already small, such as
    BCCD's platelets), IoU crop, horizontal flip, resize to ``resolution`` square, then boxes clamped and
    those under a pixel dropped with their labels and difficult flags. Call as ``t(pil_image, target)``."""
    _check_resolution(resolution)
    if not (isinstance(zoom_out, (int, float)) and 1 <= zoom_out <= 8):
        raise ParameterError("zoom_out", f"`zoom_out` must be between 1 and 8, got {zoom_out!r}")
    fill = [round(255 * float(m)) for m in mean]
    steps: list[Any] = [_ShrinkLongSide(4 * resolution), v2.ToImage(), v2.RandomPhotometricDistort(p=0.5)]
    if zoom_out > 1:
        steps.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, float(zoom_out)), p=0.5))
    steps += [
        _IoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((resolution, resolution)),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(labels_getter=_labels_and_difficult),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)


def detection_eval_transform(resolution: int) -> Callable[[Any, dict], tuple[torch.Tensor, dict]]:
    """Resize to ``resolution`` square (boxes follow; none is dropped: scoring counts every one) and scale to [0, 1]."""
    _check_resolution(resolution)
    return v2.Compose([v2.ToImage(), v2.Resize((resolution, resolution)), v2.ToDtype(torch.float32, scale=True)])


# ------------------------------------------------------------------------------------------- drawing

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_LABEL_CHARS = 40
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]  # fmt: skip


def _label_text(name: str) -> str:
    """Untrusted class-name text made drawable: no control or format characters, bounded length."""
    text = "".join(c for c in _CONTROL.sub(" ", str(name)) if unicodedata.category(c)[0] != "C").strip()
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def draw_detections(
    image: Image.Image | torch.Tensor,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    scores: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    class_names: Sequence[str] = (),
) -> Image.Image:
    """The image with its boxes drawn and captioned ``name score``. ``labels`` are the model's 1..K
    (``class_names[label - 1]``; others are shown as numbers); ``image`` a PIL image or a CHW tensor
    (uint8, or float in [0, 1]); boxes xyxy in its pixels, clipped to it, non-finite ones left out."""
    from torchvision.utils import draw_bounding_boxes

    if isinstance(image, Image.Image):
        img = v2.functional.pil_to_tensor(image.convert("RGB"))
    else:
        img = image.detach().cpu()
        if img.dtype != torch.uint8:
            img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
    h, w = img.shape[1:]
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    sc = None if scores is None else torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    keep = torch.isfinite(b).all(1)
    b, lab, sc = b[keep], lab[keep], None if sc is None else sc[keep]
    x1, x2 = b[:, [0, 2]].min(1).values.clamp(0, w), b[:, [0, 2]].max(1).values.clamp(0, w)
    y1, y2 = b[:, [1, 3]].min(1).values.clamp(0, h), b[:, [1, 3]].max(1).values.clamp(0, h)
    b = torch.stack([x1, y1, x2, y2], 1)
    if len(b) == 0:  # draw_bounding_boxes would warn
        return v2.functional.to_pil_image(img)
    texts = []
    for k, y in enumerate(lab.tolist()):
        name = _label_text(class_names[y - 1]) if 1 <= y <= len(class_names) else f"class {y}"
        texts.append(name if sc is None else f"{name} {float(sc[k]):.2f}")
    colors = [_PALETTE[(y - 1) % len(_PALETTE)] for y in lab.tolist()]
    width = max(1, round(min(h, w) / 200))
    try:
        out = draw_bounding_boxes(img, b, labels=texts, colors=colors, width=width)
    except UnicodeEncodeError:  # Pillow's bitmap fallback font is Latin-1 only
        texts = [t.encode("ascii", "backslashreplace").decode() for t in texts]
        out = draw_bounding_boxes(img, b, labels=texts, colors=colors, width=width)
    return v2.functional.to_pil_image(out)
