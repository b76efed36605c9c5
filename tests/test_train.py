"""`fdmobilenet train`: learning, exact resume after SIGKILL/SIGTERM, DDP, bad data, fine-tuning, the digits job.

Runs are tiny (32-64 px, a few hundred images, a few dozen steps) so the file finishes in minutes on
two CPU cores. Subprocesses are used where a real signal or torchrun is the point of the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from fdmobilenet.cli import build_parser, main
from fdmobilenet.cli.train import config_from_args
from fdmobilenet.train import lr_at, make_config, peak_lr
from fdmobilenet.train.config import for_data
from fdmobilenet.weights import read_weights
from helpers import (
    RESUME_ARGS,
    assert_same_weights,
    bad_corpus,
    cifar_subset,
    env,
    metrics,
    mini_subset,
    params,
    torchrun_cmd,
    train_cmd,
    train_until_sigterm,
)
from helpers import shared_path as shared

# --- configuration ------------------------------------------------------------------------------


def test_recipes_and_overrides(tmp_path: Path) -> None:
    """The paper recipe's numbers, the flag > recipe > default order, YAML recipes and their errors."""
    parse = lambda *a: config_from_args(build_parser("train").parse_args(["train", *a]))
    paper, name = parse("--data", "x", "--recipe", "paper")
    assert name == "paper" and paper.batch_size is None  # chosen from the data: ImageNet gets the paper's 256
    paper, note = for_data(paper, 1_281_167)
    assert note is None or "256" in note
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum, paper.nesterov, paper.weight_decay) == (
        120, 256, 0.1, 0.9, True, 4e-5,
    )  # fmt: skip
    assert paper.crop_scale == (0.36, 1.0) and paper.resolution == 224 and paper.crop_pct == 0.875
    spe = 5000
    assert lr_at(paper, 30 * spe - 1, spe) == pytest.approx(0.1)
    assert lr_at(paper, 30 * spe, spe) == pytest.approx(0.01)
    assert lr_at(paper, 119 * spe, spe) == pytest.approx(1e-4)

    modern, _ = parse("--data", "x", "--recipe", "modern", "--epochs", "7", "--batch-size", "512")
    assert modern.schedule == "cosine" and modern.label_smoothing == 0.1 and modern.ema_decay > 0
    assert modern.epochs == 7 and peak_lr(modern) == pytest.approx(0.2)  # lr scaled with the global batch
    # 5 warm-up epochs, capped at a tenth of this 7-epoch run: 70 steps
    assert lr_at(modern, 0, 100) < lr_at(modern, 69, 100) == pytest.approx(0.2)
    assert lr_at(modern, 71, 100) < 0.2  # cosine from step 70 on
    assert lr_at(modern, 7 * 100 - 1, 100) < 1e-3  # cosine to ~0

    digits, name = parse()
    assert name == "digits" and digits.data is None and digits.resolution == 32

    y = tmp_path / "r.yaml"
    y.write_text("recipe: modern\nepochs: 3\ncrop-scale: [0.5, 1.0]\n")
    c, _ = parse("--data", "x", "--recipe", str(y), "--lr", "0.3")
    assert (c.epochs, c.crop_scale, c.lr, c.schedule) == (3, (0.5, 1.0), 0.3, "cosine")
    y.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        parse("--data", "x", "--recipe", str(y))
    with pytest.raises(ValueError, match="crop_scale"):
        make_config({"crop_scale": (0.0, 1.0)})


# --- learning on real data ----------------------------------------------------------------------


def test_cifar_subset_learns_and_checkpoints_serve_eval_and_predict(tmp_path: Path, capsys) -> None:
    data = cifar_subset(tmp_path / "cifar", per_class=200)
    out = tmp_path / "run"
    args = ["--data", str(data), "--val-split", "0.25", "--model", "fd_mobilenet_025", "--resolution", "48"]
    args += ["--epochs", "5", "--batch-size", "32", "--lr", "0.05", "--lr-base-batch", "32", "--schedule", "cosine"]
    args += ["--crop-scale", "0.6", "1", "--crop-pct", "1", "--workers", "1", "--threads", "1", "--out", str(out)]
    assert main(["train", *args]) == 0
    log = capsys.readouterr().out
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == list(range(1, 6))
    best = max(r["val_top1"] for r in rows)
    # 500 validation images: chance is 10% +- 1.3%, so 20% is far outside what guessing gives
    assert best >= 20.0, f"val top-1 {best}% is not clearly above the 10% chance level"
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert f"best val top-1 {best:.2f}%" in log and str(out / "best.safetensors") in log

    split = json.loads((out / "split.json").read_text())
    per_class = {c: sum(v.startswith(c + "/") for v in split["val"]) for c in os.listdir(data)}
    assert set(per_class.values()) == {50}  # stratified: 25% of each class
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"] == "small" and cfg["epochs"] == 5 and cfg["momentum"] == 0.9  # auto: 600 images
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = read_weights(out / "best.safetensors")[1]
    assert meta["class_names"] == sorted(os.listdir(data)) and meta["val_top1"] == best

    # Held-out images (not in the run's train or val split) through the eval and predict commands.
    held = cifar_subset(tmp_path / "held", per_class=20, offset=1000)
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.safetensors"), "--data", str(held), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 200 and r["top1"] > 15.0
    img = sorted((held / "ship").iterdir())[0]
    assert main(["predict", "--weights", str(out / "best.safetensors"), "--topk", "10", str(img)]) == 0
    names = [line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(names) == sorted(os.listdir(data))


# --- exact resume -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resume_setup(tmp_path_factory) -> tuple[Path, Path]:
    """A 160/40-image subset of the in-repository photos and an uninterrupted deterministic run on it
    (4 epochs x 10 steps)."""
    tmp = tmp_path_factory.mktemp("resume")
    data = mini_subset(tmp / "flowers", per_class=40)
    out = tmp / "straight"
    assert main(["train", "--data", str(data), *RESUME_ARGS, "--workers", "0", "--out", str(out)]) == 0
    return data, out


def test_sigkill_then_resume_matches_uninterrupted_run(resume_setup, tmp_path: Path) -> None:
    data, straight = resume_setup
    out = tmp_path / "killed"
    cmd = train_cmd("--data", str(data), *RESUME_ARGS, "--workers", "1", "--checkpoint-every", "3", "--out", str(out))
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = out / "last.state.pt"
    while not state.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()
    ck = torch.load(state, weights_only=True)
    assert 0 < ck["step"] < 40  # killed mid-run, after a checkpoint
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "last.safetensors", straight / "last.safetensors")
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3, 4]
    assert [r["val_top1"] for r in metrics(out)] == [r["val_top1"] for r in metrics(straight)]


def test_a_state_from_before_metric_neutral_keys_still_resumes(resume_setup, tmp_path: Path, capsys) -> None:
    """States written before ``best_score`` named it ``best_top1`` (and had no ``metric``): they resume, and the
    best score they held still decides what ``best`` is."""
    _, straight = resume_setup
    out = tmp_path / "old"
    shutil.copytree(straight, out)
    st = torch.load(out / "last.state.pt", weights_only=True)
    best = st.pop("best_score")
    st.pop("metric")
    torch.save({**st, "best_top1": best}, out / "last.state.pt")
    config = json.loads((out / "config.json").read_text())
    assert main(["train", "--data", config["data"], "--out", str(out), "--resume", "--epochs", "5"]) == 0
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert f"best val top-1 {max(r['val_top1'] for r in rows):.2f}%" in capsys.readouterr().out


def test_sigterm_writes_a_checkpoint_mid_epoch_and_resume_matches(resume_setup, tmp_path: Path) -> None:
    data, straight = resume_setup
    out = tmp_path / "termed"
    cmd = train_cmd("--data", str(data), *RESUME_ARGS, "--workers", "0", "--checkpoint-every", "4", "--out", str(out))
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = out / "last.state.pt"
    while proc.poll() is None:  # signal once the run is 2 steps into epoch 2 (its step-12 checkpoint)
        if state.exists() and torch.load(state, weights_only=True)["step"] >= 12:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    log = proc.stdout.read()
    assert proc.wait() == 128 + signal.SIGTERM, log
    assert "caught SIGTERM" in log
    ck = torch.load(state, weights_only=True)
    assert ck["epoch"] == 1 and 0 < ck["step_in_epoch"] < 10, "the SIGTERM checkpoint should be mid-epoch"
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "last.safetensors", straight / "last.safetensors")
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3, 4]


def test_modern_recipe_with_ema_resumes_exactly(resume_setup, tmp_path: Path) -> None:
    """EMA weights (in the .safetensors), raw weights (in the state file), warm-up and cosine survive a SIGTERM."""
    data, _ = resume_setup
    args = ["--data", str(data), *RESUME_ARGS, "--recipe", "modern", "--ema-decay", "0.9", "--warmup-epochs", "1"]
    args += ["--epochs", "2", "--workers", "0"]
    assert main(["train", *args, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "termed"
    ck = train_until_sigterm(args, out, step=13)
    assert ck["epoch"] == 1 and ck["step_in_epoch"] >= 3 and "model" in ck and ck["ema_n"] == ck["step"]
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "last.safetensors", tmp_path / "straight" / "last.safetensors")
    raw = [torch.load(d / "last.state.pt", weights_only=True)["model"] for d in (out, tmp_path / "straight")]
    for k in raw[0]:
        torch.testing.assert_close(raw[0][k], raw[1][k], rtol=0, atol=1e-6, msg=k)
    ema = read_weights(out / "last.safetensors")[0]
    assert not torch.equal(ema["classifier.weight"], raw[0]["classifier.weight"])  # EMA is not the raw model


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(resume_setup, tmp_path: Path, capsys) -> None:
    data, straight = resume_setup
    out = tmp_path / "nan"
    shutil.copytree(straight, out)
    before = (out / "last.safetensors").read_bytes()
    rc = main(["train", "--data", str(data), "--out", str(out), "--resume", "--epochs", "6", "--lr", "100",
                 "--lr-base-batch", "1"])  # fmt: skip
    assert rc == 3
    err = capsys.readouterr().err
    assert "not finite" in err or "NaN/inf" in err
    assert "last good checkpoint" in err
    assert (out / "last.safetensors").read_bytes() == before
    assert all(torch.isfinite(v).all() for v in read_weights(out / "last.safetensors")[0].values())


def test_existing_run_needs_resume(resume_setup, capsys) -> None:
    data, straight = resume_setup
    assert main(["train", "--data", str(data), "--out", str(straight), "--epochs", "1"]) == 2
    assert "--resume" in capsys.readouterr().err


# --- many processes -----------------------------------------------------------------------------


def test_torchrun_two_gloo_processes_agree_with_one_process(resume_setup, tmp_path: Path, capsys) -> None:
    """2 ranks x 8 images per step == 1 process accumulating 2 x 8: each BatchNorm sees the same 8 images."""
    data, _ = resume_setup
    common = ["--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "2"]
    common += ["--batch-size", "16", "--lr", "0.05", "--lr-base-batch", "16", "--workers", "0", "--threads", "1"]
    # the PIL pipeline seeds each image's crop by its index, so 2 ranks draw the crops 1 process draws;
    # the in-memory one (the default for data this small) draws them per batch and rank
    common += ["--no-in-memory"]
    ddp = torchrun_cmd(29517, "train", *common, "--out", str(tmp_path / "ddp"))
    r = subprocess.run(ddp, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("epoch   2/2") == 1  # only rank 0 prints
    assert "2 process(es)" in r.stdout
    assert [row["epoch"] for row in metrics(tmp_path / "ddp")] == [1, 2]

    one = tmp_path / "one"
    assert main(["train", *common, "--accum-steps", "2", "--out", str(one)]) == 0
    a, b = params(tmp_path / "ddp" / "last.safetensors"), params(one / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


# --- bad data -----------------------------------------------------------------------------------


def test_bad_images(tmp_path: Path, capsys) -> None:
    data, bad = bad_corpus(tmp_path / "data")
    common = ["--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--batch-size", "8"]
    common += ["--lr-base-batch", "8", "--workers", "0", "--threads", "1"]
    common += ["--no-in-memory"]  # per-epoch accounting of the PIL pipeline (in memory, bad files drop out once)

    out = tmp_path / "strict"
    assert main(["train", *common, "--on-bad-image", "error", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    listed = {line.split(": ")[0].strip() for line in err.splitlines() if line.startswith("  ")}
    expected = {str(p) for p in bad} | {str(data / "train" / "empty_class"), str(data / "train" / "red" / "notes.txt")}
    assert listed == expected  # every problem, and nothing readable, is listed
    assert "--on-bad-image skip" in err
    assert not (out / "last.safetensors").exists() and not (out / "metrics.jsonl").exists()

    out = tmp_path / "skip"
    assert main(["train", *common, "--epochs", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = metrics(out)
    # 64 train files = 8 steps of 8: 54 plain + 6 odd-mode images are all used, the 4 broken ones skipped
    assert [(r["images"], r["bad_skipped"]) for r in rows] == [(60, 4), (60, 4)]
    assert "skipped 4 unreadable train image(s)" in captured.out
    listed = {line.split("\t")[1] for line in (out / "bad_images.txt").read_text().splitlines()}
    assert listed == {str(p) for p in bad}
    assert "empty class folder" in captured.err and "notes.txt" in captured.err


def test_missing_or_empty_data_says_what_layout_is_expected(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "DIR/train/<class>" in err
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "a.txt").write_text("x")
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and "DIR/train/<class>" in err


# --- fine-tuning --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_025(tmp_path_factory) -> Path:
    from fdmobilenet.models import convert_authors_checkpoint as convert

    dst = tmp_path_factory.mktemp("weights") / "fd_mobilenet_025.safetensors"
    convert(shared("weights/official/0.25x-FDMobileNet-224.pth.tar"), dst)
    return dst


def test_finetune_from_official_weights_beats_scratch(official_025: Path, tmp_path: Path) -> None:
    """Same data, epochs and recipe; only the initialisation differs (ImageNet features vs Kaiming init)."""
    data = cifar_subset(tmp_path / "cifar", per_class=100)
    common = ["--data", str(data), "--val-split", "0.25", "--resolution", "96", "--epochs", "3"]
    common += ["--batch-size", "32", "--lr", "0.01", "--lr-base-batch", "32", "--schedule", "cosine"]
    common += ["--crop-pct", "1", "--workers", "1", "--seed", "1", "--threads", "1"]
    assert main(["train", *common, "--pretrained", str(official_025), "--out", str(tmp_path / "ft")]) == 0
    assert main(["train", *common, "--model", "fd_mobilenet_025", "--out", str(tmp_path / "scratch")]) == 0
    ft = max(r["val_top1"] for r in metrics(tmp_path / "ft"))
    scratch = max(r["val_top1"] for r in metrics(tmp_path / "scratch"))
    assert ft > scratch + 15.0, (ft, scratch)  # 250 validation images: +-3% noise
    meta = read_weights(tmp_path / "ft" / "best.safetensors")[1]
    assert meta["model"] == "fd_mobilenet_025" and meta["num_classes"] == 10  # model taken from the weights


def test_freeze_backbone_trains_the_head_only(official_025: Path, tmp_path: Path) -> None:
    data = cifar_subset(tmp_path / "cifar", per_class=10)
    out = tmp_path / "head"
    args = ["--data", str(data), "--pretrained", str(official_025), "--freeze-backbone", "--resolution", "32"]
    args += ["--epochs", "1", "--batch-size", "16", "--lr-base-batch", "16", "--val-split", "0.2", "--out", str(out)]
    assert main(["train", *args, "--workers", "0", "--threads", "1"]) == 0
    before, after = read_weights(official_025)[0], read_weights(out / "last.safetensors")[0]
    for k, v in after.items():
        if k.startswith("classifier."):
            assert v.shape[0] == 10
        else:  # convolutions, BatchNorm affine and running statistics untouched
            torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_bare_family_with_width_rebuilds_from_its_checkpoint(tmp_path: Path, capsys) -> None:
    from fdmobilenet.models import build_from_weights

    data = mini_subset(tmp_path / "flowers", per_class=16)
    out = tmp_path / "w03"
    args = ["--data", str(data), "--model", "fd_mobilenet", "--width", "0.3", "--resolution", "32", "--epochs", "1"]
    args += ["--batch-size", "16", "--lr-base-batch", "16", "--val-split", "0.25", "--workers", "0", "--threads", "1"]
    assert main(["train", *args, "--out", str(out)]) == 0
    model, meta = build_from_weights(out / "best.safetensors")
    assert meta["model"] == "fd_mobilenet" and meta["model_kwargs"] == {"width": 0.3}
    assert model.classifier.in_features == int(1024 * 0.3) and model.classifier.out_features == 5
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.safetensors"), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 80


# --- the main job -------------------------------------------------------------------------------


@pytest.mark.slow
def test_digits_main_job_reaches_95_percent_and_serves_eval_predict(tmp_path: Path, capsys) -> None:
    out = tmp_path / "digits"
    assert main(["train", "--out", str(out)]) == 0
    best = max(r["val_top1"] for r in metrics(out))
    assert best >= 95.0
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.safetensors"), "--data", str(out / "digits-val"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 359 and abs(r["top1"] - best) < 0.3  # the exported PNGs are exactly the validation set
    seven = sorted((out / "digits-val" / "7").iterdir())[0]
    assert main(["predict", "--weights", str(out / "best.safetensors"), str(seven)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "7"
