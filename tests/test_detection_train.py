"""Detectors through the one engine and the same commands: train (task from the data), resume, eval (mAP on
the run's held-out photos), predict (drawn photos and boxes) — on a tiny real subset of BCCD."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from fdmobilenet.cli import main
from fdmobilenet.weights import read_weights
from helpers import env as helpers_env
from helpers import run_cli, shared_path

TINY = ["--resolution", "128", "--batch-size", "8", "--threads", "1", "--workers", "0", "--val-split", "0.25"]


def bccd_subset(dst: Path, n: int = 24) -> Path:
    """The first ``n`` BCCD photos in their VOC layout (trainval list only, as the shared set has)."""
    src = shared_path("datasets/detection/bccd")
    ids = (src / "ImageSets/Main/trainval.txt").read_text().split()[:n]
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        shutil.copy(src / "JPEGImages" / f"{i}.jpg", dst / "JPEGImages")
        shutil.copy(src / "Annotations" / f"{i}.xml", dst / "Annotations")
    (dst / "ImageSets/Main/trainval.txt").write_text("\n".join(ids) + "\n")
    return dst


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("det")
    data = bccd_subset(root / "bccd")
    out = root / "run"
    args = ["train", "--data", str(data), "--model", "fd_mobilenet_025", "--epochs", "2", "--out", str(out), *TINY]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(args)
    assert code == 0, buf.getvalue()
    return data, out, buf.getvalue()


def test_boxes_pick_the_detector_and_best_follows_map(trained) -> None:
    data, out, log = trained
    assert "training the detector ssdlite_fd_mobilenet_025" in log
    assert "recipe detection" in log
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_map50"] <= 100 and 0 <= r["val_map50_07"] <= 100 for r in rows)
    _, meta = read_weights(out / "best.safetensors")
    assert meta["model"] == "ssdlite_fd_mobilenet_025" and meta["task"] == "detection"
    assert meta["class_names"] == ["Platelets", "RBC", "WBC"] and meta["resolution"] == 128
    assert meta["val_map50"] == pytest.approx(max(r["val_map50"] for r in rows), abs=1e-3)
    with open(out / "val_ap.csv") as f:
        assert [r["class"] for r in csv.DictReader(f)] == ["Platelets", "RBC", "WBC"]
    assert (out / "curves.png").is_file() and "per-class AP@0.5" in log


def test_eval_scores_the_held_out_photos_the_run_recorded(trained, capsys) -> None:
    data, out, _ = trained
    weights = out / "best.safetensors"
    code, text, err = run_cli(capsys, "eval", "--weights", weights, "--data", data, "--split", out, "--json")
    assert code == 0, err
    got = json.loads(text.strip().splitlines()[-1])
    held_out = json.loads((out / "split.json").read_text())["val"]
    assert got["n"] == len(held_out) == 6
    # the run validated the same photos with the same weights: the same all-point mAP
    _, meta = read_weights(out / "best.safetensors")
    assert got["map50"] == pytest.approx(meta["val_map50"], abs=0.01)
    assert [c["name"] for c in got["per_class"]] == ["Platelets", "RBC", "WBC"]


def test_predict_draws_boxes_and_never_writes_over_inputs(trained, tmp_path: Path, capsys) -> None:
    data, out, _ = trained
    photos = sorted((data / "JPEGImages").glob("*.jpg"))[:2]
    weights = str(out / "best.safetensors")
    code, text, err = run_cli(capsys, *["predict", "--weights", weights, *photos, "--min-score", "0.01", "-o",
                                        tmp_path / "pred"])  # fmt: skip
    assert code == 0, err
    assert len(list((tmp_path / "pred").glob("*.jpg"))) == 2
    with open(tmp_path / "pred" / "boxes.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["label"] for r in rows} <= {"Platelets", "RBC", "WBC"}
    w, h = 640, 480  # BCCD photos: boxes are given in their own pixels
    assert all(0 <= float(r["xmin"]) <= float(r["xmax"]) <= w and 0 <= float(r["ymax"]) <= h for r in rows)
    # an output folder holding someone else's files, or the photos' own folder, is refused
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    for dst in (tmp_path / "theirs", data / "JPEGImages"):
        code, _, err = run_cli(capsys, "predict", "--weights", weights, photos[0], "-o", dst)
        assert code == 2 and "-o" in err, err
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"


def test_detector_settings_a_classifier_needs_are_refused(tmp_path: Path, capsys) -> None:
    data = bccd_subset(tmp_path / "bccd", n=8)
    code, _, err = run_cli(capsys, "train", "--data", data, "--mixup", "0.2", "--out", tmp_path / "r", *TINY)
    assert code == 2 and "--mixup" in err and "detector" in err, err
    flowers = Path(__file__).parent / "data" / "flowers-mini"
    code, _, err = run_cli(capsys, "train", "--data", flowers, "--model", "ssdlite_fd_mobilenet_025", "--out",
                           tmp_path / "r2", *TINY)  # fmt: skip
    assert code == 2 and "VOC/COCO" in err, err


def test_voc07_script_runs_the_paper_protocol_on_a_voc2007_layout(tmp_path: Path) -> None:
    """benchmarks/detection/voc07.sh cannot meet real VOC 2007 here: its code path runs on a VOCdevkit made of
    shared COCO photos with VOC classes (trainval and test lists), and scores the test list only."""
    import subprocess
    import sys

    src = shared_path("datasets/detection/coco-voc20")
    weights = shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")
    ids = (src / "ImageSets/Main/trainval.txt").read_text().split()[:24]
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(src / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(src / "Annotations" / f"{i}.xml", voc / "Annotations")
    (voc / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:16]) + "\n")
    (voc / "ImageSets/Main/test.txt").write_text("\n".join(ids[16:]) + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks/detection/voc07.sh"
    env = {**helpers_env(), "PYTHON": sys.executable, "EPOCHS": "1", "RESOLUTION": "128"}
    env.update(BACKBONES=f"fd_mobilenet_025={weights}", TRAIN_ARGS="--batch-size 8 --threads 1 --workers 0")
    r = subprocess.run(["bash", str(script), str(tmp_path / "VOCdevkit"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["n"] == 8 and "test.txt" in rows[0]["data"]
    assert rows[0]["model"] == "ssdlite_fd_mobilenet_025" and 0 <= rows[0]["map50_07"] <= 100
    split = json.loads((tmp_path / "out/fd_mobilenet_025/split.json").read_text())
    assert not set(split["val"]) & set(ids[16:])  # test photos never pick the checkpoint
