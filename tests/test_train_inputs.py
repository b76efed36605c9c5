"""`train --loader gpu`, `train --data PREPARED` and `--train-resolution`, run on CPU.

The batched (device-decode) loader is the same code on CPU and GPU, so what can be checked here is
that it trains, resumes exactly, accounts for bad files like the regular loader, reads prepared
shards, and that the resolution schedule reaches the network. GPU throughput lives in
benchmarks/input_pipeline.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fdmobilenet.cli import main
from fdmobilenet.data.packed import prepare
from fdmobilenet.train import make_config, optim, resolution_schedule, tasks, train_resolution_at
from helpers import (
    RESUME_ARGS,
    assert_same_weights,
    bad_corpus,
    env,
    metrics,
    mini_subset,
    torchrun_cmd,
    train_until_sigterm,
)

SMALL = ["--epochs", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return mini_subset(tmp_path_factory.mktemp("inputs") / "flowers", per_class=40)  # 160 train / 40 val


def test_gpu_loader_learns_on_cpu_and_resumes_exactly_after_sigterm(cifar: Path, tmp_path: Path, capsys) -> None:
    args = ["--data", str(cifar), *RESUME_ARGS, *SMALL, "--loader", "gpu"]
    assert main(["train", *args, "--out", str(tmp_path / "straight")]) == 0
    assert "gpu input pipeline" in capsys.readouterr().out
    out = tmp_path / "termed"
    ck = train_until_sigterm(args, out, step=13)
    assert ck["epoch"] == 1 and ck["step_in_epoch"] >= 3  # stopped inside epoch 2: crops must be re-drawn alike
    assert main(["train", "--data", str(cifar), "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "last.safetensors", tmp_path / "straight" / "last.safetensors")
    assert [r["val_top1"] for r in metrics(out)] == [r["val_top1"] for r in metrics(tmp_path / "straight")]
    assert [r["images"] for r in metrics(out)] == [160, 160]


def test_gpu_loader_reports_bad_files_like_the_regular_loader(tmp_path: Path) -> None:
    data, bad = bad_corpus(tmp_path / "data")
    common = ["--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--batch-size", "8"]
    common += ["--lr-base-batch", "8", "--workers", "0", "--threads", "1", "--epochs", "1", "--loader", "gpu"]
    out = tmp_path / "gpu"
    assert main(["train", *common, "--out", str(out)]) == 0
    # the same counts as tests/test_train.py::test_bad_images gets from the regular loader
    assert [(r["images"], r["bad_skipped"]) for r in metrics(out)] == [(60, 4)]
    listed = {line.split("\t")[1] for line in (out / "bad_images.txt").read_text().splitlines()}
    assert listed == {str(p) for p in bad}


def test_gpu_loader_under_torchrun_counts_bad_files_of_every_rank(tmp_path: Path) -> None:
    data, bad = bad_corpus(tmp_path / "data")
    args = ["--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--batch-size", "8"]
    args += ["--lr-base-batch", "8", "--workers", "0", "--threads", "1", "--epochs", "1", "--loader", "gpu"]
    cmd = torchrun_cmd(29518, "train", *args, "--out", str(tmp_path / "ddp"))
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 process(es)" in r.stdout and "gpu input pipeline" in r.stdout
    assert [(row["images"], row["bad_skipped"]) for row in metrics(tmp_path / "ddp")] == [(60, 4)]
    listed = {line.split("\t")[1] for line in (tmp_path / "ddp" / "bad_images.txt").read_text().splitlines()}
    assert listed == {str(p) for p in bad}


def test_prepared_data_trains_with_either_loader_and_keeps_its_split(cifar: Path, tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    prepare(cifar, packed, 32, shards=3, workers=1, progress=False)
    args = ["--data", str(packed), *RESUME_ARGS, *SMALL]
    runs = {}
    for loader in ("pil", "gpu"):
        out = tmp_path / loader
        assert main(["train", *args, "--loader", loader, "--out", str(out)]) == 0
        runs[loader] = metrics(out)
        split = json.loads((out / "split.json").read_text())
        assert len(split["val"]) == 40 and all(v.startswith("#") for v in split["val"])
    assert [r["images"] for r in runs["pil"]] == [r["images"] for r in runs["gpu"]] == [160, 160]
    # the seeded split is the same one the image folder gets: same labels held out per class
    folder_out = tmp_path / "folder"
    assert main(["train", "--data", str(cifar), *RESUME_ARGS, "--epochs", "1", "--workers", "0",
                 "--out", str(folder_out)]) == 0  # fmt: skip
    assert len(json.loads((folder_out / "split.json").read_text())["val"]) == 40

    # ImageNet layout: train/ and val/ prepared separately; classes must agree
    layout = tmp_path / "layout"
    prepare(cifar, layout / "train", 32, shards=2, workers=1, progress=False)
    prepare(mini_subset(tmp_path / "val_src", per_class=4, offset=36), layout / "val", 32, workers=1, progress=False)
    out = tmp_path / "layout_run"
    assert main(["train", "--data", str(layout), *RESUME_ARGS, *SMALL, "--loader", "gpu", "--out", str(out)]) == 0
    assert not (out / "split.json").exists() and len(metrics(out)) == 2


def test_prepared_data_errors_name_the_file_and_the_fix(tmp_path: Path, capsys) -> None:
    src = mini_subset(tmp_path / "src", per_class=4)
    broken = src / "daisy" / "broken.jpg"
    broken.write_bytes(b"")
    packed = tmp_path / "packed"
    prepare(src, packed, 32, shards=1, workers=1, progress=False)
    common = ["--data", str(packed), *RESUME_ARGS, "--batch-size", "8"]
    assert main(["train", *common, "--on-bad-image", "error", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert err.count(str(broken)) == 1 and "left out by prepare" in err and "--on-bad-image skip" in err


def test_in_memory_refuses_prepared_shards_with_a_clear_message(cifar: Path, tmp_path: Path, capsys) -> None:
    packed = tmp_path / "packed"
    prepare(cifar, packed, 32, shards=1, workers=1, progress=False)
    assert main(["train", "--data", str(packed), *RESUME_ARGS, "--in-memory", "--out", str(tmp_path / "o")]) == 2
    assert "--in-memory reads image folders" in capsys.readouterr().err
    assert main(["train", "--data", str(cifar), "--in-memory", "--loader", "gpu", "--out", str(tmp_path / "o")]) == 2
    assert "choose one" in capsys.readouterr().err


def test_resolution_schedule_parsing() -> None:
    cfg = make_config({"resolution": 224, "train_resolution": "160,192@61, 224@101"})
    assert resolution_schedule(cfg) == [(1, 160), (61, 192), (101, 224)]
    assert [train_resolution_at(cfg, e) for e in (0, 59, 60, 99, 100, 119)] == [160, 160, 192, 192, 224, 224]
    assert resolution_schedule(make_config({"resolution": 96})) == [(1, 96)]
    for bad in ("160,224@1", "224@5", "16", "160,224@x", "160,192@50,224@40"):
        with pytest.raises(ValueError, match="`train_resolution`"):
            make_config({"train_resolution": bad})


@pytest.mark.parametrize("loader", ["pil", "gpu", "memory"])
def test_train_resolution_reaches_the_network_and_evaluation_stays_put(
    cifar: Path, tmp_path: Path, monkeypatch, loader: str
) -> None:
    """Epoch 1 trains at 32 px, epoch 2 at 48; validation runs at --resolution 40 throughout."""
    shapes: list[tuple[str, int]] = []
    build = optim.build_model

    def recording(*a, **kw):
        model = build(*a, **kw)
        model.register_forward_pre_hook(
            lambda m, inp: shapes.append(("train" if m.training else "eval", inp[0].shape[-1]))
        )
        return model

    monkeypatch.setattr(tasks, "build_model", recording)  # what the classification task builds with
    pick = ["--in-memory"] if loader == "memory" else ["--loader", loader]
    args = ["--data", str(cifar), *RESUME_ARGS, *SMALL, "--resolution", "40", "--train-resolution", "32,48@2"]
    assert main(["train", *args, *pick, "--out", str(tmp_path / "run")]) == 0
    per_epoch = 10  # 160 training images / batch 16
    assert [s for s in shapes if s[0] == "train"] == [("train", 32)] * per_epoch + [("train", 48)] * per_epoch
    assert {s for s in shapes if s[0] == "eval"} == {("eval", 40)}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_resolution"] == "32,48@2"


# --- logs for people who are not watching a terminal -----------------------------------------------------


def test_logs_without_a_terminal_are_plain_lines_and_csv(tmp_path, monkeypatch, capfd):
    """nohup/SLURM/CI: per-step progress still shows, as plain lines (no carriage returns); --logger csv."""
    from fdmobilenet.cli import main
    from helpers import FLOWERS_MINI

    monkeypatch.setenv("FDM_PROGRESS_EVERY", "0")
    out = tmp_path / "run"
    args = ["train", "--data", str(FLOWERS_MINI), "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "2"]
    args += ["--batch-size", "32", "--val-split", "0.2", "--threads", "1", "--workers", "0", "--logger", "csv"]
    args += ["--out", str(out)]
    assert main(args) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "epoch 1/2: 1/5 step (20%)" in err and "epoch 2/2: 5/5 step (100%)" in err
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 3
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        rc = main([*args[:-2], "--out", str(tmp_path / "tb"), "--logger", "tensorboard"])
        assert rc == 2 and "fdmobilenet[train]" in capfd.readouterr().err
