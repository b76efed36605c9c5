"""Training defaults that scale with the run: fractional milestones, a capped warm-up, a batch size and a
recipe chosen from the data, an EMA that warms up, and a `best` picked between the EMA and the raw
weights -- each exact under SIGTERM and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fdmobilenet.cli import main
from fdmobilenet.train import lr_at, make_config, peak_lr
from fdmobilenet.train.config import auto_batch_size, auto_recipe, for_data
from fdmobilenet.train.optim import ema_warmup_avg_fn, warmup_steps
from fdmobilenet.weights import read_weights
from helpers import (
    FLOWERS_MINI,
    RESUME_ARGS,
    assert_same_weights,
    cifar_subset,
    metrics,
    mini_subset,
    run_cli,
    train_until_sigterm,
)


def test_paper_milestones_are_fractions_of_the_run() -> None:
    imagenet = make_config({"batch_size": 256})  # the paper: 120 epochs, /10 at 30, 60, 90
    spe = 5000
    for epoch, lr in ((0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 1e-3), (90, 1e-4), (119, 1e-4)):
        assert lr_at(imagenet, epoch * spe + (spe - 1 if epoch % 30 == 29 else 0), spe) == pytest.approx(lr)
    short = make_config({"batch_size": 64, "epochs": 5})  # 155 steps: decays at steps 39, 78, 116
    peak = peak_lr(short)
    assert [lr_at(short, s, 31) / peak for s in (38, 39, 77, 78, 115, 116, 154)] == pytest.approx(
        [1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    fixed = make_config({"batch_size": 64, "epochs": 5, "lr_step_epochs": 30})  # the old rule: never decays
    assert lr_at(fixed, 154, 31) == pytest.approx(peak)
    with pytest.raises(ValueError, match="lr_milestones"):
        make_config({"lr_milestones": (0.5, 0.25)})


def test_warmup_is_capped_at_a_tenth_of_the_run() -> None:
    assert warmup_steps(make_config({"warmup_epochs": 5, "epochs": 120}), 100) == 500
    assert warmup_steps(make_config({"warmup_epochs": 5, "epochs": 20}), 100) == 200
    assert warmup_steps(make_config({"warmup_epochs": 0.5, "epochs": 20}), 100) == 50


def test_batch_size_and_recipe_follow_the_size_of_the_data() -> None:
    sizes = {1_281_167: 256, 25_600: 256, 25_599: 128, 12_800: 128, 12_799: 64, 9_000: 64, 2_000: 64, 100: 32,
             180: 16, 15: 16}  # fmt: skip
    assert {n: auto_batch_size(n) for n in sizes} == sizes
    assert auto_recipe(1_281_167)[0] == "paper" and auto_recipe(25_600)[0] == "paper"
    assert auto_recipe(25_599)[0] == "small" and "too few steps" in auto_recipe(2_000)[1]
    cfg, note = for_data(make_config({}), 2_000)
    assert cfg.batch_size == 64 and "batch size 64" in note and "7 steps an epoch at 256, fewer than 100" in note
    assert "16 left out of each epoch" in note
    tiny, note = for_data(make_config({}), 180)  # at 64, 52 of 180 photos sat out every epoch
    assert tiny.batch_size == 16 and "at 64 the last 52 would sit out" in note and "4 left out" in note
    explicit, note = for_data(make_config({"batch_size": 32}), 2_000)
    assert explicit.batch_size == 32 and note is None  # an explicit --batch-size always wins


def test_ema_warmup_follows_the_update_count() -> None:
    model = nn.Linear(1, 1, bias=False)
    warm = AveragedModel(model, multi_avg_fn=ema_warmup_avg_fn(0.9998), use_buffers=True)
    fixed = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9998), use_buffers=True)
    expected = 1.0
    for step in range(4):  # the first update copies; the n-th after it keeps min(d, (1+n)/(10+n)) of the average
        with torch.no_grad():
            model.weight.fill_(1.0 if step == 0 else 0.0)
        warm.update_parameters(model)
        fixed.update_parameters(model)
        if step:
            expected *= (1 + step) / (10 + step)
    assert warm.module.weight.item() == pytest.approx(expected)  # 2/11 * 3/12 * 4/13: tracks the model
    assert fixed.module.weight.item() > 0.999  # still the first weights after 4 steps


@pytest.mark.parametrize("pipeline", [["--no-in-memory"], ["--in-memory"]], ids=["pil", "in-memory"])
def test_default_recipe_picks_best_of_ema_and_raw_and_resumes_exactly(pipeline, tmp_path: Path, capsys) -> None:
    data = cifar_subset(tmp_path / "data", per_class=40)  # 320 train / 80 val: auto -> small, batch 64
    args = ["--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "4"]
    args += ["--val-split", "0.2", "--deterministic", "--threads", "1", "--workers", "0", *pipeline]
    straight = tmp_path / "straight"
    assert main(["train", *args, "--out", str(straight)]) == 0
    log = capsys.readouterr().out
    assert "recipe small (auto: 320 training images" in log and "batch size 64 (320 training images" in log
    rows = metrics(straight)
    assert all(r["val_top1"] == max(r["val_top1_ema"], r["val_top1_raw"]) for r in rows)
    best_row = max(rows, key=lambda r: r["val_top1"])
    meta = read_weights(straight / "best.safetensors")[1]
    assert meta["val_top1"] == best_row["val_top1"]
    assert meta["ema"] == (best_row["val_top1_ema"] >= best_row["val_top1_raw"])  # the log's choice is the file's

    stopped = tmp_path / "stopped"
    state = train_until_sigterm(args, stopped, step=7)  # 5 steps an epoch: stops inside epoch 2
    assert 7 <= state["step"] < 10  # stopped inside epoch 2, after a mid-epoch checkpoint
    assert main(["train", *args, "--out", str(stopped), "--resume"]) == 0
    for tag in ("last", "best"):
        assert_same_weights(stopped / f"{tag}.safetensors", straight / f"{tag}.safetensors")
    assert [r["val_top1"] for r in metrics(stopped)] == [r["val_top1"] for r in rows]


def test_finetuning_defaults_to_a_tenth_of_the_recipe_lr(official_weights, tmp_path: Path, capsys) -> None:
    from fdmobilenet.cli import build_parser
    from fdmobilenet.cli.train import config_from_args

    data = cifar_subset(tmp_path / "data", per_class=5)
    parse = lambda *a: config_from_args(build_parser("train").parse_args(["train", "--data", str(data), *a]))
    cfg, recipe = parse("--pretrained", str(official_weights["025"]))
    assert recipe == "small" and cfg.model == "fd_mobilenet_025" and cfg.lr == pytest.approx(0.01)
    assert "lr 0.01 (a tenth of the recipe's" in capsys.readouterr().out
    assert parse("--pretrained", str(official_weights["025"]), "--lr", "0.05")[0].lr == 0.05  # --lr wins
    assert parse("--pretrained", str(official_weights["025"]), "--recipe", "paper")[0].lr == 0.1  # as named


@pytest.mark.parametrize("pipeline", [["--no-in-memory"], ["--in-memory"]], ids=["pil", "in-memory"])
def test_strong_augmentation_resumes_exactly_after_sigterm(pipeline, tmp_path: Path) -> None:
    """TrivialAugment and random erasing are seeded per image (pil) or per batch (in-memory), not by the
    global RNG's history: a run stopped mid-epoch and resumed ends with the uninterrupted run's weights."""
    data = mini_subset(tmp_path / "data", per_class=40)  # 160 train / 40 val: 10 steps an epoch
    args = ["--data", str(data), *RESUME_ARGS, "--epochs", "2", "--workers", "0", *pipeline]
    args += ["--auto-augment", "trivialaugment", "--random-erasing", "0.25"]
    straight = tmp_path / "straight"
    assert main(["train", *args, "--out", str(straight)]) == 0
    stopped = tmp_path / "stopped"
    state = train_until_sigterm(args, stopped, step=13)
    assert state["epoch"] == 1 and state["step_in_epoch"] >= 3  # stopped inside epoch 2
    assert main(["train", "--data", str(data), "--out", str(stopped), "--resume"]) == 0
    assert_same_weights(stopped / "last.safetensors", straight / "last.safetensors")
    assert [r["val_top1"] for r in metrics(stopped)] == [r["val_top1"] for r in metrics(straight)]


def test_data_alone_gets_a_model_and_run_length_sized_to_it(capsys) -> None:
    """``--data`` of a few photos: the small recipe's half-width model and 30 epochs (not the paper's full-width
    model for 120 epochs), said in the log; anything given on the command line wins."""
    from fdmobilenet.cli import build_parser
    from fdmobilenet.cli.train import config_from_args

    parser = build_parser("train")
    cfg, recipe = config_from_args(parser.parse_args(["train", "--data", str(FLOWERS_MINI)]))
    assert (recipe, cfg.model, cfg.epochs) == ("small", "fd_mobilenet_050", 30)
    assert "--model fd_mobilenet_050 and --epochs 30 from it" in capsys.readouterr().out
    cfg, _ = config_from_args(parser.parse_args(["train", "--data", str(FLOWERS_MINI), "--epochs", "3"]))
    assert cfg.epochs == 3 and "--epochs 30" not in capsys.readouterr().out


def test_epoch_log_eta_no_top5_for_five_classes_recorded_warmup_finished_resume(tmp_path: Path, capsys) -> None:
    args = ["--data", FLOWERS_MINI, "--resolution", 32, "--epochs", 2, "--threads", 1, "--workers", 0]
    code, out, err = run_cli(capsys, "train", *args, "--warmup-epochs", 5, "--out", tmp_path / "r")
    assert code == 0, err
    epoch_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ") and "train loss" in ln]
    assert "ETA 0:" in epoch_lines[0] and "ETA" not in epoch_lines[1]
    assert "top-5" not in out  # 5 classes: top-5 is 100 % by construction
    assert all("val_top5" not in r for r in metrics(tmp_path / "r"))
    # config.json, "the effective configuration", records the warm-up the run had (capped at a tenth)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["warmup_epochs"] == 0.2
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", "--resume")
    assert code == 0, err
    assert "has finished its 2 epochs: nothing to train" in out and "resumed" not in out
