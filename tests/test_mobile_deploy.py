"""Phone runtimes and INT8 that keeps accuracy: ExecuTorch .pte files, `quantize`, opsets 13-18, one INT8 file.

Runs on the in-repository photos at 64 px, so a clone without ../shared runs it; the accuracy study on
thousands of ImageNet photos is benchmarks/int8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fdmobilenet.deploy import OnnxClassifier, float_tolerance, open_exported, read_onnx_metadata
from fdmobilenet.models import create_model
from fdmobilenet.weights import save_weights
from helpers import FLOWERS_MINI, mini_subset, run_cli

pytest.importorskip("executorch")
onnx = pytest.importorskip("onnx")
RES = 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A 5-class FD-MobileNet 0.25x with non-trivial BatchNorm statistics, at 64 px."""
    torch.manual_seed(0)
    model = create_model("fd_mobilenet_025", num_classes=5).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.2, 0.2)
    w = tmp_path_factory.mktemp("w") / "fd025.safetensors"
    classes = sorted(p.name for p in FLOWERS_MINI.iterdir() if p.is_dir())
    save_weights(model.state_dict(), w, {"model": "fd_mobilenet_025", "num_classes": 5, "resolution": RES,
                                         "class_names": classes})  # fmt: skip
    return w


def _logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    return open_exported(path)(x)


def test_pte_fp32_matches_pytorch_and_runs_in_eval_and_predict(weights, tmp_path, capsys):
    out = tmp_path / "m.pte"
    code, stdout, _ = run_cli(capsys, "export", "--weights", weights, "-o", out, "--json")
    assert code == 0 and json.loads(stdout)[0]["format"] == "executorch-fp32"
    clf = open_exported(out)
    assert clf.meta["model"] == "fd_mobilenet_025" and clf.meta["resolution"] == RES and len(clf.class_names) == 5
    from fdmobilenet.models import build_from_weights

    model, _ = build_from_weights(weights)
    x = torch.randn(3, 3, RES, RES)
    with torch.no_grad():
        ref = model(x)
    assert (clf(x) - ref).abs().max() < float_tolerance(float(ref.abs().max()))
    code, stdout, _ = run_cli(capsys, "eval", "--exported", out, "--data", FLOWERS_MINI, "--json")
    code2, stdout2, _ = run_cli(capsys, "eval", "--weights", weights, "--data", FLOWERS_MINI, "--json")
    assert code == code2 == 0
    got, want = json.loads(stdout), json.loads(stdout2)
    assert got["n"] == want["n"] > 100 and abs(got["top1"] - want["top1"]) <= 100 / got["n"]
    photo = next(FLOWERS_MINI.glob("*/*.jpg"))
    code, stdout, _ = run_cli(capsys, "predict", "--exported", out, "--json", "--topk", "2", photo)
    assert code == 0 and len(json.loads(stdout)[0]["top"]) == 2


def test_int8_writes_one_file_unless_asked_and_pte_int8_works(weights, tmp_path, capsys):
    calib = mini_subset(tmp_path / "calib", 4)
    d = tmp_path / "out"
    d.mkdir()
    code, _, _ = run_cli(capsys, "export", "--weights", weights, "-o", d / "m.onnx", "--int8", "--calibration", calib)
    assert code == 0 and sorted(p.name for p in d.iterdir()) == ["m.onnx"]
    assert read_onnx_metadata(d / "m.onnx")["precision"] == "int8"
    code, _, _ = run_cli(capsys, "export", "--weights", weights, "-o", d / "k.onnx", "--int8", "--keep-fp32",
                         "--calibration", calib)  # fmt: skip
    assert code == 0 and {"k.onnx", "k.fp32.onnx"} <= {p.name for p in d.iterdir()}
    code, stdout, _ = run_cli(capsys, "export", "--weights", weights, "-o", d / "m.pte", "--int8", "--calibration",
                              calib, "--json")  # fmt: skip
    row = json.loads(stdout)[0]
    assert code == 0 and row["format"] == "executorch-int8" and open_exported(d / "m.pte").meta["precision"] == "int8"
    assert sorted(p.name for p in d.iterdir()) == ["k.fp32.onnx", "k.onnx", "m.onnx", "m.pte"]


def test_pt2_suffix_writes_pt2_not_onnx(weights, tmp_path, capsys):
    out = tmp_path / "x.pt2"
    code, stdout, _ = run_cli(capsys, "export", "--weights", weights, "-o", out, "--json")
    assert code == 0 and json.loads(stdout)[0]["format"] == "pt2"
    assert out.read_bytes()[:2] == b"PK", "a pt2 file is a zip archive, not an ONNX protobuf"


def test_older_opsets_run_like_the_default(weights, tmp_path, capsys):
    ref_path = tmp_path / "ref.onnx"
    assert run_cli(capsys, "export", "--weights", weights, "-o", ref_path)[0] == 0
    x = np.random.default_rng(0).standard_normal((2, 3, RES, RES), dtype=np.float32)
    for opset in (13, 17):
        path = tmp_path / f"o{opset}.onnx"
        assert run_cli(capsys, "export", "--weights", weights, "-o", path, "--opset", opset)[0] == 0
        m = onnx.load(str(path))
        onnx.checker.check_model(m, full_check=True)
        assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == opset
        assert "ReduceMean" not in {n.op_type for n in m.graph.node}
        np.testing.assert_allclose(OnnxClassifier(path).run(x), OnnxClassifier(ref_path).run(x), atol=1e-5)


def test_quantize_distills_into_an_int8_onnx_and_calibrates_a_pte(weights, tmp_path, capsys):
    data = mini_subset(tmp_path / "tune", 8)
    verify = mini_subset(tmp_path / "verify", 4, offset=20)
    for suffix, epochs, method in ((".onnx", "1", "qat-distillation"), (".pte", "0", "ptq")):
        out = tmp_path / f"q{suffix}"
        code, stdout, err = run_cli(capsys, "quantize", "--weights", weights, "--data", data, "-o", out,
                                    "--epochs", epochs, "--batch-size", "8", "--verify-data", verify, "--json",
                                    "--opset", "13", "--rounding-steps", "30")  # fmt: skip
        assert code == 0, err
        row = json.loads(stdout)
        assert row["format"] == f"{'onnx' if suffix == '.onnx' else 'executorch'}-int8"
        assert row["n_real"] == 20 and row["top1_agreement_real"] >= 50
        meta = open_exported(out).meta
        assert meta["precision"] == "int8" and meta["quantization"]["method"] == method
        if method == "qat-distillation":  # 40 photos, batch 8: 5 steps, logged
            assert meta["quantization"]["photos"] == 40 and "qat step 5/5" in err
    assert onnx.load(str(tmp_path / "q.onnx")).opset_import[0].version == 13
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_bench_times_executorch_fp32_and_int8(capsys):
    code, stdout, _ = run_cli(capsys, "bench", "--models", f"fd_mobilenet_025@{RES}", "--backends",
                              "executorch,executorch-int8", "--runs", "3", "--warmup", "1", "--json")  # fmt: skip
    rows = json.loads(stdout)
    assert code == 0 and [r["backend"] for r in rows] == ["executorch", "executorch-int8"]
    assert all(r["median_ms"] > 0 for r in rows)
