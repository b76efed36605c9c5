"""Which detection data a path is and how it splits: the layout check (``is_detection_data``), finding the
VOC folder or COCO files, seeded hold-outs recorded in ``split.json``, and the two entry points,
``open_detection`` (train + validation) and ``open_detection_eval`` (what ``eval`` scores).

Apart from the readers because these rules (which list feeds training, what a resumed run holds out, what is
scored when a folder has no test list) are the same whichever format holds the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..._errors import ParameterError, ParameterPathError
from ..._utils import mix
from ._common import (
    LAYOUT_HELP,
    VOC_LIST_NAMES,
    AnnotationSet,
    DetectionSplit,
    ImageAnnotation,
    Problem,
    _list,
)
from .coco import _coco_files, _coco_pick, read_coco
from .voc import _all_voc_ids, _read_voc_ids, _voc_ids, _voc_root


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
