"""Ethos-U through ExecuTorch's Arm backend and Vela. Skipped unless ethos-u-vela and tosa-tools are installed
(`pip install 'fdmobilenet[mcu]'` and `pip install --no-deps tosa-tools`); not part of CI."""

import pytest

from fdmobilenet.deploy.ethosu import is_ethosu_target, vela_available


def test_targets():
    assert is_ethosu_target("ethos-u55-128") and is_ethosu_target("Ethos-U65-256")
    assert not is_ethosu_target("cortex-m7") and not is_ethosu_target("ethos-u55-100")


@pytest.mark.skipif(not vela_available(), reason="needs ethos-u-vela and tosa-tools (the mcu extra)")
def test_vela_plans_fd_mobilenet(tmp_path):
    import torch

    from fdmobilenet import create_model, profile
    from fdmobilenet.deploy.ethosu import export_ethosu

    torch.manual_seed(0)
    model = create_model("fd_mobilenet", width=0.25, num_classes=10)
    r = export_ethosu(model, tmp_path / "m.pte", 96, "ethos-u55-128")
    assert (tmp_path / "m.pte").stat().st_size > 1000
    assert r.npu_ops > 0 and r.cpu_ops == 0 and not r.outside_delegate  # the whole graph on the NPU
    assert r.clock_hz == 500e6 and r.inference_ms > 0
    ours = profile(model, 96)
    # Vela's arena holds at least the activations we count, and its flash the weights (encoded)
    assert ours.int8_peak_activation_bytes <= r.sram_bytes < 2 * ours.int8_peak_activation_bytes + 64 * 1024
    assert 0.8 * ours.int8_weight_bytes < r.flash_bytes < 1.5 * ours.int8_weight_bytes + 16 * 1024
    # A16W8: every operator still on the NPU; the activations take twice the SRAM, the weights the same flash
    wide = export_ethosu(model, tmp_path / "a16.pte", 96, "ethos-u55-128", activations="int16")
    assert wide.npu_ops == r.npu_ops and wide.cpu_ops == 0 and not wide.outside_delegate
    assert 1.7 * r.sram_bytes < wide.sram_bytes < 2.3 * r.sram_bytes  # 224.6 vs 112.6 KiB at 128 px (0.25x)
    assert wide.flash_bytes == pytest.approx(r.flash_bytes, rel=0.05) and wide.inference_ms > r.inference_ms


@pytest.mark.skipif(not vela_available(), reason="needs ethos-u-vela and tosa-tools (the mcu extra)")
def test_bench_target_puts_vela_estimates_side_by_side(capsys):
    import json

    from fdmobilenet import cli

    argv = ["bench", "--target", "ethos-u55-128", "--models", "fd_mobilenet_025@96,mobilenet_v1_025@96", "--json"]
    assert cli.main(argv) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    fd, mb = rows["fd_mobilenet_025"], rows["mobilenet_v1_025"]
    assert fd["median_ms"] == pytest.approx(fd["vela"]["inference_ms"], abs=1e-4) and fd["vela"]["cpu_ops"] == 0
    assert mb["fd_reference"] == "fd_mobilenet_025@96"
    assert mb["fd_speedup"] == pytest.approx(mb["median_ms"] / fd["median_ms"], rel=1e-3)


@pytest.mark.skipif(not vela_available(), reason="needs ethos-u-vela and tosa-tools (the mcu extra)")
def test_fit_asks_vela_for_the_leading_rows(tmp_path, monkeypatch, capsys):
    import json

    from fdmobilenet import cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["fit", "--target", "ethos-u55-128", "--families", "fd_mobilenet", "--widths", "0.25",
            "--resolutions", "96,128", "--estimate", "1", "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["vela"]
    assert (row["name"], row["resolution"]) == ("fd_mobilenet_025", 128) and row["inference_ms"] > 0
    assert abs(row["sram_bytes"] - out["pareto"][0]["sram"]) < 0.02 * row["sram_bytes"]  # NHCWB16 = Vela's plan


@pytest.mark.skipif(not vela_available(), reason="needs ethos-u-vela and tosa-tools (the mcu extra)")
def test_the_ethos_u_graph_gets_quantizes_corrections_int32_biases_included():
    """Arm's scheme stores int32 biases: bias correction shifts them in their own steps; the A16W8 graph an
    Ethos-U .pte is lowered from ends closer to fp32 (0.00034 vs 0.00092 relative error when written)."""
    import torch
    from test_int8_fidelity import RES, _net, _photos

    from fdmobilenet.deploy.ethosu import quantize_ethosu
    from fdmobilenet.deploy.quantize import PtqConfig

    model, calib, other = _net(), _photos(32), _photos(32, seed=5)
    with torch.no_grad():
        ref = model(other)

    from fdmobilenet.deploy.refine import _attr, _int32_bias

    def build(**kw):
        cfg = PtqConfig(activations="int16", **kw)
        graph = quantize_ethosu(model, RES, "ethos-u55-128", list(calib.split(16)), cfg)
        with torch.no_grad():
            err = float((graph(other) - ref).pow(2).mean() / ref.var())
        biases = [_attr(graph, n.args[0].target).clone() for n in graph.graph.nodes if _int32_bias(n)]
        return err, biases

    (plain, b0), (corrected, b1) = build(rounding_steps=0, bias_correction=False), build(rounding_steps=20)
    assert corrected < 0.6 * plain
    assert len(b0) == len(b1) == 24 and sum(not torch.equal(x, y) for x, y in zip(b0, b1)) > 12
