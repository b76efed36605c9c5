"""``fit``: device limits, the search on the meta device, the Pareto set and the command."""

import json

import pytest

from fdmobilenet.cli import main
from fdmobilenet.fit import DEVICES, Candidate, Limits, binding, fit, limits_for, pareto, parse_size


@pytest.mark.parametrize(
    "text, n",
    [("256KiB", 262144), ("2MiB", 2097152), ("300kB", 300000), ("262144", 262144), ("1.5 MiB", 1572864), (7, 7)],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


def test_parse_size_rejects_junk():
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_presets_have_sources_and_flags_override_them():
    assert all(d.source and d.clock_mhz > 0 and d.sram for d in DEVICES.values())
    lim = limits_for("ethos-u55-128", max_sram="128KiB")
    assert (lim.sram, lim.flash, lim.device.name) == (128 * 1024, DEVICES["ethos-u55-128"].flash, "ethos-u55-128")
    with pytest.raises(ValueError, match="unknown `target`"):
        limits_for("cortex-m99")
    with pytest.raises(ValueError, match="at least one"):
        limits_for()


def _c(macs, sram, flash, fam="fd_mobilenet"):
    return Candidate(fam, 0.5, 128, macs, 0, sram, flash)


def test_pareto_and_binding():
    a, b, c, d = _c(100, 50, 50), _c(80, 40, 60), _c(70, 60, 60), _c(60, 30, 30)
    assert pareto([c, d, b, a]) == [a, b, d]  # c: a has more MACs with less SRAM and flash
    assert binding(a, Limits(sram=100, flash=200, mmacs=1e-4)) == "mmacs 100%"
    assert binding(b, Limits(sram=50, flash=200)) == "sram 80%"


def test_fit_searches_on_the_meta_device(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grid = dict(families=["fd_mobilenet", "mobilenet_v1"], widths=[0.25, 0.5], resolutions=[96, 128])
    r = fit(limits_for(max_sram="48KiB"), **grid)
    assert r.searched == 8
    # FD-MobileNet 0.25x at 96 px: 3x96x96 + 8x48x48 = 46,080 bytes at its stem; at 128 px 81,920 > 48 KiB
    assert {(c.family, c.width, c.resolution) for c in r.fitting} == {("fd_mobilenet", 0.25, 96)}
    assert r.best_per_family["fd_mobilenet"].sram == 46080
    cached = json.loads(next((tmp_path / "fdmobilenet").glob("fit-*.json")).read_text())
    assert cached["fd_mobilenet|0.25|96"][2] == 46080 and len(cached) == 8
    again = fit(limits_for(max_sram="48KiB"), **grid)  # from the cache file
    assert again.fitting == r.fitting


def test_fit_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["fit", "--list-targets"]) == 0
    assert "source:" in capsys.readouterr().out
    args = ["fit", "--target", "ethos-u55-128", "--max-sram", "256KiB", "--families", "fd_mobilenet"]
    assert main([*args, "--widths", "0.25,0.5", "--resolutions", "160,224", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["limits"]["target"] == "ethos-u55-128" and out["limits"]["sram"] == 256 * 1024
    names = {(r["name"], r["resolution"]) for r in out["pareto"]}
    assert ("fd_mobilenet_050", 224) not in names  # 3x224x224 + 16x112x112 = 351 KiB of activations
    assert ("fd_mobilenet_050", 160) in names
    assert main([*args, "--max-sram", "1KiB", "--widths", "0.25", "--resolutions", "96"]) == 0
    assert "nothing fits" in capsys.readouterr().out
    assert main(["fit", "--target", "nope"]) == 2


def test_ethos_u_targets_count_sram_as_vela_plans_it(tmp_path, monkeypatch):
    """An Ethos-U keeps feature maps with channels padded to 16 (NHCWB16): MobileNet V1 0.125x at 224 px needs
    2 x 16x112x112 bytes there (its first depthwise conv's input and output; Vela: 392.4 KiB), not the 196 KiB
    its 4-channel maps take."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grid = dict(families=["mobilenet_v1"], widths=[0.125], resolutions=[224])
    plain = fit(limits_for(max_sram="256KiB"), **grid)
    npu = fit(limits_for("ethos-u55-128", max_sram="256KiB"), **grid)
    assert [c.sram for c in plain.fitting] == [196 * 1024]
    assert npu.fitting == [] and npu.searched == 1
    roomy = fit(limits_for("ethos-u55-128", max_sram="512KiB"), **grid)
    assert [c.sram for c in roomy.fitting] == [2 * 16 * 112 * 112]
    # A16W8: 2 bytes an activation (Vela: 224.6 vs 112.6 KiB, FD-MobileNet 0.25x at 128 px), weights unchanged
    wide = fit(limits_for("ethos-u55-128", max_sram="1MiB"), activations="int16", **grid)
    assert [c.sram for c in wide.fitting] == [2 * 2 * 16 * 112 * 112]
    assert wide.fitting[0].flash == roomy.fitting[0].flash
    assert fit(limits_for("ethos-u55-128", max_sram="512KiB"), activations="int16", **grid).fitting == []
    with pytest.raises(ValueError, match="activations"):
        fit(limits_for(max_sram="1MiB"), activations="int4", **grid)


def test_vela_estimates_the_pareto_rows_until_one_meets_the_latency(tmp_path, monkeypatch, capsys):
    """``--max-latency``: rows most-MACs first, each estimated by Vela (faked here: not in CI), until one is fast
    enough; ``--estimate N`` alone estimates N rows; both need an Ethos-U target."""
    import fdmobilenet.fit as fitmod
    from fdmobilenet.deploy.ethosu import VelaReport

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asked = []

    def fake(c, target, activations="int8"):
        asked.append((c.name, c.resolution))
        assert activations == "int8"
        ms = c.macs / 1e7  # 10 MMACs a millisecond
        return VelaReport(target, "Ethos_U55_High_End_Embedded", "Shared_Sram", 500e6, c.sram, c.flash, 27, 0, [],
                          int(ms * 5e5), ms, c.macs)  # fmt: skip

    monkeypatch.setattr(fitmod, "estimate", fake)
    args = ["fit", "--target", "ethos-u55-128", "--families", "fd_mobilenet", "--widths", "0.25,0.5",
            "--resolutions", "128,160"]  # fmt: skip
    assert main([*args, "--max-latency", "1.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    front = [(r["name"], r["resolution"]) for r in out["pareto"]]
    assert asked == front[: len(asked)] and out["vela"][-1]["inference_ms"] <= 1.5
    assert all(r["inference_ms"] > 1.5 for r in out["vela"][:-1])
    assert main([*args, "--estimate", "1"]) == 0
    text = capsys.readouterr().out
    assert "Vela's estimates (Ethos_U55_High_End_Embedded, 500 MHz" in text and len(asked) == len(out["vela"]) + 1
    for bad, says in ((["--max-latency", "0"], "--max-latency must be a positive"),
                      (["--max-latency", "2", "--estimate", "0"], "needs Vela's estimates")):  # fmt: skip
        assert main([*args, *bad]) == 2 and says in capsys.readouterr().err
    assert main(["fit", "--max-sram", "256KiB", "--estimate", "2"]) == 2
    assert "give an Ethos-U --target" in capsys.readouterr().err
