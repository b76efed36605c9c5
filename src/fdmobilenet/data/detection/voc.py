"""PASCAL VOC folders: ``Annotations/<id>.xml`` per photo in ``JPEGImages/``, lists in ``ImageSets/Main``.

Apart from COCO's reader because it reads something else entirely: one small, possibly hostile XML file per
image (parsed by defusedxml, bounded by ``MAX_XML_BYTES``), image ids that must stay plain file names, and
VOC's 1-based inclusive pixel boxes, turned into the shared ``[xmin - 1, ymin - 1, xmax, ymax]`` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from ..._errors import ParameterError, ParameterPathError
from ..images import IMAGE_EXTENSIONS
from ._common import (
    LAYOUT_HELP,
    AnnotationSet,
    ImageAnnotation,
    Problem,
    _finish,
    _header_size,
    _limit,
    _list,
    _number,
    _plain_name,
    _quote,
    _read_bounded,
    _Skip,
)


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


def _safe_xml(data: bytes) -> Element:
    """Parse VOC XML with defusedxml, refusing any DTD, entity declaration or external reference (entity
    expansion bombs, files pulled in from the disk or the network); the size bound is the caller's."""
    try:
        return defused_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise _Skip("XML with a DOCTYPE or ENTITY declaration is refused") from None
    except ParseError as e:
        raise _Skip(f"malformed XML ({e})") from None


def _text(el: Element | None, tag: str) -> str | None:
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
    tree = _safe_xml(_read_bounded(xml_path, _limit("MAX_XML_BYTES"), "annotation file"))
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
