"""``compare`` on detection data: SSDLite per family at matched *backbone* budgets (MFLOPs at 224 px), backbones
from one folder (checked to have the planned width), mAP@0.5 reports and per-image bootstrap verdicts; trained on
a 24-photo BCCD subset at 128 px for one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_detection_train import bccd_subset

from fdmobilenet._errors import ParameterError
from fdmobilenet.cli import main
from fdmobilenet.detection_metrics import DetectionMeter, ImageOutcomes
from fdmobilenet.models import create_model, solve_width
from fdmobilenet.preprocess import Preprocess
from fdmobilenet.train import compare as cmp
from fdmobilenet.train import compare_detection as det
from fdmobilenet.train import verdicts as vd
from fdmobilenet.weights import save_weights

FD12, MV12 = 0.25, 0.125  # the widths whose classifiers cost 12 MFLOPs at 224 px
TINY = ["--resolution", "128", "--epochs", "1", "--seeds", "1", "--batch-size", "8", "--threads", "1"]
TINY += ["--workers", "0", "--val-split", "0.25"]


def save_backbone(
    path: Path, family: str, width: float, source: str = "fdmobilenet train (small)", **kw: int
) -> Path:  # fmt: skip
    """Untrained classification weights of ``family`` at ``width``, saved as a training run saves them."""
    model = create_model(family, width=width, num_classes=5, **kw)
    meta = {"model": family, "num_classes": 5, "model_kwargs": {"width": width, **kw}, **Preprocess(224).to_meta()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), path, {**meta, "source": source, "val_top1": 20.0})
    return path


@pytest.fixture(scope="module")
def bccd(tmp_path_factory) -> Path:
    return bccd_subset(tmp_path_factory.mktemp("det") / "bccd")


def test_plan_solves_backbone_widths_at_224_whatever_the_detector_resolution() -> None:
    jobs = cmp.plan_detection([12], ["fd_mobilenet", "mobilenet_v1"], 2, num_classes=3, resolution=128)
    assert [j.name for j in jobs] == [
        "ssdlite_fd_mobilenet-scratch-12M-w0.25-seed0", "ssdlite_fd_mobilenet-scratch-12M-w0.25-seed1",
        "ssdlite_mobilenet_v1-scratch-12M-w0.125-seed0", "ssdlite_mobilenet_v1-scratch-12M-w0.125-seed1",
    ]  # fmt: skip
    assert {j.model for j in jobs} == {"ssdlite_fd_mobilenet", "ssdlite_mobilenet_v1"}
    for j in jobs:  # the width is the 224 px classifier's for the budget (at 128 px, 12 MFLOPs buys far wider ones)
        assert j.width == {"fd_mobilenet": FD12, "mobilenet_v1": MV12}[j.family] == solve_width(j.family, 12)
        assert abs(j.backbone_macs / 1e6 - 12) < 0.36 and j.pretrained is None
        # the detector's own cost, at its resolution, split by part
        assert j.parts["total"] == j.macs == sum(j.parts[k] for k in ("backbone", "extras", "head"))
        assert j.parts["backbone"] < j.backbone_macs  # 128 px < 224 px


def test_backbone_files_are_found_and_checked(tmp_path: Path) -> None:
    cells = [("fd_mobilenet", 12.0, FD12, None), ("mobilenet_v1", 12.0, MV12, None)]
    bbs = tmp_path / "bbs"
    save_backbone(bbs / "fd_mobilenet-12M.safetensors", "fd_mobilenet", FD12)
    with pytest.raises(ParameterError, match=r"no mobilenet_v1 weights for 12 MFLOPs .* mobilenet_v1-12M.safetensors"):
        det.find_backbones(bbs, cells)
    save_backbone(bbs / "mobilenet_v1-12M.safetensors", "mobilenet_v1", MV12)
    found = det.find_backbones(bbs, cells)
    assert found[("mobilenet_v1", 12.0)].path == str(bbs / "mobilenet_v1-12M.safetensors")
    assert found[("fd_mobilenet", 12.0)].info["recipe"] == "small"
    # another width is refused, naming both widths
    save_backbone(bbs / "fd_mobilenet-12M.safetensors", "fd_mobilenet", 0.5)
    with pytest.raises(ParameterError, match="is fd_mobilenet width 0.5, but the 12 MFLOPs fd_mobilenet backbone is "
                                             "width 0.25 \\(solved at 224 px\\)") as e:  # fmt: skip
        det.find_backbones(bbs, cells)
    assert e.value.param == "backbones"
    # backbones.json wins over the file names; paths relative to it; another family is refused
    (bbs / "backbones.json").write_text(json.dumps({"fd_mobilenet@12": "mobilenet_v1-12M.safetensors"}))
    with pytest.raises(ParameterError, match=r"holds mobilenet_v1 \(mobilenet_v1\), not fd_mobilenet"):
        det.find_backbones(bbs, cells)
    save_backbone(bbs / "elsewhere" / "fd.safetensors", "fd_mobilenet", FD12)
    (bbs / "backbones.json").write_text(
        json.dumps({"fd_mobilenet@12": "elsewhere/fd.safetensors", "mobilenet_v1@12.0": "mobilenet_v1-12M.safetensors"})
    )
    assert det.find_backbones(bbs, cells)[("fd_mobilenet", 12.0)].path == str(bbs / "elsewhere" / "fd.safetensors")
    # a classification compare's folder: runs/<family>-<budget>M-w<width>-seed<s>/best.safetensors, lowest seed
    cls = tmp_path / "cls"
    for fam, w in (("fd_mobilenet", FD12), ("mobilenet_v1", MV12)):
        for seed in (1, 0):
            save_backbone(cls / "runs" / f"{fam}-12M-w{w:g}-seed{seed}" / "best.safetensors", fam, w)
    found = det.find_backbones(cls, cells)
    assert found[("fd_mobilenet", 12.0)].path.endswith("fd_mobilenet-12M-w0.25-seed0/best.safetensors")
    # ShuffleNet V1: the group count is checked too (the model's default, 3, when the file names none)
    save_backbone(cls / "shufflenet_v1-12M.safetensors", "shufflenet_v1", 0.225, groups=3)
    assert det.find_backbones(cls, [("shufflenet_v1", 12.0, 0.225, 3)])[("shufflenet_v1", 12.0)].groups == 3
    with pytest.raises(ParameterError, match="is shufflenet_v1 g3 width 0.225, but .* g8 width 0.225"):
        det.find_backbones(cls, [("shufflenet_v1", 12.0, 0.225, 8)])


def test_a_mismatched_backbone_is_one_line_before_any_training(bccd: Path, tmp_path: Path, capsys) -> None:
    bbs = tmp_path / "bbs"
    save_backbone(bbs / "fd_mobilenet-12M.safetensors", "fd_mobilenet", 0.3)
    save_backbone(bbs / "mobilenet_v1-12M.safetensors", "mobilenet_v1", MV12)
    args = ["compare", "--data", str(bccd), "--budgets", "12", "--families", "fd_mobilenet,mobilenet_v1"]
    code = main([*args, "--backbones", str(bbs), "--out", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--backbones" in err and "width 0.3" in err, err
    assert not (tmp_path / "o").exists()
    # backbones and extra rows are for detection data only
    flowers = Path(__file__).parent / "data" / "flowers-mini"
    code = main(["compare", "--data", str(flowers), "--backbones", str(bbs), "--out", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--backbones" in err and "detection data" in err, err
    code = main([*args, "--extra-row", "bad name=x.safetensors", "--out", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--extra-row" in err and "NAME=FILE" in err, err


def test_detectors_compared_on_map_with_pretrained_backbones_and_an_extra_row(bccd: Path, tmp_path: Path, capsys):
    bbs = tmp_path / "bbs"
    save_backbone(bbs / "fd_mobilenet-12M.safetensors", "fd_mobilenet", FD12)
    save_backbone(bbs / "mobilenet_v1-12M.safetensors", "mobilenet_v1", MV12)
    other = save_backbone(tmp_path / "other.safetensors", "fd_mobilenet", FD12, source="somebody else")
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(bccd), "--budgets", "12", "--families", "fd_mobilenet,mobilenet_v1"]
    args += ["--backbones", str(bbs), "--extra-row", f"other={other}", "--out", str(out), *TINY]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "budgets in backbone MFLOPs at 224 px; backbones from" in log
    report = json.loads((out / "results.json").read_text())
    assert report["task"] == "detection" and report["metric"] == "val_map50"
    assert report["budgets"] == "backbone MFLOPs at 224 px" and report["differ"] == []
    rows = {r["family"]: r for r in report["rows"]}
    assert set(rows) == {"ssdlite_fd_mobilenet", "ssdlite_mobilenet_v1", "ssdlite_fd_mobilenet+other"}
    for r in rows.values():
        assert 0 <= r["map50_mean"] <= 100 and 0 <= r["map50_07_mean"] <= 100 and r["resolution"] == 128
        assert abs(r["backbone_mmacs_224"] - 12) < 0.36 and r["detector_mmacs"] < r["backbone_mmacs_224"]
        assert "top1_mean" not in r
    assert rows["ssdlite_mobilenet_v1"]["backbone_weights"] == str((bbs / "mobilenet_v1-12M.safetensors").resolve())
    # every run re-scored its best weights image by image: the same mAP as training logged, kept for the bootstrap
    for run in (out / "runs").iterdir():
        done = json.loads((run / "done.json").read_text())
        assert (run / "val_detections.npz").is_file() and done["eval_map50"] == pytest.approx(done["map50"], abs=0.01)
    pairs = {(v["a"], v["b"]): v for v in report["verdicts"]}
    assert len(pairs) == 3 and ("ssdlite_fd_mobilenet", "ssdlite_mobilenet_v1") in pairs
    for v in pairs.values():
        assert v["photos"] == 6 and v["seeds"] == 1 and v["lo"] <= v["diff"] <= v["hi"]
        assert v["verdict"] in ("within noise", f"{v['a']} ahead", f"{v['b']} ahead")
    md = (out / "results.md").read_text()
    for text in ("val mAP@0.5, all-point (VOC2010+)", "val mAP@0.5, 11-point (VOC2007)", "backbone MFLOPs at 224 px",
                 "## Detector cost at 128 px", "## Backbones", "| ssdlite_fd_mobilenet+other |", "extra rows",
                 "Difference in val mAP@0.5", "| images |", "image sampling only"):  # fmt: skip
        assert text in md, text
    assert "val top-1 %" not in md and "FROM SCRATCH" not in md and "photos" not in md
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"map50_mean", "map50_std", "map50_07_mean", "backbone_mmacs_224", "detector_mmacs"} <= set(header)
    assert (out / "map50_vs_mflops.png").read_bytes()[:4] == b"\x89PNG"
    assert "mAP@0.5 points" in log
    # a re-run keeps every run, even one whose per-image file was lost (it is re-scored, not retrained)
    (next((out / "runs").iterdir()) / "val_detections.npz").unlink()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done before, kept") == 3
    assert json.loads((out / "results.json").read_text())["verdicts"] == report["verdicts"]
    # the same folder with other backbone weights is refused, not reported as if trained with them
    mv1 = str(bbs / "mobilenet_v1-12M.safetensors")
    (bbs / "backbones.json").write_text(json.dumps({"fd_mobilenet@12": str(other), "mobilenet_v1@12": mv1}))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was trained with --pretrained" in err and "another --out" in err, err


def test_extra_rows_land_at_the_budget_their_backbone_costs(official_weights, tmp_path: Path) -> None:
    jobs = cmp.plan_detection(
        [12, 40], ["fd_mobilenet"], 1, num_classes=3, resolution=128, pretrained_from=official_weights["025"].parent,
        extra_rows={"half": str(official_weights["050"])},
    )  # fmt: skip
    named = {(j.label, j.budget): j for j in jobs}
    assert set(named) == {
        ("ssdlite_fd_mobilenet", 12), ("ssdlite_fd_mobilenet", 40), ("ssdlite_fd_mobilenet+authors", 12),
        ("ssdlite_fd_mobilenet+authors", 40), ("ssdlite_fd_mobilenet+half", 40),
    }  # fmt: skip
    assert named[("ssdlite_fd_mobilenet+authors", 12)].pretrained.endswith("fd_mobilenet_025.safetensors")
    assert named[("ssdlite_fd_mobilenet+half", 40)].name == "ssdlite_fd_mobilenet+half-40M-w0.5-seed0"
    with pytest.raises(ParameterError, match="costs 40.1 MFLOPs at 224 px, not within 5 % of a budget"):
        cmp.plan_detection([12], ["fd_mobilenet"], 1, 3, 128, extra_rows={"half": str(official_weights["050"])})


def test_scratch_backbones_are_said_loudly(tmp_path: Path) -> None:
    row = {"family": "ssdlite_fd_mobilenet", "budget_mflops": 12.0, "width": 0.25, "backbone_macs": 12_037_952,
           "macs": 32_701_280, "macs_by_part": {"backbone": 24_044_800, "extras": 4_740_832, "head": 3_915_648},
           "params": 306_704, "resolution": 320, "seed": 0, "map50": 41.0, "map50_07": 40.0, "backbone": None,
           "train_seconds": 1.0, "img_per_s": 1.0}  # fmt: skip
    task = det.DetectionCompare()
    summary = cmp.summarise(task, [row, {**row, "seed": 1, "map50": 43.0, "map50_07": 41.0}])
    cmp.write_reports(task, summary, tmp_path, "t", None, [], {"backbones": {}, "differ": []})
    md = (tmp_path / "results.md").read_text()
    assert "**BACKBONES FROM SCRATCH**" in md and "42.00 ± 1.41" in md and "40.50 ± 0.71" in md
    assert "32.7 (24.0+4.7+3.9)" in md


def test_backbones_pretrained_differently_are_flagged(tmp_path: Path) -> None:
    a = det.read_backbone(save_backbone(tmp_path / "a.safetensors", "fd_mobilenet", FD12))
    b = det.read_backbone(save_backbone(tmp_path / "b.safetensors", "mobilenet_v1", MV12, "fdmobilenet train (paper)"))
    assert det.differences([a, b]) == ["recipe"] and det.differences([a, a]) == []


def _image(rng: np.random.Generator):
    n = int(rng.integers(0, 5))
    gt = rng.uniform(0, 50, (n, 2))
    gt = np.hstack([gt, gt + rng.uniform(5, 30, (n, 2))])
    m = int(rng.integers(0, 12))
    boxes = rng.uniform(0, 50, (m, 2))
    boxes = np.hstack([boxes, boxes + rng.uniform(5, 30, (m, 2))])
    gt_labels, labels, scores = rng.integers(1, 4, n), rng.integers(1, 4, m), rng.random(m)
    k = min(n, m)  # the first k detections find the first k objects, mostly ranked above the rest
    boxes[:k] = gt[:k] + rng.normal(0, 2, (k, 4))
    labels[:k], scores[:k] = gt_labels[:k], scores[:k] + 0.5
    pred = {"boxes": boxes, "scores": scores, "labels": labels}
    return pred, {"boxes": gt, "labels": gt_labels, "difficult": rng.random(n) < 0.1}


def test_map_over_weighted_images_is_map_over_repeated_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [_image(rng) for _ in range(40)]
    meter = DetectionMeter(["a", "b", "c"])
    meter.update(*zip(*images))
    outcomes = meter.outcomes()
    assert outcomes.map50()[0] == pytest.approx(meter.compute().map50, abs=1e-4)
    counts = rng.integers(0, 3, 40)
    repeated = DetectionMeter(["a", "b", "c"])
    for (pred, target), k in zip(images, counts):
        for _ in range(k):
            repeated.update([pred], [target])
    assert outcomes.map50(counts[None])[0] == pytest.approx(repeated.compute().map50, abs=1e-4)
    outcomes.save(tmp_path / "o.npz", [f"img{i}" for i in range(40)])
    loaded, names = ImageOutcomes.load(tmp_path / "o.npz")
    assert names[3] == "img3" and loaded.map50(counts[None])[0] == outcomes.map50(counts[None])[0]


def test_map_bootstrap_finds_a_real_difference_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(1)
    images = [_image(rng) for _ in range(80)]
    good, bad = DetectionMeter(["a", "b", "c"]), DetectionMeter(["a", "b", "c"])
    good.update(*zip(*images))
    # the same images, every other one's boxes moved off their objects
    worse = [({**p, "boxes": p["boxes"] + 40 * (i % 2)}, t) for i, (p, t) in enumerate(images)]
    bad.update(*zip(*worse))
    a, b = good.outcomes(), bad.outcomes()
    diff, lo, hi = vd.paired_bootstrap_map([a], [a])
    assert diff == 0 and lo == 0 == hi
    diff, lo, hi = vd.paired_bootstrap_map([a], [b])
    assert diff == pytest.approx(a.map50()[0] - b.map50()[0]) and 0 < lo < diff < hi
    assert vd.verdict_word("A", "B", lo, hi) == "A ahead"
    assert vd.paired_bootstrap_map([a], [b]) == (diff, lo, hi)  # seeded: the same report every time
    # two seeds that disagree leave it open
    diff, lo, hi = vd.paired_bootstrap_map([a, b], [b, a])
    assert diff == pytest.approx(0, abs=1e-9) and lo < 0 < hi
