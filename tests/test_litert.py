"""LiteRT (.tflite) export, INT8 through `quantize`, and `eval --exported` on it (issue 22).

litert-torch cannot share an environment with constraints.txt (it pins typing-extensions < 4.13), so the
tests that convert run where it is installed (`make test-litert`: its own virtual environment) and are
skipped elsewhere; the one below them checks what a user without it is told.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fdmobilenet.models import create_model
from fdmobilenet.weights import save_weights
from helpers import FLOWERS_MINI, mini_subset, run_cli

RES = 64
HAVE_LITERT = importlib.util.find_spec("litert_torch") is not None and importlib.util.find_spec("ai_edge_litert")
litert = pytest.mark.skipif(not HAVE_LITERT, reason="litert-torch not installed (make test-litert)")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("fd_mobilenet_025", num_classes=5).eval()
    for m in model.modules():  # trained-like BatchNorm statistics: channels of different ranges
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.2, 2.0)
    classes = sorted(p.name for p in FLOWERS_MINI.iterdir() if p.is_dir())
    w = tmp_path_factory.mktemp("w") / "fd025.safetensors"
    save_weights(model.state_dict(), w, {"model": "fd_mobilenet_025", "num_classes": 5, "resolution": RES,
                                         "class_names": classes})  # fmt: skip
    return w


@litert
def test_fp32_tflite_matches_pytorch_and_carries_the_metadata(weights, tmp_path, capsys):
    from fdmobilenet.deploy import open_exported
    from fdmobilenet.deploy.litert import read_metadata

    out = tmp_path / "m.tflite"
    code, stdout, err = run_cli(capsys, "export", "--weights", weights, "-o", out, "--verify-data", FLOWERS_MINI)
    assert code == 0, err
    assert "tflite-fp32" in stdout
    meta = read_metadata(out)
    assert meta["model"] == "fd_mobilenet_025" and meta["resolution"] == RES and meta["class_names"][0] == "daisy"
    clf = open_exported(out)
    x = torch.randn(3, 3, RES, RES)
    from fdmobilenet.models import build_from_weights

    model, _ = build_from_weights(weights)
    with torch.no_grad():
        np.testing.assert_allclose(clf(x).numpy(), model.eval()(x).numpy(), atol=1e-4)
    data = mini_subset(tmp_path / "val", 4)
    code, a, _ = run_cli(capsys, "eval", "--exported", out, "--data", data, "--json")
    code2, b, _ = run_cli(capsys, "eval", "--weights", weights, "--data", data, "--json")
    assert code == code2 == 0 and json.loads(a)["top1"] == json.loads(b)["top1"] and json.loads(a)["n"] == 20
    # export --int8: plain calibration with LiteRT's quantizer, full-integer like quantize's
    q = tmp_path / "m8.tflite"
    code, stdout, err = run_cli(capsys, "export", "--weights", weights, "-o", q, "--int8", "--calibration", data,
                                "--calibration-size", 16)  # fmt: skip
    assert code == 0, err
    assert "tflite-int8" in stdout and read_metadata(q)["calibration"] == {"method": "histogram", "images": 16}
    assert open_exported(q).meta["precision"] == "int8"


@litert
def test_quantize_writes_a_full_integer_tflite_with_the_calibrated_graphs_numbers(weights, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from fdmobilenet.deploy import PtqConfig, open_exported
    from fdmobilenet.deploy.quantize import calibrate
    from fdmobilenet.deploy.samples import image_paths, load_batch
    from fdmobilenet.models import build_from_weights
    from fdmobilenet.preprocess import Preprocess

    data = mini_subset(tmp_path / "calib", 6)
    out = tmp_path / "q.tflite"
    code, _, err = run_cli(capsys, "quantize", "--weights", weights, "--calibration", data, "-o", out,
                           "--calibration-size", 24, "--rounding-steps", 20, "--json")  # fmt: skip
    assert code == 0, err
    it = Interpreter(model_path=str(out))
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    clf = open_exported(out)
    assert clf.meta["precision"] == "int8" and clf.meta["quantization"]["rounding_steps"] == 20
    # the file computes what the calibrated PT2E graph computes, to a few output steps
    model, meta = build_from_weights(weights)
    pre = Preprocess.from_meta({**meta, "resolution": RES})
    photos = load_batch(sorted(image_paths(data, None, 0)), pre)
    import random

    used = sorted(random.Random(0).sample(image_paths(data, None, 0), 24))
    graph = calibrate(model, load_batch(used, pre).split(16), RES, PtqConfig(rounding_steps=20), runtime="litert")
    with torch.no_grad():
        want = graph(photos)
    got = clf(photos)
    step = it.get_output_details()[0]["quantization"][0]
    assert (got - want).abs().max() <= 3 * step + 1e-6
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.9


@pytest.mark.skipif(bool(HAVE_LITERT), reason="checks the message a user without litert-torch gets")
def test_without_litert_a_tflite_export_says_how_to_install_it(weights, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", "--weights", weights, "-o", tmp_path / "m.tflite")
    assert code != 0 and "fdmobilenet[litert]" in err and "Traceback" not in err
    assert not (tmp_path / "m.tflite").exists()
