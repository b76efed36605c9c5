"""VOC AP (11-point and all-point) on hand-computed rankings, the VOC matching rules (difficult boxes,
duplicates, the devkit's best-overlap rule), classes without ground truth, the outputs, and agreement
with pycocotools (exact where its 101-point interpolation must agree, within a point on random scenes)."""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest
import torch

from fdmobilenet._utils import MissingDependencyError
from fdmobilenet.detection_coco import coco_eval as _coco_eval
from fdmobilenet.detection_metrics import (
    DetectionMeter,
    DetectionScores,
    box_iou,
    detection_scores,
    voc_ap,
)

FAR = [900.0, 900.0, 910.0, 910.0]  # overlaps no ground truth below


def gt_box(i: int) -> list[float]:
    return [100.0 * i, 0.0, 100.0 * i + 50, 50.0]  # disjoint squares along x


def ranked(outcomes: str, n_gt: int, label: int = 1) -> tuple[dict, dict]:
    """One image whose detections, best first, are ``outcomes`` ('T' hits the next unclaimed ground-truth
    box, 'F' misses everything) over ``n_gt`` disjoint ground-truth boxes."""
    boxes, hit = [], 0
    for o in outcomes:
        boxes.append(gt_box(hit) if o == "T" else FAR)
        hit += o == "T"
    n = len(outcomes)
    pred = {"boxes": np.array(boxes).reshape(-1, 4), "scores": np.linspace(0.9, 0.1, n), "labels": [label] * n}
    return pred, {"boxes": np.array([gt_box(i) for i in range(n_gt)]), "labels": [label] * n_gt}


def score(outcomes: str, n_gt: int, coco: bool = False) -> DetectionScores:
    pred, target = ranked(outcomes, n_gt)
    return detection_scores([pred], [target], ["thing"], coco=coco)


def coco_ap50(preds: list[dict], targets: list[dict], k: int) -> float:
    """pycocotools' AP at IoU 0.5 only (101-point), every detection kept, all areas: the mean over classes
    with ground truth, percent."""
    images = []
    for p, t in zip(preds, targets):
        boxes, gt = (np.asarray(x, dtype=np.float64).reshape(-1, 4) for x in (p["boxes"], t["boxes"]))
        difficult = np.asarray(t.get("difficult", [False] * len(gt)), dtype=bool)
        scores, labels, gt_labels = (np.asarray(x) for x in (p["scores"], p["labels"], t["labels"]))
        images.append((boxes, scores, labels.astype(int), gt, gt_labels.astype(int), difficult))
    ev = _coco_eval(images, k, iou_thrs=[0.5], max_dets=100_000)
    prec = ev.eval["precision"][0, :, :, 0, -1]  # [recall threshold, class] at area "all"
    per_class = [prec[:, c].mean() for c in range(k) if (prec[:, c] > -1).all()]
    return 100 * float(np.mean(per_class))


def test_perfect_detections_score_100():
    s = score("TTT", 3)
    assert s.map50 == s.map50_07 == 100
    assert s.per_class[0][1:] == (100, 100, 3, 3)


def test_known_curve_eleven_point_and_all_point_differ():
    # 4 ground-truth boxes; ranking T F T F F T (the 4th box is missed).
    # after each: recall .25 .25 .5 .5 .5 .75, precision 1 1/2 2/3 1/2 2/5 1/2
    # envelope at the recall steps: .25 -> 1, .5 -> 2/3, .75 -> 1/2
    # all-point: .25*1 + .25*2/3 + .25*1/2 = 13/24 = 54.1667%
    # 11-point: r=0,.1,.2 -> 1; r=.3,.4,.5 -> 2/3; r=.6,.7 -> 1/2; r=.8,.9,1 -> 0: (3 + 2 + 1)/11 = 54.5455%
    s = score("TFTFFT", 4)
    assert s.map50 == pytest.approx(100 * 13 / 24)
    assert s.map50_07 == pytest.approx(100 * 6 / 11)
    rec, prec = [0.25, 0.25, 0.5, 0.5, 0.5, 0.75], [1, 1 / 2, 2 / 3, 1 / 2, 2 / 5, 1 / 2]
    assert voc_ap(rec, prec) == pytest.approx(13 / 24)
    assert voc_ap(rec, prec, eleven_point=True) == pytest.approx(6 / 11)


def test_eleven_point_keeps_a_recall_of_exactly_point_three():
    # recall reaches exactly 3/10; 0.1 * 3 (what np.arange makes) is above it and would lose r=.3's point
    assert voc_ap([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], eleven_point=True) == pytest.approx(4 / 11)


def test_difficult_boxes_are_neither_hits_nor_misses():
    easy, hard = gt_box(0), gt_box(1)
    target = {"boxes": [easy, hard], "labels": [1, 1], "difficult": [False, True]}
    # best first: the difficult box, a duplicate on it, then the easy one: both ignored, one TP
    pred = {"boxes": [hard, hard, easy], "scores": [0.9, 0.8, 0.7], "labels": [1, 1, 1]}
    s = detection_scores([pred], [target], ["thing"])
    assert (s.map50, s.map50_07) == (100, 100)  # were they FPs, precision would be 1/3 at the only hit
    assert s.per_class[0].n_gt == 1 and s.per_class[0].n_det == 3
    # an undetected difficult box is not a miss either; a box hitting nothing is still an FP
    pred = {"boxes": [FAR, easy], "scores": [0.9, 0.8], "labels": [1, 1]}
    assert detection_scores([pred], [target], ["thing"]).map50 == pytest.approx(50)
    # the same flag as torchvision's "iscrowd"
    crowd = {"boxes": [easy, hard], "labels": [1, 1], "iscrowd": torch.tensor([0, 1])}
    pred = {"boxes": [hard, easy], "scores": [0.9, 0.7], "labels": [1, 1]}
    assert detection_scores([pred], [crowd], ["thing"]).map50 == 100


def test_duplicates_are_false_positives():
    a, b = gt_box(0), gt_box(1)
    preds = [
        {"boxes": [a, [1.0, 1.0, 51.0, 51.0]], "scores": [0.9, 0.8], "labels": [1, 1]},  # a hit and its duplicate
        {"boxes": [b], "scores": [0.7], "labels": [1]},
    ]
    targets = [{"boxes": [a], "labels": [1]}, {"boxes": [b], "labels": [1]}]
    # T F T over 2 boxes: recall .5 .5 1, precision 1 1/2 2/3; all-point .5 + .5*2/3 = 5/6;
    # 11-point: r<=.5 (6 points) -> 1, r>=.6 (5 points) -> 2/3: (6 + 10/3)/11 = 28/33
    s = detection_scores(preds, targets, ["thing"])
    assert s.map50 == pytest.approx(100 * 5 / 6)
    assert s.map50_07 == pytest.approx(100 * 28 / 33)


def test_devkit_rule_best_overlap_already_claimed_is_a_false_positive():
    a, b = [0.0, 0.0, 100.0, 100.0], [30.0, 0.0, 130.0, 100.0]  # two overlapping ground-truth boxes
    second = [10.0, 0.0, 110.0, 100.0]  # IoU .82 with a (claimed), .54 with b (free)
    iou = box_iou([second], [a, b])[0]
    assert iou[0] > iou[1] >= 0.5
    pred = {"boxes": [a, second], "scores": [0.9, 0.8], "labels": [1, 1]}
    s = detection_scores([pred], [{"boxes": [a, b], "labels": [1, 1]}], ["thing"])
    assert s.map50 == pytest.approx(50)  # the VOC devkit: FP (COCO would give it b)


def test_classes_without_ground_truth_are_left_out_of_the_mean():
    t_pred, t_target = ranked("TF", 1, label=1)  # class 1: AP 100
    pred = {k: np.concatenate([np.asarray(t_pred[k]), np.asarray(v)]) for k, v in
            (("boxes", [FAR]), ("scores", [0.95]), ("labels", [2]))}  # fmt: skip
    s = detection_scores([pred], [t_target], ["cat", "dog", "emu"])
    assert s.map50 == s.map50_07 == 100  # dog's false positive and emu's nothing do not count
    cat, dog, emu = s.per_class
    assert math.isnan(dog.ap) and math.isnan(emu.ap_07) and (dog.n_gt, dog.n_det) == (0, 1)
    assert s.n_classes_with_gt == 1
    assert "2 of the 3 classes have no ground truth" in s.table()
    # all ground truth difficult: undefined as well; none anywhere: no mean, None in the row
    diff = dict(t_target, difficult=[True])
    s = detection_scores([t_pred], [diff], ["cat"])
    assert math.isnan(s.map50) and s.as_row() == {"val_map50": None, "val_map50_07": None}


def test_class_with_ground_truth_and_no_detections_scores_zero():
    _, target = ranked("", 2)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    s = detection_scores([empty], [target], ["thing"])
    assert (s.map50, s.map50_07, s.per_class[0].n_det) == (0, 0, 0)


def test_streaming_and_torch_inputs_match_one_call():
    rng = np.random.default_rng(0)
    preds, targets = random_scene(rng, n_images=12, k=3)
    whole = detection_scores(preds, targets, ["a", "b", "c"])
    meter = DetectionMeter(["a", "b", "c"])
    for i in range(0, 12, 5):
        tp = [{k: torch.as_tensor(np.asarray(v)) for k, v in p.items()} for p in preds[i : i + 5]]
        tt = [{k: torch.as_tensor(np.asarray(v)) for k, v in t.items()} for t in targets[i : i + 5]]
        meter.update(tp, tt)
    again = meter.compute()
    assert again.n_images == 12 and (again.map50, again.map50_07) == (whole.map50, whole.map50_07)
    meter.reset()
    with pytest.raises(ValueError, match="no images"):
        meter.compute()


def test_bad_inputs_are_named():
    pred, target = ranked("T", 1)
    meter = DetectionMeter(["thing"])
    with pytest.raises(ValueError, match="1..1") as e:
        meter.update([dict(pred, labels=[0])], [target])  # torchvision's background is not a class
    assert e.value.param == "preds"
    with pytest.raises(ValueError, match="missing scores"):
        meter.update([{"boxes": pred["boxes"], "labels": [1]}], [target])
    with pytest.raises(ValueError, match="one per image"):
        meter.update([pred, pred], [target])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        meter.update([pred], [dict(target, boxes=[1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="finite score"):
        meter.update([dict(pred, scores=[float("nan")])], [target])
    with pytest.raises(ValueError, match="background"):
        DetectionMeter(["__background__", "thing"])


def test_row_table_and_csv_escape_untrusted_names(tmp_path):
    pred, target = ranked("TFTFFT", 4)
    name = "=cmd|' /C calc'!A0\x1b[31m\nred"
    s = detection_scores([pred], [target], [name])
    assert s.as_row() == {"val_map50": 54.1667, "val_map50_07": 54.5455}
    assert s.as_row("test_").keys() == {"test_map50", "test_map50_07"}
    table = s.table()
    assert "\x1b" not in table and "54.17" in table and "54.55" in table and len(table.splitlines()) == 3
    path = tmp_path / "per_class.csv"
    s.write_csv(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["label", "class", "ap50", "ap50_07", "n_gt", "n_det"]
    assert rows[1][0] == "1" and rows[1][1].startswith("'=") and "\x1b" not in rows[1][1]
    assert rows[1][2:] == ["54.1667", "54.5455", "4", "6"]


def test_missing_pycocotools_names_the_extra_and_voc_still_works(monkeypatch):
    for mod in [m for m in sys.modules if m.startswith("pycocotools")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"fdmobilenet\[detection\]") as e:
        DetectionMeter(["thing"], coco=True)
    assert "\n" not in str(e.value)
    assert score("TFTFFT", 4).map50 == pytest.approx(100 * 13 / 24)


# pycocotools' AP50 averages the precision envelope at the 101 recalls 0, .01, ..., 1; ours integrates it.
# Where the envelope steps only at recalls that are multiples of .01 (and that pycocotools' linspace hits
# exactly: quarters do), the 100 points from .01 on sum to exactly 100 x ours, and recall 0 adds the top
# precision p0: COCO = (100 AP + p0) / 101, equal to AP exactly when the envelope is flat up to recall 1.


def test_pycocotools_exact_on_a_step_envelope():
    pred, target = ranked("TFTFFT", 4)  # envelope 1, 2/3, 1/2 at recall .25, .5, .75; p0 = 1
    ours = score("TFTFFT", 4).map50
    assert coco_ap50([pred], [target], 1) == pytest.approx((100 * ours + 100) / 101, abs=1e-9)
    pred, target = ranked("FTFTFTFT", 4)  # precision 1/2 at every hit: flat, full recall
    ours = score("FTFTFTFT", 4)
    assert ours.map50 == ours.map50_07 == pytest.approx(50)
    assert coco_ap50([pred], [target], 1) == pytest.approx(ours.map50, abs=1e-9)


def test_pycocotools_exact_with_difficult_boxes_and_several_classes():
    # class 1 flat at 1/2 over 4 boxes, class 2 perfect, plus a difficult box (and a hit on it) in class 2
    p1, t1 = ranked("FTFTFTFT", 4, label=1)
    p2 = {"boxes": [gt_box(6), gt_box(5), gt_box(7)], "scores": [0.95, 0.6, 0.5], "labels": [2, 2, 2]}
    t2 = {"boxes": [gt_box(5), gt_box(6), gt_box(7)], "labels": [2, 2, 2], "difficult": [False, True, False]}
    preds = [p1, p2]
    targets = [dict(t1, difficult=[False] * 4), t2]
    ours = detection_scores(preds, targets, ["a", "b"])
    assert [c.ap for c in ours.per_class] == pytest.approx([50, 100])
    assert coco_ap50(preds, targets, 2) == pytest.approx(ours.map50, abs=1e-9)


def random_scene(rng: np.random.Generator, n_images: int, k: int) -> tuple[list[dict], list[dict]]:
    """Ground truth of random sizes and classes; each box found (jittered, score rising with its overlap)
    with probability .85, sometimes twice, some found under the wrong class, and a few pure false alarms."""
    preds, targets = [], []
    for _ in range(n_images):
        n = int(rng.integers(1, 9))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(8, 200, (n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, k + 1, n)
        boxes, scores, plabels = [], [], []
        for g, c, size in zip(gt, labels, wh):
            for _copy in range(1 + (rng.random() < 0.15)):
                if rng.random() < 0.85:
                    box = g + rng.normal(0, 0.12, 4) * np.tile(size, 2)
                    box[2:] = np.maximum(box[2:], box[:2] + 1)
                    quality = box_iou([box], [g])[0, 0]
                    boxes.append(box)
                    scores.append(float(np.clip(0.6 * quality + rng.normal(0, 0.2), 0.01, 1)))
                    plabels.append(int(c) if rng.random() < 0.9 else int(rng.integers(1, k + 1)))
        for _ in range(int(rng.integers(0, 4))):
            xy0 = rng.uniform(0, 450, 2)
            boxes.append(np.concatenate([xy0, xy0 + rng.uniform(8, 120, 2)]))
            scores.append(float(rng.uniform(0.01, 0.7)))
            plabels.append(int(rng.integers(1, k + 1)))
        preds.append({"boxes": np.array(boxes).reshape(-1, 4), "scores": np.array(scores), "labels": plabels})
        targets.append({"boxes": gt, "labels": labels})
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pycocotools_within_a_point_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    k = 5
    preds, targets = random_scene(rng, n_images=60, k=k)
    assert sum(len(t["labels"]) for t in targets) > 200
    ours = detection_scores(preds, targets, list("abcde"))
    theirs = coco_ap50(preds, targets, k)
    assert abs(ours.map50 - theirs) < 0.5, (ours.map50, theirs)  # seeds 0-7 came out within 0.07
    assert 30 < ours.map50 < 95  # neither trivial nor hopeless


def test_meter_coco_summary():
    rng = np.random.default_rng(3)
    preds, targets = random_scene(rng, n_images=30, k=3)
    s = detection_scores(preds, targets, ["a", "b", "c"], coco=True)
    assert s.coco_map is not None and 0 < s.coco_map < s.coco_map50
    assert abs(s.coco_map50 - s.map50) < 1.5  # 100 detections per image and class: all of them here
    row = s.as_row()
    assert list(row) == ["val_map50", "val_map50_07", "val_map", "val_map50_coco", "val_map75_coco",
                         "val_map_small", "val_map_medium", "val_map_large"]  # fmt: skip
    assert row["val_map"] == round(s.coco_map, 4)
    assert "COCO mAP@[.5:.95]" in s.table()
    # no detections at all: COCO scores 0 where there is ground truth, like VOC
    empty = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []} for _ in targets]
    s = detection_scores(empty, targets, ["a", "b", "c"], coco=True)
    assert s.map50 == 0 and s.coco_map == 0
