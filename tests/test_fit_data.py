"""``fit --data``: the leading candidates trained, the winner quantized, fp32 and INT8 scored on the hold-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdmobilenet._errors import ParameterError
from fdmobilenet.deploy import open_exported
from fdmobilenet.deploy.ethosu import vela_available
from fdmobilenet.deploy.quantize import PtqConfig
from fdmobilenet.fit import Candidate, fit, limits_for
from fdmobilenet.train.fit_data import REPORT_JSON, REPORT_MD, fit_job, fit_to_data, released_weights_for
from helpers import mini_subset, run_cli

SETTINGS = {"batch_size": 16, "workers": 0, "threads": 1, "val_split": 0.2, "in_memory": True}
FAST_PTQ = PtqConfig(rounding_steps=20)  # the default's 500 steps a layer: same path, slower


def _result():
    return fit(limits_for("ethos-u55-128"), ["fd_mobilenet"], [0.25], [32, 40], cache=False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    data = mini_subset(root / "data", 10)  # 50 photos, 10 held out
    logs: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FDM_WEIGHTS", str(root / "no-weights"))  # nothing found: both candidates from scratch
        report = fit_to_data(_result(), data, root / "out", 1, 2, overrides=SETTINGS, ptq=FAST_PTQ, log=logs.append)
    return root, data, report, logs


def test_report_has_both_candidates_and_the_int8_file(fitted):
    root, _, report, logs = fitted
    out = root / "out"
    assert [c["run"] for c in report["candidates"]] == ["fd_mobilenet_025-40px", "fd_mobilenet_025-32px"]
    assert [c["resolution"] for c in report["candidates"]] == [40, 32]
    assert all(c["pretrained"] is None for c in report["candidates"])
    assert any("from scratch" in m for m in logs)
    tops = [c["val_top1"] for c in report["candidates"]]
    assert report["winner"] == report["candidates"][tops.index(max(tops))]["run"]
    assert json.loads((out / REPORT_JSON).read_text()) == report
    md = (out / REPORT_MD).read_text()
    assert "fd_mobilenet_025-40px" in md and "fd_mobilenet_025-32px" in md
    assert "no latency model" in md or "Vela's estimate" in md  # the latter where the mcu toolchain is installed
    int8 = out / f"{report['winner']}-int8.onnx"
    assert report["int8_file"] == str(int8)
    clf = open_exported(int8)
    assert (
        clf.meta["precision"] == "int8"
        and clf.meta["resolution"] == report["candidates"][tops.index(max(tops))]["resolution"]
    )
    # calibrated on the run's 40 training photos, never on the 10 held out
    assert report["quantization"]["method"] == "ptq" and report["quantization"]["images"] == 40
    if vela_available():
        assert Path(report["ethos_u"]["path"]).is_file()
    else:
        assert "needs" in report["ethos_u"]["skipped"] and report["latency"]["vela_inference_ms"] is None


def test_hold_out_scores_match_eval_of_the_two_files(fitted, capsys):
    root, data, report, _ = fitted
    run = root / "out" / "runs" / report["winner"]
    code, out, _ = run_cli(capsys, "eval", "--weights", run / "best.safetensors", "--split", run, "--json")
    assert code == 0
    fp32 = json.loads(out)
    code, out, _ = run_cli(capsys, "eval", "--exported", report["int8_file"], "--data", data, "--split", run, "--json")
    assert code == 0
    int8 = json.loads(out)
    h = report["hold_out"]
    assert h["photos"] == fp32["n"] == int8["n"] == 10
    assert h["fp32_top1"] == round(fp32["top1"], 2) and h["int8_top1"] == round(int8["top1"], 2)
    assert h["diff"] == round(int8["top1"] - fp32["top1"], 2)
    assert 0 <= h["agreement"] <= 100


def test_rerun_from_the_command_line_keeps_finished_runs(fitted, capsys, monkeypatch):
    root, data, report, _ = fitted
    best = root / "out" / "runs" / report["winner"] / "best.safetensors"
    before = best.stat().st_mtime_ns
    monkeypatch.setenv("FDM_WEIGHTS", str(root / "no-weights"))
    args = ["fit", "--target", "ethos-u55-128", "--families", "fd_mobilenet", "--widths", "0.25", "--resolutions",
            "32,40", "--no-cache", "--data", data, "--out", root / "out", "--batch-size", "16", "--workers", "0",
            "--threads", "1", "--val-split", "0.2", "--in-memory", "--rounding-steps", "20"]  # fmt: skip
    code, out, err = run_cli(capsys, *args, "--epochs", "1", "--json")
    assert code == 0, err
    again = json.loads(out)  # stdout is the report alone; the log went to stderr
    assert err.count("done before, kept") == 2 and best.stat().st_mtime_ns == before
    assert again["candidates"] == report["candidates"] and again["winner"] == report["winner"]
    assert again["hold_out"]["fp32_top1"] == report["hold_out"]["fp32_top1"]
    code, _, err = run_cli(capsys, *args, "--epochs", "2")  # other settings into the same --out: refused
    assert code == 2 and "--epochs" in err and "trained with" in err and err.count("\n") == 1


def test_out_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match="did not write") as info:
        fit_to_data(_result(), mini_subset(tmp_path / "data", 4), tmp_path / "out", 1)
    assert info.value.param == "out" and (tmp_path / "out" / "notes.txt").read_text() == "mine"
    with pytest.raises(ParameterError, match="`top`"):
        fit_to_data(_result(), tmp_path / "data", tmp_path / "new", 1, top=0)


def test_released_widths_fine_tune_from_the_authors_weights(tmp_path, monkeypatch):
    from fdmobilenet.train import load_recipe
    from fdmobilenet.train.runner import job_settings

    monkeypatch.setenv("FDM_WEIGHTS", str(tmp_path / "empty"))
    fd025 = Candidate("fd_mobilenet", 0.25, 128, 1, 1, 1, 1)
    assert released_weights_for(fd025) is None and released_weights_for(fd025, tmp_path) is None
    (tmp_path / "0.25x-FDMobileNet-224.pth.tar").write_bytes(b"")
    assert released_weights_for(fd025, tmp_path) == str(tmp_path / "0.25x-FDMobileNet-224.pth.tar")
    (tmp_path / "fd_mobilenet_025.safetensors").write_bytes(b"")
    assert released_weights_for(fd025, tmp_path) == str(tmp_path / "fd_mobilenet_025.safetensors")
    assert released_weights_for(Candidate("fd_mobilenet", 0.375, 128, 1, 1, 1, 1), tmp_path) is None
    assert released_weights_for(Candidate("mobilenet_v1", 0.25, 128, 1, 1, 1, 1), tmp_path) is None
    job = fit_job(Candidate("fd_mobilenet", 0.25, 128, 1, 1, 1, 1), "w.safetensors")
    assert job.name == "fd_mobilenet_025-ft-128px"
    recipe = load_recipe("small")
    got = job_settings(job, {"resolution": 128}, recipe, tmp_path / "run", 3)
    assert (got["model"], got["pretrained"], got["lr"]) == ("fd_mobilenet_025", "w.safetensors", recipe["lr"] / 10)


@pytest.mark.parametrize("flag, value", [("--epochs", "3"), ("--train-top", "2"), ("--out", "x")])
def test_data_flags_need_data(capsys, flag, value):
    code, out, err = run_cli(capsys, "fit", "--max-sram", "256KiB", flag, value)
    assert code == 2 and out == ""
    assert err.strip() == f"fdmobilenet fit: error: {flag} needs --data DIR (it trains on your photos)"


def test_bad_data_flags_are_one_line_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "fit", "--max-sram", "256KiB", "--data", tmp_path, "--train-top", "0")
    assert code == 2 and "--train-top" in err
    code, _, err = run_cli(capsys, "fit", "--max-sram", "256KiB", "--data", tmp_path / "absent", "--no-cache",
                           "--families", "fd_mobilenet", "--widths", "0.25", "--resolutions", "32")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--data" in err and "does not exist" in err
