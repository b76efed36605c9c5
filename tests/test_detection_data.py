"""Detection data (data/detection.py): the shared BCCD and coco-voc20 VOC folders, synthetic VOC folders with
every kind of bad annotation, the train/val/test selection rules, a COCO round trip, the box-aware transforms
(reproducible under a seed), the collate that skips bad images, and drawing untrusted class names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdmobilenet import draw
from fdmobilenet._errors import ParameterError, ParameterPathError
from fdmobilenet.data import detection as det
from fdmobilenet.data.detection import (
    VOC_CLASSES,
    DetectionDataset,
    collate_detection,
    detection_eval_transform,
    detection_train_transform,
    is_detection_data,
    open_detection,
    open_detection_eval,
    read_coco,
    read_voc,
)
from fdmobilenet.data.order import SeededView
from fdmobilenet.draw import draw_detections
from helpers import FLOWERS_MINI, shared_path

BCCD_CLASSES = ["Platelets", "RBC", "WBC"]


@pytest.fixture(scope="module")
def bccd() -> Path:
    return shared_path("datasets/detection/bccd")


@pytest.fixture(scope="module")
def bccd_set(bccd):
    return read_voc(bccd, "trainval")


def voc_xml(objects=(), w: int | str = 64, h: int | str = 48, filename: str = "") -> str:
    """VOC XML for ``objects`` = [(name, (xmin, ymin, xmax, ymax), difficult), ...] (1-based inclusive)."""
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
    return f"<annotation><filename>{filename}</filename>{size}{objs}</annotation>"


def make_voc(root: Path, xmls: dict[str, str | None], lists: dict[str, list[str]] | None = None, no_image=()) -> Path:
    """A VOC folder: ``Annotations/<id>.xml`` (None: no file), a 64x48 JPEG per id not in ``no_image``, lists."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for k, (i, xml) in enumerate(xmls.items()):
        if xml is not None:
            (root / "Annotations" / f"{i}.xml").write_text(xml)
        if i not in no_image:
            Image.new("RGB", (64, 48), (k * 7 % 256, 90, 160)).save(root / "JPEGImages" / f"{i}.jpg")
    for name, ids in (lists or {}).items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def simple_voc(root: Path, n: int, lists: dict[str, list[str]] | None = None) -> tuple[Path, list[str]]:
    ids = [f"{k:04d}" for k in range(n)]
    xmls = {i: voc_xml([(VOC_CLASSES[k % 3], (5, 5, 30 + k % 20, 40), False)]) for k, i in enumerate(ids)}
    return make_voc(root, xmls, lists), ids


# ------------------------------------------------------------------------------------------- shared data


def test_bccd_reads_every_box(bccd_set):
    s = bccd_set
    assert len(s.records) == 292 and s.problems == []
    assert sum(len(r.boxes) for r in s.records) == 3941  # README: 3,941 after its 2 zero-size boxes were dropped
    assert s.classes == BCCD_CLASSES  # not VOC names: the sorted names found
    counts = np.bincount(np.concatenate([r.labels for r in s.records]), minlength=3)
    assert counts.tolist() == [292, 3348, 301]
    for r in s.records:
        assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64 and r.difficult.dtype == bool
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
        assert (r.boxes[:, 2:] > r.boxes[:, :2]).all() and not r.difficult.any()
    first = s.records[0]  # BloodImage_00000.xml's first object: WBC xmin 260 ymin 177 xmax 491 ymax 376
    assert first.name == "BloodImage_00000" and (first.width, first.height) == (640, 480)
    assert first.boxes[0].tolist() == [259, 176, 491, 376] and s.classes[first.labels[0]] == "WBC"


def test_coco_voc20_is_voc_classes():
    s = read_voc(shared_path("datasets/detection/coco-voc20"), "trainval")
    assert s.classes == list(VOC_CLASSES) and s.problems == []
    assert len(s.records) == 160 and sum(len(r.boxes) for r in s.records) == 816
    counts = np.bincount(np.concatenate([r.labels for r in s.records]), minlength=20)
    assert counts[VOC_CLASSES.index("person")] == 421 and counts[VOC_CLASSES.index("sheep")] == 1


def test_bccd_split_and_eval_of_its_hold_out(bccd, bccd_set):
    assert is_detection_data(bccd) and not is_detection_data(FLOWERS_MINI)
    a = open_detection(bccd, val_split=0.1, seed=0)
    assert (len(a.train), len(a.val)) == (263, 29) and a.classes == BCCD_CLASSES
    assert a.lists == {"train": "trainval", "val": "trainval"} and "hold-out" in a.description
    assert a.record["format"] == "voc" and a.record["image_set"] == "trainval" and len(a.record["val"]) == 29
    assert not {r.name for r in a.train} & {r.name for r in a.val}
    assert [r.name for r in open_detection(bccd, 0.1, 0).val] == a.record["val"]  # same seed, same split
    assert [r.name for r in open_detection(bccd, 0.1, 1).val] != a.record["val"]
    resumed = open_detection(bccd, 0.5, 7, split_record=json.loads(json.dumps(a.record)))  # the record wins
    assert [r.name for r in resumed.val] == a.record["val"]
    with pytest.raises(ParameterError, match="no test or val list") as e:  # trainval only: needs the record
        open_detection_eval(bccd)
    assert e.value.param == "split_record" and "\n" not in str(e.value)
    ev = open_detection_eval(None, split_record=a.record)  # `data` None: the record's root
    assert [r.name for r in ev.records] == a.record["val"] and ev.classes == BCCD_CLASSES
    ev2 = open_detection_eval(bccd, split_record=a.record, classes=BCCD_CLASSES)
    assert [r.boxes.tolist() for r in ev2.records] == [r.boxes.tolist() for r in ev.records]


# --------------------------------------------------------------------------------------- bad annotations


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;">]>'
    "<annotation><filename>&y;</filename></annotation>"
)


def test_bad_annotations_are_problems_and_the_rest_is_read(tmp_path):
    good = voc_xml([("dog", (1, 1, 64, 48), False), ("cat", (10, 10, 20, 20), True)])
    xmls = {
        "good": good,
        "malformed": "<annotation><size><width>64</wid",
        "zero": voc_xml([("dog", (30, 10, 29, 20), False), ("cat", (1, 1, 9, 9), False)]),
        "unknown": voc_xml([("unicorn", (1, 1, 9, 9), False), ("dog", (2, 2, 9, 9), False)]),
        "outside": voc_xml([("dog", (70, 10, 90, 20), False), ("cat", (1, 1, 9, 9), False)]),
        "edges": voc_xml([("dog", (0, -1, 66, 50), False), ("cat", (40, 30, 90, 48), False)]),
        "noimage": good,
        "bomb": BOMB,
        "words": voc_xml([("dog", ("abc", 1, 9, 9), False), ("cat", (1.5, 1, 9.5, 9), False)]),
        "nosize": voc_xml([("dog", (1, 1, 9, 9), False)], w=0, h=""),
        "noxml": None,
    }
    root = make_voc(tmp_path / "voc", xmls, {"trainval": [*xmls, "../../etc/passwd"]}, no_image=("noimage",))
    s = read_voc(root, "trainval", classes=VOC_CLASSES)
    why = {Path(f).stem: r for f, r in s.problems}
    assert set(why) == {"malformed", "zero", "unknown", "outside", "edges", "noimage", "bomb", "words", "noxml"} | {
        "trainval"
    }
    assert why["malformed"].startswith("malformed XML")
    assert why["zero"] == "object 1 ('dog'): zero-size box [29, 9, 29, 20]"
    assert why["unknown"].startswith("object 1 ('unicorn'): unknown class 'unicorn'")
    assert why["outside"] == "object 1 ('dog'): box [69, 9, 90, 20] is outside the 64x48 image"
    assert why["edges"] == "object 2 ('cat'): box [39, 29, 90, 48] extends 26 px outside the 64x48 image; clipped to it"
    assert why["noimage"].startswith("image is missing")
    assert why["bomb"] == "XML with a DOCTYPE or ENTITY declaration is refused"
    assert why["words"] == "object 1 ('dog'): xmin 'abc' is not a number"
    assert why["noxml"] == "annotation file is missing"
    assert why["trainval"] == "line 12: image id '../../etc/passwd' is not a plain file name"
    rec = {r.name: r for r in s.records}
    assert set(rec) == {"good", "zero", "unknown", "outside", "edges", "words", "nosize"}
    assert rec["good"].boxes.tolist() == [[0, 0, 64, 48], [9, 9, 20, 20]] and rec["good"].difficult.tolist() == [0, 1]
    assert rec["good"].labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert [len(rec[k].boxes) for k in ("zero", "unknown", "outside", "words")] == [1, 1, 1, 1]
    assert rec["edges"].boxes.tolist() == [[0, 0, 64, 48], [39, 29, 64, 48]]  # 2 px over: clipped quietly
    assert rec["words"].boxes.tolist() == [[0.5, 0, 9.5, 9]]  # decimals are kept as written
    assert (rec["nosize"].width, rec["nosize"].height) == (64, 48)  # from the JPEG's header
    inferred = read_voc(root, "trainval")  # no classes given: a non-VOC name makes them the sorted names
    assert inferred.classes == ["cat", "dog", "unicorn"]


def test_hostile_sizes_are_refused(tmp_path, monkeypatch):
    root = make_voc(tmp_path / "voc", {"a": voc_xml([("dog", (1, 1, 9, 9), False)]) + " " * 200})
    monkeypatch.setattr(det, "MAX_XML_BYTES", 100)
    s = read_voc(root)  # no list: every annotation
    assert s.records == [] and "over the 100-byte limit" in s.problems[0][1]
    (tmp_path / "big.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}) + " " * 100)
    monkeypatch.setattr(det, "MAX_COCO_JSON_BYTES", 50)
    with pytest.raises(ParameterError, match="over the 50-byte limit") as e:
        read_coco(tmp_path / "big.json")
    assert e.value.param == "annotation_json"


# ------------------------------------------------------------------------------------- split selection


def test_train_and_val_lists_are_the_split_and_test_is_scored(tmp_path):
    root, ids = simple_voc(tmp_path / "VOCdevkit" / "VOC2007", 12)
    make_voc(root, {}, {"train": ids[:5], "val": ids[5:8], "trainval": ids[:8], "test": ids[8:]})
    for data in (root, tmp_path / "VOCdevkit", tmp_path):  # VOC folder, VOCdevkit, the folder above it
        s = open_detection(data)
        assert [r.name for r in s.train] == ids[:5] and [r.name for r in s.val] == ids[5:8]
        assert s.record is None and s.lists == {"train": "train", "val": "val"} and s.classes == list(VOC_CLASSES)
    ev = open_detection_eval(root)
    assert [r.name for r in ev.records] == ids[8:] and "test.txt" in ev.description
    assert [r.name for r in open_detection_eval(root, image_set="val").records] == ids[5:8]
    (root / "ImageSets" / "Main" / "test.txt").unlink()
    assert [r.name for r in open_detection_eval(root).records] == ids[5:8]  # no test: val


def test_trainval_hold_out_is_seeded_and_never_takes_test(tmp_path):
    root, ids = simple_voc(tmp_path / "voc", 30)
    make_voc(root, {}, {"trainval": ids[:24], "test": ids[24:]})
    a, b, c = open_detection(root, 0.25, 5), open_detection(root, 0.25, 5), open_detection(root, 0.25, 6)
    assert len(a.val) == 6 and len(a.train) == 18 and a.record["val"] == b.record["val"] != c.record["val"]
    for s in (a, c):
        names = {r.name for r in s.train} | {r.name for r in s.val}
        assert names == set(ids[:24]) and not {r.name for r in s.train} & {r.name for r in s.val}
    assert [r.name for r in open_detection_eval(root, split_record=a.record).records] == ids[24:]  # test wins
    for f in (root / "ImageSets" / "Main").iterdir():  # no lists at all: every annotation not in test
        f.unlink()
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in ids[24:]))
    s = open_detection(root, 0.25, 5)
    assert s.lists == {"train": "all", "val": "all"}
    assert {r.name for r in s.train} | {r.name for r in s.val} == set(ids[:24])


def test_wrong_layouts_are_one_line_errors(tmp_path):
    with pytest.raises(ParameterError, match="is not detection data; expected a PASCAL VOC folder") as e:
        open_detection(FLOWERS_MINI)
    assert e.value.param == "data" and str(FLOWERS_MINI) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ParameterPathError, match="does not exist"):
        open_detection(tmp_path / "nothing")
    simple_voc(tmp_path / "dev" / "VOC2007", 4)
    simple_voc(tmp_path / "dev" / "VOC2012", 4)
    with pytest.raises(ParameterError, match="several VOC folders .VOC2007, VOC2012.; point it at one"):
        open_detection(tmp_path / "dev")
    root, _ = simple_voc(tmp_path / "voc", 4)
    with pytest.raises(ParameterError, match="`val_split` must be between 0 and 1") as e:
        open_detection(root, val_split=1.5)
    assert e.value.param == "val_split"
    with pytest.raises(ParameterPathError, match="names a list there"):
        read_voc(root, "nosuchlist")


# ------------------------------------------------------------------------------------------------ COCO


def test_coco_round_trip(tmp_path, bccd, bccd_set):
    recs = bccd_set.records[:6]
    cat_ids = [7, 3, 11]  # not 1..K: classes follow category-id order, labels the name
    order = sorted(range(3), key=lambda k: cat_ids[k])
    images = [
        {"id": 100 + k, "file_name": r.path.name, "width": r.width, "height": r.height} for k, r in enumerate(recs)
    ]
    anns = []
    for k, r in enumerate(recs[:5]):  # the sixth has none: a negative
        for b, y in zip(r.boxes.tolist(), r.labels.tolist()):
            bbox = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            anns.append({"id": len(anns), "image_id": 100 + k, "category_id": cat_ids[y], "bbox": bbox, "iscrowd": 0})
    anns[0]["iscrowd"] = 1
    bad = [
        {"id": 900, "image_id": 555, "category_id": 7, "bbox": [1, 1, 5, 5]},
        {"id": 901, "image_id": 100, "category_id": 99, "bbox": [1, 1, 5, 5]},
        {"id": 902, "image_id": 100, "category_id": 7, "bbox": [1, 1, 0, 5]},
        {"id": 903, "image_id": 100, "category_id": 7, "bbox": [1, 1, "x"]},
    ]
    cats = [{"id": c, "name": BCCD_CLASSES[k]} for k, c in enumerate(cat_ids)]
    doc = {"images": images + [{"id": 1, "file_name": "../x.jpg"}], "annotations": anns + bad, "categories": cats}
    (tmp_path / "annotations").mkdir()
    jpath = tmp_path / "annotations" / "instances_train.json"
    jpath.write_text(json.dumps(doc))
    s = read_coco(jpath, bccd / "JPEGImages")
    assert s.classes == [BCCD_CLASSES[k] for k in order]
    assert [r.name for r in s.records] == [r.path.name for r in recs]
    for got, want in zip(s.records[:5], recs):
        assert np.allclose(got.boxes, want.boxes) and (got.width, got.height) == (want.width, want.height)
        assert [s.classes[y] for y in got.labels] == [BCCD_CLASSES[y] for y in want.labels]
    assert s.records[0].difficult.tolist() == [True] + [False] * (len(recs[0].boxes) - 1)  # iscrowd
    assert len(s.records[5].boxes) == 0
    reasons = [r for _, r in s.problems]
    assert reasons == [
        "image 1: file_name '../x.jpg' is not a relative path inside the image folder",
        "annotation '900': image_id '555' is not in images",
        "annotation '901' (image 'BloodImage_00000.jpg'): category_id '99' is not in categories",
        "annotation '903' (image 'BloodImage_00000.jpg'): bbox is not [x, y, width, height]",
        "annotation '902' (image 'BloodImage_00000.jpg'): zero-size box [1, 1, 1, 6]",  # boxes are checked last
    ]
    # a COCO folder: images beside annotations/ in <split>/, train + val files are the split
    (tmp_path / "train").symlink_to(bccd / "JPEGImages")
    (tmp_path / "val").symlink_to(bccd / "JPEGImages")
    doc["images"], doc["annotations"] = images[4:], [a for a in anns if a["image_id"] >= 104]
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    assert is_detection_data(tmp_path) and is_detection_data(jpath)
    sp = open_detection(tmp_path)
    assert sp.lists == {"train": "instances_train.json", "val": "instances_val.json"} and sp.record is None
    assert len(sp.train) == 6 and len(sp.val) == 2 and sp.classes == s.classes
    assert [r.name for r in open_detection_eval(tmp_path).records] == [r.path.name for r in recs[4:]]
    one = open_detection(jpath, val_split=0.3, seed=1)  # a file alone: seeded hold-out
    assert len(one.val) == 2 and one.record["format"] == "coco"
    assert [r.name for r in open_detection_eval(jpath, split_record=one.record).records] == one.record["val"]


# ------------------------------------------------------------------------------------ tensors and drawing


def crowded_record(tmp_path: Path):
    """A 120x90 photo with 12 boxes whose difficult flag is (label is even): alignment shows in every sample."""
    path = tmp_path / "crowd.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    xy = rng.uniform(0, 80, (12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (12, 2))], 1).clip(0, [120, 90, 120, 90]).astype(np.float32)
    labels = np.arange(12, dtype=np.int64) % 5
    return det.ImageAnnotation(path, 120, 90, boxes, labels, labels % 2 == 0, "crowd")


def test_train_transform_keeps_boxes_inside_aligned_and_seeded(tmp_path, bccd_set):
    records = [crowded_record(tmp_path), *bccd_set.records[:2]]
    ds = DetectionDataset(records, detection_train_transform(96))
    outputs = []
    for seed in range(12):
        torch.manual_seed(seed)
        img, t, i, reason = ds[seed % 3]
        assert reason is None and i == seed % 3 and img.shape == (3, 96, 96) and img.dtype == torch.float32
        assert img.min() >= 0 and img.max() <= 1
        b = t["boxes"]
        assert b.dtype == torch.float32 and (b >= 0).all() and (b <= 96).all() and (b[:, 2:] > b[:, :2]).all()
        assert len(b) == len(t["labels"]) == len(t["difficult"])
        assert t["labels"].dtype == torch.int64 and (t["labels"] >= 1).all()  # 0 is background
        if i == 0:
            assert torch.equal(t["difficult"], (t["labels"] - 1) % 2 == 0)  # still the box's own flag
        assert t["orig_size"].tolist() == [records[i].height, records[i].width] and t["image_id"] == i
        outputs.append(img)
    assert not torch.equal(outputs[0], outputs[3])  # the same photo, another seed
    torch.manual_seed(3)
    again = ds[0]
    torch.manual_seed(3)
    same = ds[0]
    assert torch.equal(again[0], same[0]) and torch.equal(again[1]["boxes"], same[1]["boxes"])
    assert torch.equal(again[1]["difficult"], same[1]["difficult"])
    view = SeededView(ds, 11)
    a, b = view[(1, 2)], view[(1, 2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert not torch.equal(view[(1, 3)][0], a[0])  # another epoch, another augmentation


def test_eval_transform_scales_boxes_and_keeps_all(bccd_set):
    r = bccd_set.records[0]
    img, t, _, _ = DetectionDataset([r], detection_eval_transform(160))[0]
    assert img.shape == (3, 160, 160) and len(t["boxes"]) == len(r.boxes)
    want = torch.from_numpy(r.boxes) * torch.tensor([160 / r.width, 160 / r.height] * 2)
    assert torch.allclose(t["boxes"], want, atol=1e-4) and torch.equal(t["labels"], torch.from_numpy(r.labels) + 1)


def test_bad_images_are_skipped_by_collate(tmp_path, bccd_set):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (48, 64)).save(tmp_path / "turned.jpg")
    Image.new("RGB", (320, 240)).save(tmp_path / "half.jpg")  # BCCD's 640x480, stored at half size
    r = bccd_set.records[0]
    recs = [
        r,
        det.ImageAnnotation(tmp_path / "broken.jpg", 64, 48, r.boxes[:0], r.labels[:0], r.difficult[:0], "broken"),
        det.ImageAnnotation(tmp_path / "turned.jpg", 64, 48, r.boxes[:0], r.labels[:0], r.difficult[:0], "turned"),
        det.ImageAnnotation(tmp_path / "half.jpg", 640, 480, r.boxes, r.labels, r.difficult, "half"),
    ]
    ds = DetectionDataset(recs, detection_eval_transform(64))
    samples = [ds[i] for i in range(4)]
    assert samples[1][:3] == (None, None, 1) and "not a readable image" in samples[1][3]
    assert samples[2][:3] == (None, None, 2)
    assert samples[2][3].startswith("image is 48x64 but its annotation is for 64x48")
    assert torch.allclose(samples[3][1]["boxes"], samples[0][1]["boxes"], atol=1e-3)  # scaled with the photo
    imgs, targets, idx, bad = collate_detection(samples)
    assert imgs.shape == (2, 3, 64, 64) and idx.tolist() == [0, 3] and [b[0] for b in bad] == [1, 2]
    assert [t["image_id"] for t in targets] == [0, 3]
    assert collate_detection([samples[1]]) == (None, None, None, [(1, samples[1][3])])


def test_draw_detections_with_untrusted_names(bccd_set):
    img = torch.rand(3, 60, 80)
    names = ["ok", "bad\x1b[31m\nname\u202e", "x" * 500, "\u732b"]
    boxes = [[1, 1, 30, 30], [50, 40, 10, 5], [0, 0, float("inf"), 9], [-5, -5, 200, 200], [2, 2, 9, 9]]
    out = draw_detections(img, boxes, [1, 2, 3, 4, 9], [0.9, 0.8, 0.7, 0.6, 0.5], names)
    assert out.size == (80, 60) and out.mode == "RGB"
    assert draw._label_text(names[1]) == "bad [31m name" and len(draw._label_text(names[2])) == draw.MAX_LABEL_CHARS
    pil = Image.open(bccd_set.records[0].path)
    assert draw_detections(pil, [], [], None, []).size == pil.size
