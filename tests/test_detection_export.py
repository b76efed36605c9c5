"""Detectors as deployment files: ONNX with NMS in the graph or in fdmobilenet's runner, .pte (network on
XNNPACK, NMS in Python); the same mAP as PyTorch through `eval --exported`, the same boxes through
`predict --exported`, the PyTorch contract from `open_exported`, bench rows, refusals. A tiny detector
trained in seconds on 24 BCCD photos at 128 px (tests/test_detection_train.py's subset)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detection_train import TINY, bccd_subset

from fdmobilenet.cli import main
from fdmobilenet.deploy import open_exported, read_onnx_metadata
from fdmobilenet.models import build_from_weights
from helpers import run_cli

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

RES = 128


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> dict[str, Path]:
    """The trained tiny detector, its data, and its ONNX exports (NMS in the graph, and outside)."""
    root = tmp_path_factory.mktemp("detx")
    data = bccd_subset(root / "bccd")
    run = root / "run"
    buf = io.StringIO()
    args = ["train", "--data", str(data), "--model", "fd_mobilenet_025", "--epochs", "2", "--out", str(run), *TINY]
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        assert main(args) == 0, buf.getvalue()
    files = {"data": data, "run": run, "weights": run / "best.safetensors"}
    for mode in ("graph", "none"):
        files[mode] = root / f"det_{mode}.onnx"
        args = ["export", "--weights", str(files["weights"]), "-o", str(files[mode]), "--postprocess", mode,
                "--verify-data", str(data / "JPEGImages"), "--verify-size", "4", "--json"]  # fmt: skip
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(args) == 0
        files[f"{mode}_report"] = json.loads(buf.getvalue())[0]
    return files


def _eval(capsys, *source: object, det: dict) -> dict:
    code, out, err = run_cli(capsys, "eval", *source, "--data", det["data"], "--split", det["run"], "--json")
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _photos(data: Path, n: int) -> list[Path]:
    return sorted((data / "JPEGImages").glob("*.jpg"))[:n]


def test_export_reports_and_metadata(det) -> None:
    for mode in ("graph", "none"):
        row = det[f"{mode}_report"]
        assert row["format"] == "onnx-fp32" and row["task"] == "detection" and row["postprocess"] == mode
        assert row["n_images"] == 6 and row["detection_agreement"] == 100.0  # 2 random + 4 photos
        assert row["n_reference"] > 0 and row["max_score_diff"] < 1e-4
        meta = read_onnx_metadata(det[mode])
        assert meta["task"] == "detection" and meta["postprocess"] == mode and meta["resolution"] == RES
        assert meta["class_names"] == ["Platelets", "RBC", "WBC"] and meta["num_classes"] == 3
        assert len(meta["mean"]) == len(meta["std"]) == 3
        assert meta["score_thresh"] == 0.001 and meta["nms_thresh"] == 0.55 and meta["detections_per_img"] == 200
        assert meta["topk_candidates"] == 300 and meta["box_coder_weights"] == [10.0, 10.0, 5.0, 5.0]
        assert meta["anchor_aspect_ratios"] == [[2, 3]] * 6 and meta["num_anchors"] > 0
    assert det["none_report"]["max_raw_diff"] < 1e-4


def test_graph_outputs_are_padded_and_raw_outputs_come_with_the_anchors(det) -> None:
    from fdmobilenet.deploy.detector import default_boxes

    x = np.random.default_rng(0).random((3, 3, RES, RES), dtype=np.float32)  # a batch the export never saw
    sess = ort.InferenceSession(str(det["graph"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels", "num_detections"]
    boxes, scores, labels, count = sess.run(None, {"images": x})
    assert boxes.shape == (3, 200, 4) and scores.shape == labels.shape == (3, 200) and count.shape == (3,)
    for s, lab, n in zip(scores, labels, count):
        assert (np.diff(s[:n]) <= 0).all() and (s[:n] > 0.001).all() and (s[n:] == 0).all()
        assert set(lab[:n]) <= {1, 2, 3} and (lab[n:] == 0).all()
    model, _ = build_from_weights(det["weights"])
    sess = ort.InferenceSession(str(det["none"]), providers=["CPUExecutionProvider"])
    reg, logits, anchors = sess.run(None, {"images": x})
    assert reg.shape == (3, anchors.shape[0], 4) and logits.shape == (3, anchors.shape[0], 4)
    assert np.array_equal(anchors, default_boxes(model, RES).numpy())


def test_eval_exported_gives_the_pytorch_map_in_both_modes(det, capsys) -> None:
    want = _eval(capsys, "--weights", det["weights"], det=det)
    assert want["n"] == 6
    for mode in ("graph", "none"):
        got = _eval(capsys, "--exported", det[mode], "--threads", "1", det=det)
        assert got["n"] == want["n"] and got["exported"] == str(det[mode])
        assert got["map50"] == pytest.approx(want["map50"], abs=0.5)
        assert got["map50_07"] == pytest.approx(want["map50_07"], abs=0.5)


def test_open_exported_is_a_detector_with_the_pytorch_contract(det) -> None:
    model, _ = build_from_weights(det["weights"])
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, RES, RES, generator=g), torch.rand(3, 100, 150, generator=g)]  # any size: resized
    with torch.no_grad():
        want = model(images)
    for mode in ("graph", "none"):
        exported = open_exported(det[mode], threads=1)
        assert exported.class_names == ["Platelets", "RBC", "WBC"]
        got = exported(images)
        for w, o in zip(want, got):
            keep = (w["scores"] >= 0.05).nonzero().flatten()[:150]  # not the last places: near-ties swap there
            assert len(keep) > 0
            for k in keep.tolist():
                same = (o["labels"] == w["labels"][k]) & ((o["scores"] - w["scores"][k]).abs() <= 1e-4)
                assert ((o["boxes"][same] - w["boxes"][k]).abs().max(1).values <= 1e-2).any()
        with pytest.raises(ValueError, match="float RGB"):
            exported([torch.zeros(3, RES, RES, dtype=torch.uint8)])


def test_predict_exported_finds_the_pytorch_boxes(det, tmp_path, capsys) -> None:
    photos = _photos(det["data"], 2)
    rows = {}
    for name, source in (("torch", ["--weights", det["weights"]]), ("onnx", ["--exported", det["graph"]])):
        code, _, err = run_cli(capsys, "predict", *source, *photos, "--min-score", "0.05", "-o", tmp_path / name)
        assert code == 0, err
        with open(tmp_path / name / "boxes.csv") as f:
            rows[name] = list(csv.DictReader(f))
        assert len(list((tmp_path / name).glob("*.jpg"))) == 2
    assert rows["torch"] and len(rows["onnx"]) == len(rows["torch"])
    coords = ("xmin", "ymin", "xmax", "ymax")
    for b in rows["torch"]:  # the same boxes (in any order among equal scores)
        assert any(
            a["path"] == b["path"]
            and a["label"] == b["label"]
            and abs(float(a["score"]) - float(b["score"])) <= 2e-4
            and all(abs(float(a[k]) - float(b[k])) <= 0.2 for k in coords)
            for a in rows["onnx"]
        ), b


@pytest.mark.parametrize(
    "extra, output, message",
    [
        (["--int8", "--calibration", "{data}/JPEGImages"], "d.onnx", "--int8"),
        (["--postprocess", "graph"], "d.pte", "--postprocess"),
        ([], "d.pt", "detectors export to .onnx or .pte"),
        (["--opset", "17"], "d.onnx", "--opset"),
    ],
)
def test_what_a_detector_export_cannot_do_is_refused(det, tmp_path, capsys, extra, output, message) -> None:
    extra = [e.format(data=det["data"]) for e in extra]
    code, _, err = run_cli(capsys, "export", "--weights", det["weights"], "-o", tmp_path / output, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / output).exists()


def test_postprocess_is_refused_for_a_classifier(official_weights, tmp_path, capsys) -> None:
    w = official_weights["025"]
    code, _, err = run_cli(capsys, "export", "--weights", w, "-o", tmp_path / "c.onnx", "--postprocess", "none")
    assert code == 2 and "--postprocess" in err and "classifier" in err, err


def test_bench_times_detectors_with_their_postprocessing(capsys, monkeypatch) -> None:
    argv = ["bench", "--models", "ssdlite_fd_mobilenet_025@64", "--backends", "torch,ort,ort-int8", "--runs", "3",
            "--warmup", "1", "--threads", "1", "--json"]  # fmt: skip
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    rows = {r["backend"]: r for r in json.loads(out)}
    for b in ("torch", "ort"):
        assert rows[b]["median_ms"] > 0 and rows[b]["resolution"] == 64 and rows[b]["batch"] == 1
        assert "fd_speedup" not in rows[b]
    assert rows["ort"]["postprocess"] == "in the ONNX graph" and "torchvision" in rows["torch"]["postprocess"]
    assert rows["ort-int8"]["median_ms"] is None and "fp32" in rows["ort-int8"]["error"]
    # the text output says the timings include the post-processing
    from fdmobilenet.deploy import bench

    monkeypatch.setattr(bench, "benchmark", lambda *a, **k: list(rows.values()))
    code, out, _ = run_cli(capsys, *argv[:-1])
    assert code == 0 and "post-processing included" in out and "ssdlite_fd_mobilenet_025" in out


@pytest.mark.slow
def test_pte_detector_gives_the_pytorch_map(det, tmp_path, capsys) -> None:
    """Slow (~35 s on 2 shared cores): lowering to XNNPACK is most of it."""
    pytest.importorskip("executorch")
    out = tmp_path / "det.pte"
    args = ["--verify-data", det["data"] / "JPEGImages", "--verify-size", "4", "--json"]
    code, stdout, err = run_cli(capsys, "export", "--weights", det["weights"], "-o", out, *args)
    assert code == 0, err
    row = json.loads(stdout)[0]
    assert row["format"] == "executorch-fp32" and row["postprocess"] == "none" and row["detection_agreement"] == 100
    want = _eval(capsys, "--weights", det["weights"], det=det)
    got = _eval(capsys, "--exported", out, "--threads", "1", det=det)
    assert got["map50"] == pytest.approx(want["map50"], abs=0.5)
