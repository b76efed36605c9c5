"""Export: ONNX fp32/INT8 agreement with PyTorch on real photos, metadata, TorchScript/pt2, --onnx CLI, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fdmobilenet import cli
from fdmobilenet._utils import MissingDependencyError
from fdmobilenet.data.folders import scan_folder
from fdmobilenet.deploy import (
    OnnxClassifier,
    export_metadata,
    float_tolerance,
    fold_batchnorm,
    load_batch,
    load_pt2,
    load_torchscript,
    read_onnx_metadata,
)
from fdmobilenet.models import build_from_weights, create_model
from fdmobilenet.models import convert_authors_checkpoint as convert
from fdmobilenet.weights import save_weights
from helpers import SHARED, run_cli
from helpers import require as need

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

PHOTOS = SHARED / "datasets" / "imagenet-sample-50"
WEIGHTS_050 = SHARED / "weights" / "official" / "0.5x-FDMobileNet-224.pth.tar"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Official 0.5x weights converted, and the 50 photos split in two halves (calibrate on A, score on B)."""
    need(WEIGHTS_050)
    need(PHOTOS)
    d = tmp_path_factory.mktemp("export")
    convert(WEIGHTS_050, d / "fd050.safetensors")
    for i, s in enumerate(sorted(p.name for p in PHOTOS.iterdir() if p.is_dir())):
        half = d / ("A" if i % 2 == 0 else "B")
        half.mkdir(exist_ok=True)
        (half / s).symlink_to((PHOTOS / s).resolve())
    return d


@pytest.fixture(scope="module")
def fp32_onnx(work) -> Path:
    out = work / "fd050.onnx"
    weights = str(work / "fd050.safetensors")
    code = cli.main(["export", "--weights", weights, "-o", str(out), "--verify-data", str(PHOTOS)])
    assert code == 0 and out.is_file()
    return out


@pytest.fixture(scope="module")
def int8_onnx(work, fp32_onnx) -> Path:
    out = work / "fd050.int8.onnx"
    weights = str(work / "fd050.safetensors")
    code = cli.main(["export", "--weights", weights, "-o", str(out), "--int8", "--calibration", str(work / "A")])
    assert code == 0 and out.is_file()
    return out


def real_photos(meta: dict, root: Path = PHOTOS) -> tuple[torch.Tensor, np.ndarray]:
    folder = scan_folder(root)
    return load_batch([p for p, _ in folder.samples], meta), np.array([lab for _, lab in folder.samples])


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- BatchNorm folding --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fd_mobilenet_025", "mobilenet_v1_025", "shufflenet_v1_g3_025"])
def test_fold_batchnorm_keeps_outputs_and_leaves_no_batchnorm(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    for m in model.modules():  # non-trivial statistics, or folding would be a no-op
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the original must be untouched"
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert (ref - out).abs().max() < float_tolerance(float(ref.abs().max()))


# --- ONNX fp32 ------------------------------------------------------------------------------------


def test_onnx_graph_is_folded_dynamic_and_recent(fp32_onnx):
    m = onnx.load(str(fp32_onnx))
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch axis must be symbolic"
    assert [d.dim_value for d in dims[1:]] == [3, 224, 224]


def test_onnx_metadata(fp32_onnx, work):
    meta = read_onnx_metadata(fp32_onnx)
    _, wmeta = build_from_weights(work / "fd050.safetensors")
    assert meta["model"] == "fd_mobilenet_050"
    assert meta["class_names"] == wmeta["class_names"] and len(meta["class_names"]) == 1000
    assert meta["mean"] == pytest.approx(wmeta["mean"]) and meta["std"] == pytest.approx(wmeta["std"])
    assert meta["resolution"] == 224 and meta["input_size"] == [3, 224, 224]
    assert meta["crop_pct"] == pytest.approx(0.875)
    assert meta["precision"] == "fp32"
    # the same metadata is visible to ONNX Runtime alone (no onnx package needed at deployment)
    assert session(fp32_onnx).get_modelmeta().custom_metadata_map["model"] == "fd_mobilenet_050"


def test_onnx_fp32_matches_pytorch_on_real_photos(fp32_onnx, work):
    model, meta = build_from_weights(work / "fd050.safetensors")
    x, _ = real_photos(export_metadata(meta, 224, model))
    with torch.no_grad():
        ref = model(x).numpy()
    sess = session(fp32_onnx)
    out = np.concatenate([sess.run(None, {"input": x[i : i + 7].numpy()})[0] for i in range(0, len(x), 7)])  # ragged
    assert out.shape == ref.shape == (50, 1000)
    assert np.abs(out - ref).max() < float_tolerance(float(np.abs(ref).max()))
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_eval_onnx_gives_the_pytorch_numbers_and_keys(fp32_onnx, work, capsys):
    code, out, _ = run_cli(capsys, "eval", "--weights", work / "fd050.safetensors", "--data", PHOTOS, "--json")
    torch_res = json.loads(out)
    code2, out2, _ = run_cli(capsys, "eval", "--onnx", fp32_onnx, "--data", PHOTOS, "--json")
    onnx_res = json.loads(out2)
    assert code == code2 == 0
    assert {"top1", "top5", "n"} <= set(onnx_res) and onnx_res["backend"] == "ort"
    assert (onnx_res["top1"], onnx_res["top5"], onnx_res["n"]) == (torch_res["top1"], torch_res["top5"], 50)


def test_predict_onnx_reports_bad_files_and_matches_pytorch(fp32_onnx, work, capsys, tmp_path):
    img = sorted(PHOTOS.glob("*/*.JPEG"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    code, out, _ = run_cli(capsys, "predict", "--onnx", fp32_onnx, "--json", "--topk", "3", img, bad)
    preds = json.loads(out)
    assert code == 1, "an unreadable image makes the exit code non-zero"
    assert preds[1]["error"] and preds[1]["top"] is None
    _, out_pt, _ = run_cli(capsys, "predict", "--weights", work / "fd050.safetensors", "--json", "--topk", "3", img)
    top_pt = json.loads(out_pt)[0]["top"]
    assert [n for n, _ in preds[0]["top"]] == [n for n, _ in top_pt]
    assert [p for _, p in preds[0]["top"]] == pytest.approx([p for _, p in top_pt], abs=1e-4)


# --- INT8 -----------------------------------------------------------------------------------------


def test_int8_is_per_channel_qdq_with_the_classifier_in_float(int8_onnx):
    m = onnx.load(str(int8_onnx))
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "QLinearConv" not in ops  # QDQ format
    inits = {i.name: i for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    w_dq = [producers.get(c.input[1]) for c in convs]
    quantized = [d for d in w_dq if d is not None and d.op_type == "DequantizeLinear"]
    assert len(quantized) == len(convs), "every conv, the stem included, has int8 weights"
    scales = [onnx.numpy_helper.to_array(inits[d.input[1]]) for d in quantized]
    assert all(s.ndim == 1 and s.size > 1 for s in scales), "weights are quantized per output channel"
    gemm = next(n for n in m.graph.node if n.op_type in ("Gemm", "MatMul"))
    assert gemm.input[1] not in producers or producers[gemm.input[1]].op_type != "DequantizeLinear", "float head"
    meta = read_onnx_metadata(int8_onnx)
    assert meta["precision"] == "int8" and meta["model"] == "fd_mobilenet_050"
    assert meta["calibration"]["images"] == 25 and meta["calibration"]["method"] == "percentile"


def test_int8_agrees_with_fp32_on_photos_it_was_not_calibrated_on(int8_onnx, fp32_onnx, work, capsys):
    meta = read_onnx_metadata(fp32_onnx)
    x, labels = real_photos(meta, work / "B")
    ref = session(fp32_onnx).run(None, {"input": x.numpy()})[0]
    q = session(int8_onnx).run(None, {"input": x.numpy()})[0]
    agree = (ref.argmax(1) == q.argmax(1)).mean()
    top1_fp32, top1_int8 = 100 * (ref.argmax(1) == labels).mean(), 100 * (q.argmax(1) == labels).mean()
    print(f"int8 vs fp32 on 25 held-out photos: agreement {100 * agree:.0f}%, top-1 {top1_int8:.0f} vs {top1_fp32:.0f}")
    capsys.readouterr()
    # A broken quantization (wrong scales, unfused ReLU ranges) agrees on a few percent at most.
    assert agree >= 0.8
    assert abs(top1_int8 - top1_fp32) <= 12  # 3 of 25 photos
    assert np.corrcoef(ref.ravel(), q.ravel())[0, 1] > 0.95
    code, out, _ = run_cli(capsys, "eval", "--onnx", int8_onnx, "--data", work / "B", "--json")
    assert code == 0 and json.loads(out)["top1"] == pytest.approx(top1_int8)


def test_openvino_runs_fp32_and_int8_like_onnxruntime(fp32_onnx, int8_onnx, capsys):
    pytest.importorskip("openvino")
    x, _ = real_photos(read_onnx_metadata(fp32_onnx))
    for path, tol in ((fp32_onnx, None), (int8_onnx, 0.9)):
        ref = OnnxClassifier(path, "ort").run(x[:20].numpy())
        out = OnnxClassifier(path, "openvino").run(x[:20].numpy())
        if tol is None:  # fp32 in f32 (not bf16): float rounding only
            assert np.abs(out - ref).max() < float_tolerance(float(np.abs(ref).max()))
        else:  # two int8 kernel sets round differently, but must agree on the class almost always
            assert (out.argmax(1) == ref.argmax(1)).mean() >= tol
    code, out, _ = run_cli(capsys, "eval", "--onnx", fp32_onnx, "--backend", "openvino", "--data", PHOTOS, "--json")
    res = json.loads(out)
    assert code == 0 and res["backend"] == "openvino" and res["n"] == 50


# --- TorchScript and torch.export ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torchscript_and_pt2_reproduce_pytorch(fmt, tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("shufflenet_v1_g3_025", num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    w = tmp_path / "m.safetensors"
    save_weights(model.state_dict(), w, {"model": "shufflenet_v1_g3_025", "num_classes": 10, "resolution": 96})
    out = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    code, stdout, _ = run_cli(capsys, "export", "--weights", w, "-o", out, "--format", fmt, "--json")
    assert code == 0 and json.loads(stdout)[0]["format"] == fmt
    loaded, meta = (load_torchscript if fmt == "torchscript" else load_pt2)(out)
    assert meta["model"] == "shufflenet_v1_g3_025" and meta["resolution"] == 96 and len(meta["class_names"]) == 10
    x = torch.randn(5, 3, 96, 96)  # another batch size than the export's example
    with torch.no_grad():
        ref, got = model(x), loaded(x)
    assert got.shape == (5, 10)
    assert (ref - got).abs().max() < float_tolerance(float(ref.abs().max()))


# --- errors ---------------------------------------------------------------------------------------


def test_weights_of_another_model_name_the_mismatched_keys(work, tmp_path, capsys):
    weights = work / "fd050.safetensors"
    out = tmp_path / "x.onnx"
    code, _, err = run_cli(capsys, "export", "--weights", weights, "--model", "mobilenet_v1_050", "-o", out)
    assert code == 2
    assert "mobilenet_v1_050" in err and "missing" in err and "blocks.11" in err
    assert not out.exists()


def test_missing_onnx_runtime_names_the_extra(tmp_path, capsys, monkeypatch):
    w = tmp_path / "m.safetensors"
    save_weights(create_model("fd_mobilenet_025").state_dict(), w, {"model": "fd_mobilenet_025"})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    code, _, err = run_cli(capsys, "export", "--weights", w, "-o", tmp_path / "m.onnx")
    assert code == 2 and 'pip install "fdmobilenet[deploy]"' in err and "onnxruntime" in err
    assert not (tmp_path / "m.onnx").exists()


def test_missing_openvino_names_its_extra(fp32_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"fdmobilenet\[openvino\]"):
        OnnxClassifier(fp32_onnx, "openvino")
    assert OnnxClassifier(fp32_onnx, "ort").num_classes == 1000, "ONNX Runtime works without OpenVINO"


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--data", "."], "--weights FILE.safetensors (PyTorch) or --exported"),
        (["eval", "--onnx", "nope.onnx", "--data", "."], "nope.onnx does not exist"),
        (["export", "--weights", "W", "-o", "x.onnx", "--int8"], "--int8 needs --calibration DIR"),
        (["export", "--weights", "W", "-o", "x.pt", "--int8", "--calibration", "."], "or .tflite files, not"),
        (["export", "--weights", "W", "-o", "x.pt", "--format", "pt2"], "names a torchscript file but --format is pt2"),
        (["export", "--weights", "W", "-o", "x.tflm"], "unknown suffix '.tflm'"),
        (["export", "--weights", "W", "-o", "x.onnx", "--keep-fp32"], "--keep-fp32 keeps the fp32 file"),
        (["export", "--weights", "W", "-o", "x.onnx", "--opset", "19"], "--opset 19: choose 13 to 18"),
        (["export", "--weights", "W", "-o", "x.onnx", "--int8", "--calibration", "."], "holds no image files"),
        (["export", "--weights", "W", "-o", "x.pte", "--int8", "--calibration", "."], "holds no image files"),
        (["quantize", "--weights", "W", "--data", "nope", "-o", "x.onnx"], "nope does not exist"),
        (["quantize", "--weights", "W", "--data", ".", "-o", "x.onnx"], "holds no image files"),
        (["quantize", "--weights", "W", "--data", ".", "-o", "x.pt2"], "quantize writes .onnx (QDQ), .pte"),
        (["quantize", "--weights", "W", "--data", ".", "-o", "x.onnx", "--epochs", "nan"], "--epochs (>= 0)"),
        (["quantize", "--weights", "W", "--data", ".", "-o", "x.onnx", "--lr", "-1"], "--lr (> 0)"),
        (["export", "--weights", "W", "-o", "x.onnx", "--keep-float", "stem,head"], "head"),
        (["export", "--weights", "W", "-o", "x.onnx", "--opset", "12"], "--opset 12"),
    ],
)
def test_bad_arguments_get_a_clear_error(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "W" in args:
        save_weights(create_model("fd_mobilenet_025").state_dict(), tmp_path / "W", {"model": "fd_mobilenet_025"})
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err


def test_int8_export_with_low_agreement_warns() -> None:
    from fdmobilenet.deploy.pipeline import ExportReport
    from fdmobilenet.deploy.verify import Agreement

    meta = {"model": "fd_mobilenet_025", "resolution": 224, "precision": "int8"}
    low = ExportReport("x.onnx", "onnx", meta, Agreement(0.5, 0.9, 68.8, 25, 12.0))
    assert "warning: the INT8 file names the same class as fp32 on only 68.8%" in str(low)
    fine = ExportReport("x.onnx", "onnx", meta, Agreement(0.5, 0.2, 96.0, 25, 12.0))
    fp32 = ExportReport("x.onnx", "onnx", {**meta, "precision": "fp32"}, Agreement(0.5, 0.9, 68.8, 25, 12.0))
    assert "warning" not in str(fine) and "warning" not in str(fp32)
    from fdmobilenet.deploy.verify import DetectionAgreement  # a detector's check has no top-1 agreement

    det_meta = {**meta, "precision": "fp32", "task": "detection", "postprocess": "graph"}
    fields = {f: 0 for f in DetectionAgreement.__dataclass_fields__}
    assert "NMS in the graph" in str(ExportReport("d.onnx", "onnx", det_meta, DetectionAgreement(**fields)))


def test_one_vocabulary_for_calibration_photos_and_batch(capsys) -> None:
    """quantize takes --calibration like export and bench (--data kept as a hidden alias); bench takes
    --batch-size like every other command (--batch hidden); one calibration-size default."""
    from fdmobilenet.cli import build_parser

    q = build_parser("quantize").parse_args(["quantize", "--weights", "W", "--calibration", "D", "-o", "x.onnx"])
    old = build_parser("quantize").parse_args(["quantize", "--weights", "W", "--data", "D", "-o", "x.onnx"])
    e = build_parser("export").parse_args(["export", "--weights", "W", "-o", "x.onnx"])
    assert q.data == old.data == "D" and q.calibration_size == e.calibration_size
    b = build_parser("bench")
    assert b.parse_args(["bench", "--batch-size", "4"]).batch == b.parse_args(["bench", "--batch", "4"]).batch == 4


def test_output_files_are_dash_o_output_and_run_folders_are_out(capsys) -> None:
    """One meaning per flag: `-o/--output` is what a command writes (export, quantize, predict), `--out` a run
    folder (train, compare, fit); predict's former `--out` still parses, hidden, for one release."""
    import argparse

    from fdmobilenet.cli import build_parser

    def command_help(cmd: str) -> str:
        sub = next(a for a in build_parser(cmd)._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[cmd].format_help()

    for cmd in ("export", "quantize", "predict"):
        help_text = command_help(cmd)
        assert "-o OUT, --output OUT" in help_text or "-o OUTPUT, --output OUTPUT" in help_text, cmd
        assert "--out " not in help_text.replace("--output", ""), cmd
    p = build_parser("predict")
    new = p.parse_args(["predict", "--weights", "W", "a.jpg", "--output", "p.csv"])
    old = p.parse_args(["predict", "--weights", "W", "a.jpg", "--out", "p.csv"])
    assert new.out == old.out == "p.csv"
    for cmd in ("compare", "fit"):
        assert "--out" in command_help(cmd) and "--output" not in command_help(cmd)
