"""INT8 that holds across the label space (issue 22): the fidelity measure, range equalization, bias
correction, fp32 layers, and `quantize`'s report. Tiny models at 32-64 px; the study is benchmarks/int8/fidelity.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from fdmobilenet.deploy import PtqConfig, altered_photos, fidelity_table, int8_fidelity
from fdmobilenet.deploy.fold import fold_batchnorm
from fdmobilenet.models import create_model
from fdmobilenet.weights import save_weights
from helpers import FLOWERS_MINI, mini_subset, run_cli

RES = 64


def _net(name: str = "fd_mobilenet_025", classes: int = 5, seed: int = 0) -> torch.nn.Module:
    """A small network with uneven BatchNorm statistics (channel ranges that differ, as trained ones do)."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=classes).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.2, 0.2)
            m.weight.data.uniform_(0.05, 3.0)
            m.bias.data.uniform_(-0.1, 0.3)
    return model


def _photos(n: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, RES, RES, generator=g)


def test_fidelity_is_agreement_and_kl_per_group_and_pooled():
    model = _net()
    x = {"a": _photos(12), "b": _photos(6, seed=1)}
    same = int8_fidelity(model, model, x)
    assert same["agreement"] == 100.0 and abs(same["kl"]) < 1e-6 and same["n"] == 18
    assert set(same["groups"]) == {"a", "b"} and same["groups"]["b"]["n"] == 6

    class Flip(torch.nn.Module):  # the fp32 logits, shifted by one class on the photos of group b only
        def forward(self, t):
            out = model(t)
            return out.roll(1, dims=1) if t.shape[0] == 6 else out

    r = int8_fidelity(model, Flip(), x, batch_size=100)
    assert r["groups"]["a"]["agreement"] == 100.0 and r["groups"]["b"]["agreement"] < 100.0
    assert r["groups"]["b"]["kl"] > 0 and r["kl"] == pytest.approx(r["groups"]["b"]["kl"] * 6 / 18, rel=1e-3)
    # numpy output (exported runtimes), a single tensor, and no photos
    assert int8_fidelity(model, lambda t: model(t).detach().numpy(), _photos(4))["agreement"] == 100.0
    assert math.isnan(int8_fidelity(model, model, _photos(0))["agreement"])
    text = fidelity_table(r)
    assert "agreement" in text and "  b " in text
    with pytest.raises(ValueError, match="int8 logits"):
        int8_fidelity(model, lambda t: model(t)[:, :3], _photos(2))


def test_altered_photos_are_new_seeded_and_shaped_like_the_input():
    x = _photos(9)
    a, b = altered_photos(x, seed=3), altered_photos(x, seed=3)
    assert a.shape == x.shape and torch.equal(a, b)
    assert all(not torch.allclose(a[i], x[i]) for i in range(9))


def test_equalize_keeps_the_fp32_outputs_and_evens_out_the_depthwise_inputs():
    from fdmobilenet.deploy.refine import _channel_ranges, equalize, relu_chain

    folded = fold_batchnorm(_net())
    x = [_photos(16)]
    with torch.no_grad():
        before = folded(x[0])
    chain = relu_chain(folded)
    ratio = [(r.max() / r[r > 0].min()).item() for r in _channel_ranges(folded, chain, x)]
    assert equalize(folded, x) == len(chain) - 1
    with torch.no_grad():
        assert torch.allclose(folded(x[0]), before, atol=1e-4 * before.abs().max().item())
    after = [(r.max() / r[r > 0].min()).item() for r in _channel_ranges(folded, chain, x)]
    # activations that feed a depthwise conv (the stem's, each pointwise conv's but the last) are evened out
    # (fully, unless a scale would pass the limits that keep kernels clear of INT8's smallest scale)
    into_dw = [i for i, (_, m) in enumerate(chain[1:]) if getattr(m, "groups", 1) > 1]
    assert ratio[0] > 2 and after[0] < 1.01
    assert all(after[i] <= ratio[i] * 1.01 for i in into_dw)
    assert sum(math.log(after[i]) for i in into_dw) < 0.5 * sum(math.log(ratio[i]) for i in into_dw)
    # not a plain ReLU chain (channel shuffle, residuals): left alone
    shuffle = fold_batchnorm(_net("shufflenet_v1_g3_025"))
    assert relu_chain(shuffle) is None and equalize(shuffle, [_photos(2)]) == 0


def test_bias_correction_takes_out_the_mean_shift_and_float_layers_stay_float():
    from fdmobilenet.deploy.quantize import calibrate

    model = _net()
    x = _photos(32)
    with torch.no_grad():
        ref = model(x)

    def shift(cfg):
        q = calibrate(model, x.split(16), RES, cfg)
        with torch.no_grad():
            return (q(x) - ref).mean(0).abs().mean().item(), q

    plain, _ = shift(PtqConfig(equalize=False, bias_correction=False, rounding_steps=0))  # round to nearest
    # corrected, with the stem and the classifier kept fp32: their weights are plain float parameters
    corrected, q = shift(PtqConfig(equalize=False, rounding_steps=0, float_layers=("stem", "classifier")))
    assert corrected < 0.5 * plain
    convs = [n for n in q.graph.nodes if n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    dequantized = ["dequantize" in str(n.args[1].target) for n in convs]
    assert dequantized[0] is False and dequantized[-1] is False and all(dequantized[1:-1])
    with pytest.raises(ValueError, match="observer"):
        PtqConfig(observer="percentile")


def _int8_weights(q: torch.fx.GraphModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(int8 weights, per-channel scales) of every re-roundable layer of a converted graph."""
    per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    out = []
    for n in q.graph.nodes:
        if n.op == "call_function" and n.target == per_channel:
            w, s = (getattr(q, str(a.target)) for a in n.args[:2])
            out.append((w.clone(), s.clone()))
    return out


@pytest.mark.parametrize("groups", [1, 16])
def test_adaround_fits_a_layer_better_than_rounding_to_nearest_on_new_inputs(groups):
    import torch.nn.functional as F

    from fdmobilenet.deploy.quantize import round_weights

    torch.manual_seed(0)
    out_ch = 32 if groups == 1 else 16
    w = torch.randn(out_ch, 16 // groups, 3, 3) * torch.rand(out_ch, 1, 1, 1)
    b = torch.randn(out_ch) * 0.1

    def inputs(n):  # like a photo's features: neighbouring pixels and channels move together
        smooth = F.avg_pool2d(torch.randn(n, 4, 14, 14), 5, 1)
        mix = torch.randn(16, 4, 1, 1)
        return torch.relu(F.conv2d(smooth, mix) + 0.1 * torch.randn(n, 16, 10, 10))

    x_fit, x_new = inputs(64), inputs(64)

    def layer(x, weight):
        return F.conv2d(x, weight, b, 1, 1, 1, groups)

    scale = w.abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 127
    ints = round_weights(layer, w, scale, x_fit, layer(x_fit, w), steps=300, relu=True)
    nearest = (w / scale).round()
    assert ints.abs().max() <= 127 and torch.equal(ints, ints.round())
    assert (ints - nearest).abs().max() <= 1 and (ints != nearest).any()

    def err(k):
        return (F.relu(layer(x_new, k * scale)) - F.relu(layer(x_new, w))).pow(2).mean().item()

    assert err(ints) < 0.8 * err(nearest)  # 0.74 and 0.5 when written


def test_rerounding_keeps_the_files_format_and_the_network_close():
    from fdmobilenet.deploy.quantize import calibrate

    model = _net()
    calib, other = _photos(32), _photos(32, seed=5)
    with torch.no_grad():
        ref = model(other)

    def build(steps):
        return calibrate(model, calib.split(16), RES, PtqConfig(equalize=False, rounding_steps=steps))

    nearest, rerounded = build(0), build(40)
    before, after = _int8_weights(nearest), _int8_weights(rerounded)
    assert len(before) == len(after) == 24
    changed = 0
    for (w0, s0), (w1, s1) in zip(before, after):  # the quantizer's scales, int8 at most one step off
        assert w1.dtype == torch.int8 and torch.equal(s0, s1)
        assert (w1.int() - w0.int()).abs().max() <= 1
        changed += bool((w1 != w0).any())
    assert changed > 12
    with torch.no_grad():
        out = rerounded(other)
    assert (out - ref).pow(2).mean() < 0.02 * ref.var() and (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    with pytest.raises(ValueError, match="rounding_steps"):
        PtqConfig(rounding_steps=-1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    w = tmp_path_factory.mktemp("w") / "fd025.safetensors"
    classes = sorted(p.name for p in FLOWERS_MINI.iterdir() if p.is_dir())
    save_weights(_net().state_dict(), w, {"model": "fd_mobilenet_025", "num_classes": 5, "resolution": RES,
                                          "class_names": classes})  # fmt: skip
    return w


def test_quantize_reports_fidelity_on_other_classes_or_says_it_did_not(weights, tmp_path, capsys):
    pytest.importorskip("executorch")
    pytest.importorskip("onnxruntime")
    data = mini_subset(tmp_path / "tune", 6, classes=3)  # 18 photos of 3 classes
    other = mini_subset(tmp_path / "other", 4, offset=10, classes=5)  # incl. 2 classes never calibrated on
    out = tmp_path / "q.onnx"
    code, stdout, err = run_cli(capsys, "quantize", "--weights", weights, "--data", data, "-o", out,
                                "--calibration-size", 12, "--fidelity-data", other, "--fidelity-size", 8,
                                "--opset", 13, "--rounding-steps", 20)  # fmt: skip
    assert code == 0, err
    assert "INT8 vs fp32 on photos of other classes: agreement" in stdout
    assert "other:other" in stdout and "held-out" in stdout and "altered" in stdout
    from fdmobilenet.deploy import open_exported
    from fdmobilenet.deploy.pipeline import fidelity_report

    how = open_exported(out).meta["quantization"]
    assert how["method"] == "ptq" and how["equalize"] and how["bias_correction"] and how["images"] == 12
    assert how["rounding_steps"] == 20
    # without photos of other classes the report says so, and shows what it did measure
    text = fidelity_report(
        {
            "n": 9,
            "agreement": 90.0,
            "kl": 0.1,
            "groups": {
                "held-out": {"n": 6, "agreement": 100.0, "kl": 0.0},
                "altered": {"n": 3, "agreement": 66.7, "kl": 0.3},
            },
        }
    )
    assert "other classes: not measured" in text and "held-out" in text and "altered" in text
    code, _, err = run_cli(capsys, "quantize", "--weights", weights, "--data", data, "-o", out,
                           "--fidelity-data", tmp_path / "missing")  # fmt: skip
    assert code == 2 and "--fidelity-data" in err


def test_int16_activations_halve_the_error_and_write_an_opset_21_qdq_onnx(weights, tmp_path, capsys):
    pytest.importorskip("executorch")
    pytest.importorskip("onnxruntime")
    import onnx

    from fdmobilenet.deploy import open_exported
    from fdmobilenet.deploy.quantize import calibrate

    model, calib, other = _net(), _photos(32), _photos(32, seed=5)
    with torch.no_grad():
        ref = model(other)
        err = {act: (calibrate(model, calib.split(16), RES, PtqConfig(activations=act, rounding_steps=0))(other) - ref)
               .pow(2).mean() / ref.var() for act in ("int8", "int16")}  # fmt: skip
    assert err["int16"] < 0.5 * err["int8"]  # 0.00046 vs 0.0035 when written
    assert PtqConfig(activations="int16").equalize is False and PtqConfig().equalize is True

    data = mini_subset(tmp_path / "tune", 4, classes=3)
    out = tmp_path / "a16.onnx"
    code, stdout, err_text = run_cli(capsys, "quantize", "--weights", weights, "--data", data, "-o", out,
                                     "--activations", "int16", "--rounding-steps", 10)  # fmt: skip
    assert code == 0, err_text
    assert "A16W8 vs fp32 on photos of other classes: not measured" in stdout
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [21]
    zero_points = {i.name: i for i in proto.graph.initializer}
    q_types = {zero_points[n.input[2]].data_type for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert q_types == {onnx.TensorProto.INT16}
    runner = open_exported(out)
    assert runner.meta["precision"] == "a16w8" and runner.meta["quantization"]["activations"] == "int16"
    assert not runner.meta["quantization"]["equalize"]
    from fdmobilenet.deploy.samples import image_paths, load_batch
    from fdmobilenet.preprocess import Preprocess

    x = load_batch(image_paths(data), Preprocess.from_meta(runner.meta))  # photos in the calibrated range
    with torch.no_grad():
        want = model(x)
    got = torch.as_tensor(runner(x))
    assert (got - want).pow(2).mean() < 0.001 * want.var()
    # int16 is a QDQ .onnx only: XNNPACK (.pte) runs int8; an older opset has no int16 QuantizeLinear
    code, _, err_text = run_cli(capsys, "quantize", "--weights", weights, "--data", data, "-o", tmp_path / "a.pte",
                                "--activations", "int16")  # fmt: skip
    assert code == 2 and "--activations" in err_text and "XNNPACK" in err_text
    code, _, err_text = run_cli(capsys, "quantize", "--weights", weights, "--data", data, "-o", out,
                                "--activations", "int16", "--opset", 13)  # fmt: skip
    assert code == 2 and "--opset" in err_text and "21" in err_text
    code, _, err_text = run_cli(capsys, "export", "--weights", weights, "-o", tmp_path / "e.onnx", "--activations",
                                "int16")  # fmt: skip
    assert code == 2 and "--target" in err_text and "quantize --activations int16" in err_text
