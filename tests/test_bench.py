"""bench: JSON schema and ratios of a short run (no timing thresholds: timings are the output, not the test)."""

from __future__ import annotations

import json
import sys

import pytest

from fdmobilenet import cli
from fdmobilenet.complexity import profile
from fdmobilenet.deploy.bench import Case, parse_model_spec, summarise
from fdmobilenet.models import create_model

REQUIRED = {"model", "backend", "threads", "batch", "macs", "median_ms"}


def test_short_run_json_schema_and_plot(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    backends = ["torch", "ort", "ort-raw", "ort-int8"]
    try:
        import openvino  # noqa: F401

        backends += ["openvino", "openvino-int8"]
    except ImportError:
        pass
    png = tmp_path / "lat.png"
    models = "fd_mobilenet_025,mobilenet_v1_025@64,shufflenet_v1_g3_025"
    argv = ["bench", "--models", models, "--backends", ",".join(backends), "--runs", "5", "--warmup", "1"]
    code = cli.main([*argv, "--resolution", "96", "--threads", "1", "--json", "--plot", str(png)])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(rows) == 3 * len(backends)
    assert {(r["model"], r["backend"]) for r in rows} == {
        (m.split("@")[0], b) for m in models.split(",") for b in backends
    }
    for r in rows:
        assert set(r) >= REQUIRED, r
        assert r["threads"] == 1 and r["batch"] == 1 and r["runs"] == 5
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["throughput_ips"] == pytest.approx(1000 / r["median_ms"], rel=0.01)
        res = 64 if r["model"] == "mobilenet_v1_025" else 96
        assert r["resolution"] == res
        assert r["macs"] == profile(create_model(r["model"], resolution=res), res).macs
        assert r["gmacs_per_s"] == pytest.approx(r["macs"] / r["median_ms"] / 1e6, rel=0.01)
        # every model is compared with the FD-MobileNet of nearest MACs on the same backend
        assert r["fd_reference"] == "fd_mobilenet_025@96"
        ref = next(x for x in rows if x["model"] == "fd_mobilenet_025" and x["backend"] == r["backend"])
        assert r["fd_speedup"] == pytest.approx(r["median_ms"] / ref["median_ms"], rel=1e-2)
        ort = next(x for x in rows if x["model"] == r["model"] and x["backend"] == "ort")
        assert r["speedup_vs_ort_fp32"] == pytest.approx(ort["median_ms"] / r["median_ms"], rel=1e-2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_pick_the_fd_mobilenet_of_nearest_macs():
    cases = [
        Case("fd_mobilenet_100", 224, "ort", 144_000_000, 0),
        Case("fd_mobilenet_050", 224, "ort", 40_000_000, 0),
        Case("mobilenet_v1_050", 224, "ort", 150_000_000, 0),
        Case("shufflenet_v1_g3_050", 224, "ort", 38_000_000, 0),
        Case("shufflenet_v1_g3_050", 224, "torch", 38_000_000, 0),  # no FD row on torch: no ratio
        Case("mobilenet_v1_025", 224, "ort", 41_000_000, 0, note="RuntimeError: boom"),  # failed backend
    ]
    times = {0: [2.0, 2.0, 2.1], 1: [1.0, 0.9, 1.1], 2: [4.0, 4.4, 3.9], 3: [1.5, 1.6, 1.4], 4: [9.0]}
    rows = summarise(cases, times, threads=1, batch=1)
    by = {(r["model"], r["backend"]): r for r in rows}
    assert by["mobilenet_v1_050", "ort"]["fd_reference"] == "fd_mobilenet_100@224"
    assert by["mobilenet_v1_050", "ort"]["fd_speedup"] == pytest.approx(4.0 / 2.0)
    assert by["shufflenet_v1_g3_050", "ort"]["fd_reference"] == "fd_mobilenet_050@224"
    assert by["shufflenet_v1_g3_050", "ort"]["fd_speedup"] == pytest.approx(1.5)
    assert "fd_speedup" not in by["shufflenet_v1_g3_050", "torch"]
    assert by["mobilenet_v1_025", "ort"]["median_ms"] is None and "boom" in by["mobilenet_v1_025", "ort"]["error"]
    assert by["fd_mobilenet_050", "ort"]["p10_ms"] <= 1.0 <= by["fd_mobilenet_050", "ort"]["p90_ms"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "fd_mobilenet_999"], "unknown model 'fd_mobilenet_999'"),
        (["--backends", "tensorrt"], "unknown tensorrt"),
        (["--models", "fd_mobilenet_025@big"], "must be a resolution"),
        (["--runs", "0"], "--runs must be >= 1"),
        (["--target", "cortex-m7"], "give an Ethos-U NPU"),
        (["--target", "ethos-u55-128", "--backends", "ort"], "--backends times or plots runtimes on this machine"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_openvino_backend_without_openvino_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert cli.main(["bench", "--models", "fd_mobilenet_025", "--backends", "openvino", "--runs", "1"]) == 2
    assert 'pip install "fdmobilenet[openvino]"' in capsys.readouterr().err


def test_model_spec():
    assert parse_model_spec("mobilenet_v1_025@160", 224) == ("mobilenet_v1_025", 160)
    assert parse_model_spec("fd_mobilenet_050", 192) == ("fd_mobilenet_050", 192)


def test_family_at_a_budget_spec(tmp_path, capsys):
    """``FAMILY:MFLOPS`` benchmarks the width of a bare family that meets the budget (torchvision ones too)."""
    from fdmobilenet.deploy.bench import build_cases

    assert parse_model_spec("mobilenet_v3_small:40@160", 224) == ("mobilenet_v3_small:40", 160)
    cases = build_cases([("mobilenet_v3_small:40", 224), ("fd_mobilenet:12", 224)], ["torch"], 1, 1, tmp_path)
    assert [abs(c.macs / 1e6 - b) / b < 0.03 for c, b in zip(cases, (40, 12))] == [True, True]
    rows = summarise(cases, {0: [2.0, 2.0], 1: [1.0, 1.0]}, threads=1, batch=1)
    assert [r["family"] for r in rows] == ["mobilenet_v3_small", "fd_mobilenet"]
    assert rows[0]["fd_speedup"] == 2.0  # measured against the FD-MobileNet of nearest complexity
    assert cli.main(["bench", "--models", "fd_mobilenet_025:12", "--runs", "1"]) == 2
    assert "FAMILY:MFLOPS takes a bare family" in capsys.readouterr().err


def test_plot_has_plain_tick_labels_and_a_legend_beside_the_panels(monkeypatch):
    pytest.importorskip("matplotlib")
    from fdmobilenet.deploy import bench

    figs = []
    monkeypatch.setattr(bench, "save_figure", lambda fig, path: figs.append(fig))
    rows = [
        {"family": f, "backend": b, "macs": m, "median_ms": ms}
        for b in ("ort", "torch")
        for f, m, ms in (("fd_mobilenet", 12.04e6, 1.2), ("mobilenet_v1", 13.6e6, 1.36))
    ]
    bench.plot(rows, "unused.png")
    fig = figs[0]
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ort", "torch"]  # one panel per backend
    labels = [t.get_text() for t in axes[0].get_xticklabels() + axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) >= 4 and all(lbl.replace(".", "").isdigit() for lbl in labels), labels
    assert fig.legends and not any(ax.get_legend() for ax in axes)  # one figure legend, outside the panels
    legend_box = fig.legends[0].get_window_extent()
    assert all(legend_box.x0 >= ax.get_window_extent().x1 for ax in axes)


def test_int8_caveat_names_the_cpu_instruction_set() -> None:
    from fdmobilenet.cli.deploy import int8_caveat

    assert "NOT expected to beat fp32" in int8_caveat({"cpu_flags": ["avx2", "fma"]})
    assert "avx512_vnni" in int8_caveat({"cpu_flags": ["avx2", "avx512_vnni"]})
    assert "not detected" in int8_caveat({"cpu_flags": []})


def test_npu_estimates_rank_against_the_fd_mobilenet_of_nearest_macs(monkeypatch, capsys):
    """``bench --target``: one Vela estimate per model (the lowering is faked here: Vela is not in CI); the
    ratio is the estimated time against the FD-MobileNet of nearest MACs; a model that fails is a row."""
    from fdmobilenet.deploy import ethosu
    from fdmobilenet.deploy.ethosu import VelaReport

    asked = []

    def fake_lower(model, res, target, photos=(), equalize=True, activations="int8"):
        asked.append(activations)
        name = model.pretrained_cfg["architecture"]
        if name.startswith("shufflenet"):
            raise RuntimeError("Vela: unsupported operator")
        ms = 1.0 if name.startswith("fd_mobilenet") else 1.25
        return b"", VelaReport(target, "Ethos_U55_High_End_Embedded", "Shared_Sram", 500e6, 100_000, 400_000, 27,
                               0, [], int(ms * 5e5), ms, 4_000_000)  # fmt: skip

    monkeypatch.setattr(ethosu, "lower_ethosu", fake_lower)
    argv = ["bench", "--target", "ethos-u55-128", "--models", "fd_mobilenet_025@96,mobilenet_v1_025@96,"
            "shufflenet_v1_g3_025@96"]  # fmt: skip
    assert cli.main([*argv, "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mobilenet_v1_025"]["fd_speedup"] == pytest.approx(1.25)
    assert rows["mobilenet_v1_025"]["fd_reference"] == "fd_mobilenet_025@96"
    assert rows["mobilenet_v1_025"]["vela"]["npu_ops"] == 27 and rows["fd_mobilenet_025"]["median_ms"] == 1.0
    assert rows["shufflenet_v1_g3_025"]["median_ms"] is None and "unsupported" in rows["shufflenet_v1_g3_025"]["error"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Vela's performance model (Ethos_U55_High_End_Embedded, Shared_Sram, 500 MHz)" in out
    assert "1.25x" in out and "error: RuntimeError: Vela: unsupported operator" in out
    assert set(asked) == {"int8"} and "; INT8, batch 1" in out
    assert cli.main([*argv, "--activations", "int16"]) == 0  # A16W8 lowering asked for, and said
    assert asked[-1] == "int16" and "; A16W8 (16-bit activations), batch 1" in capsys.readouterr().out
