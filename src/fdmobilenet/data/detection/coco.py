"""COCO ``instances_*.json`` files: one json for a whole split, its photos in a folder found beside it.

Apart from VOC's reader because it reads something else entirely: one large json document (bounded by
``MAX_COCO_JSON_BYTES``) whose category, image and annotation tables refer to each other by id and must be
checked against each other, file names that may have sub-folders, and ``xywh`` boxes, all turned into the
shared records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._errors import ParameterError, ParameterPathError
from ._common import (
    LAYOUT_HELP,
    AnnotationSet,
    Problem,
    _finish,
    _header_size,
    _limit,
    _number,
    _quote,
    _read_bounded,
    _relative_name,
    _Skip,
)


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
    doc = _load_coco(jpath)
    src = str(jpath)
    problems: list[Problem] = []
    cats, images = _coco_tables(doc, src, problems)
    first = next(iter(images.values()))["file_name"] if images else None
    idir = Path(image_dir) if image_dir is not None else _coco_image_dir(jpath, first)
    objs = _coco_objects(doc["annotations"], cats, images, src, problems)
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


def _load_coco(jpath: Path) -> dict[str, Any]:
    """The parsed file, checked to be a COCO instances file with boxes; a one-line ``ParameterError`` otherwise
    (a file that is not COCO at all is a mistake in what was passed, not one bad image)."""
    if not jpath.is_file():
        raise ParameterPathError("annotation_json", f"`annotation_json` {jpath} does not exist; {LAYOUT_HELP}")
    try:
        doc = json.loads(_read_bounded(jpath, _limit("MAX_COCO_JSON_BYTES"), "the annotation file"))
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
    return doc


def _coco_tables(doc: dict[str, Any], src: str, problems: list[Problem]) -> tuple[dict[int, str], dict[int, dict]]:
    """``{category id: name}`` and ``{image id: image entry}``; entries without a unique integer id, a name or
    a file name inside the image folder are problems."""
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
    return cats, images


def _coco_objects(
    annotations: list[Any], cats: dict[int, str], images: dict[int, dict], src: str, problems: list[Problem]
) -> dict[int, list]:
    """Each image's ``(class, xyxy, iscrowd, shown)`` boxes from the annotations list, for ``_finish``; an
    annotation naming no known image or category, or without an ``[x, y, width, height]`` box, is a problem."""
    objs: dict[int, list] = {iid: [] for iid in images}
    for a in annotations:
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
    return objs


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
