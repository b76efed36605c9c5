"""Hostile input and faults (issue 14): every bad input or full/read-only disk is a one-line error with
exit code 2 (bad input) or 1 (the disk), never a traceback, a hang or a memory blow-up, and nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdmobilenet.cli import main
from fdmobilenet.deploy.samples import image_paths
from fdmobilenet.models import create_model
from fdmobilenet.preprocess import Preprocess
from fdmobilenet.weights import save_weights
from helpers import (
    SRC,
    TINY,
    assert_same_weights,
    cifar_subset,
    env,
    metrics,
    one_line_error,
    run,
    shared_path,
    train_cmd,
)


@pytest.fixture(scope="module")
def official_025_src() -> Path:
    return shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")


def png_header(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims ``w`` x ``h`` 1-bit pixels, with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4)))
    return path


# --- 1. resize bounds and metadata ------------------------------------------------------------------


def test_extreme_aspect_ratio_resize_is_bounded() -> None:
    """A 20000x1 image would become 5.12M x 256 pixels under a plain shorter-side resize."""
    from fdmobilenet.preprocess import bounded_size

    w, h = bounded_size(20000, 1, 256)
    assert w * h <= 256 * 256 * 16
    assert bounded_size(640, 480, 256) == (341, 256)  # ordinary photos: exactly torchvision's Resize
    x = Preprocess(224).transform()(Image.new("RGB", (20000, 1), (10, 200, 30)))
    assert x.shape == (3, 224, 224)


@pytest.mark.parametrize(
    "meta", [{"resolution": 100000}, {"resolution": "x"}, {"crop_pct": 0}, {"std": [0, 1, 1]}, {"mean": [1]}]
)
def test_absurd_preprocessing_metadata_is_refused(meta: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(meta))):
        Preprocess.from_meta(meta)


def test_crafted_onnx_resolution_is_refused(tmp_path: Path, capsys) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    p = model.metadata_props.add()
    p.key, p.value = "resolution", "100000"
    path = tmp_path / "crafted.onnx"
    onnx.save(model, str(path))
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    rc, err = run(capsys, "predict", "--onnx", str(path), str(img))
    assert rc == 2
    one_line_error(err, str(path), "resolution")


# --- 2. symlink loops -------------------------------------------------------------------------------


def _photos_with_links(root: Path, links: int) -> Path:
    root.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8)).save(root / f"{i}.png")
    for i in range(links):
        (root / f"up{i}").symlink_to(root, target_is_directory=True)
    return root


def test_symlink_to_parent_counts_each_photo_once(tmp_path: Path) -> None:
    assert len(image_paths(_photos_with_links(tmp_path / "photos", 1))) == 8


def test_two_symlinks_to_parent_do_not_hang(tmp_path: Path) -> None:
    root = _photos_with_links(tmp_path / "photos", 2)
    code = f"from fdmobilenet.deploy.samples import image_paths; print(len(image_paths({str(root)!r})))"
    r = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "8", r.stderr


# --- 3. fp16 -----------------------------------------------------------------------------------------


def test_amp_fp16_trains(tiny, tmp_path: Path, capsys) -> None:
    """GradScaler's first steps overflow on purpose (it then lowers the scale): that is not divergence."""
    data, _ = tiny
    rc, err = run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--amp", "fp16", "--out",
                  str(tmp_path / "fp16"))  # fmt: skip
    assert rc == 0, err


# --- 4. SIGTERM to the process group with loader workers ----------------------------------------------


def test_sigterm_to_process_group_with_workers_resumes_exactly(tmp_path: Path) -> None:
    """What Slurm, docker stop and Kubernetes do: every process of the group gets SIGTERM at once."""
    data = cifar_subset(tmp_path / "data", per_class=5)  # 40 train images: 5 steps an epoch
    args = [*TINY[:-2], "--epochs", "2", "--data", str(data)]
    straight = tmp_path / "straight"
    assert main(["train", *args, "--workers", "0", "--out", str(straight)]) == 0
    out = tmp_path / "termed"
    cmd = train_cmd(*args, "--workers", "2", "--checkpoint-every", "2", "--out", str(out))
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    state = out / "last.state.pt"
    while proc.poll() is None:
        if state.exists() and torch.load(state, weights_only=True)["step"] >= 2:
            os.killpg(proc.pid, signal.SIGTERM)
            break
        time.sleep(0.005)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "caught SIGTERM" in log and "Traceback" not in log, log
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "last.safetensors", straight / "last.safetensors", atol=0)
    assert [r["epoch"] for r in metrics(out)] == [1, 2]


# --- 5. one run per folder --------------------------------------------------------------------------


def test_second_training_into_a_busy_out_is_refused(tiny, tmp_path: Path, capsys) -> None:
    data, _ = tiny
    out = tmp_path / "busy"
    out.mkdir()
    hold = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    hold += "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"
    other = subprocess.Popen([sys.executable, "-c", hold, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:  # as a run in progress holds it
        assert other.stdout.readline().strip() == "held"
        rc, err = run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(out))
    finally:
        other.kill()
        other.wait()
    assert rc == 2
    one_line_error(err, str(out), "another")
    assert not (out / "metrics.jsonl").exists()


# --- 6. bench --workdir -----------------------------------------------------------------------------


def test_bench_workdir_never_overwrites_onnx_files(tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    mine = tmp_path / "fd_mobilenet_025_32.onnx"
    mine.write_bytes(b"the user's model")
    rc, err = run(capsys, "bench", "--models", "fd_mobilenet_025@32", "--backends", "ort", "--runs", "1",
                  "--warmup", "0", "--workdir", str(tmp_path))  # fmt: skip
    assert rc == 2
    one_line_error(err, str(mine))
    assert mine.read_bytes() == b"the user's model"


# --- 7. damaged state files -------------------------------------------------------------------------


class _Code:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind", ["empty", "truncated", "code"])
def test_resume_from_a_damaged_state_file_says_what_to_do(tiny, tmp_path: Path, capsys, kind: str) -> None:
    data, done = tiny
    out = tmp_path / "run"
    out.mkdir()
    good = (done / "last.state.pt").read_bytes()
    bad = {"empty": b"", "truncated": good[: len(good) // 2], "code": pickle.dumps({"step": _Code()})}[kind]
    (out / "last.state.pt").write_bytes(bad)
    rc, err = run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(out), "--resume")
    assert rc == 2
    one_line_error(err, str(out / "last.state.pt"), "--out")
    assert "weights_only" not in err


# --- 8. decompression bombs in memory ---------------------------------------------------------------


def test_in_memory_skips_a_decompression_bomb_header(tiny, tmp_path: Path, capsys) -> None:
    data = cifar_subset(tmp_path / "data", per_class=4)
    bomb = png_header(data / "cat" / "bomb.png", 30000, 30000)
    rc, err = run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--in-memory",
                  "--out", str(tmp_path / "run"))  # fmt: skip
    assert rc == 0, err
    assert str(bomb) in err


# --- 9. full and read-only disks --------------------------------------------------------------------


def _disk_full(monkeypatch, code: int = errno.ENOSPC) -> None:
    def refuse(*a, dir=None, **k):
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_full_disk_is_one_line_and_keeps_files(official_025_src, tmp_path: Path, monkeypatch, capsys) -> None:
    dst = tmp_path / "w.safetensors"
    dst.write_bytes(b"previous")
    _disk_full(monkeypatch)
    rc, err = run(capsys, "convert", str(official_025_src), str(dst), "--overwrite")  # a file not ours: replaced
    assert rc == 1
    one_line_error(err, "No space left", str(tmp_path))
    assert dst.read_bytes() == b"previous"


def test_full_disk_during_training_is_one_line(tiny, tmp_path: Path, monkeypatch, capsys) -> None:
    data, _ = tiny
    _disk_full(monkeypatch)
    rc, err = run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(tmp_path / "r"))
    assert rc == 1
    one_line_error(err, "No space left")


def test_rerun_after_a_failed_first_checkpoint_starts_clean_metrics(tiny, tmp_path: Path, capsys) -> None:
    data, _ = tiny
    out = tmp_path / "r"
    out.mkdir()
    (out / ".fdmobilenet-run").write_text("")  # a run of ours ...
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "stale": True}) + "\n")  # ... with no checkpoint
    assert run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(out))[0] == 0
    assert [r["epoch"] for r in metrics(out)] == [1] and "stale" not in metrics(out)[0]


def test_resuming_a_finished_run_on_a_read_only_mount(tiny, monkeypatch, capsys) -> None:
    data, done = tiny
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()}
    _disk_full(monkeypatch, errno.EROFS)
    rc, err = run(capsys, "train", "--data", str(data), "--out", str(done), "--resume")
    assert rc == 0, err
    assert {p.name: p.read_bytes() for p in done.iterdir() if p.is_file() and p.name in before} == before


# --- 10. compare after a stopped run ----------------------------------------------------------------


@pytest.mark.parametrize(("code", "says"), [(143, "re-run"), (3, "--lr")])
def test_compare_reports_a_stopped_run(tmp_path: Path, monkeypatch, capsys, code: int, says: str) -> None:
    from fdmobilenet.train import TrainResult, compare

    monkeypatch.setattr(compare.training, "train", lambda cfg, resume, recipe: TrainResult(code, out=Path(cfg.out)))
    (tmp_path / "d").mkdir()
    rc, err = run(capsys, "compare", "--data", str(tmp_path / "d"), "--budgets", "12", "--families", "fd_mobilenet",
                  "--recipe", "small", "--epochs", "1", "--seeds", "1", "--out", str(tmp_path / "c"))  # fmt: skip
    assert rc == code
    one_line_error(err, says)
    if code == 3:
        assert "re-run" not in err.split("error:")[1]


# --- 11. orphan temp files, torn metrics ------------------------------------------------------------


def test_resume_cleans_orphan_temp_files_and_a_torn_metrics_line(tiny, tmp_path: Path, capsys) -> None:
    import shutil

    data, done = tiny
    out = tmp_path / "run"
    shutil.copytree(done, out)
    orphans = [out / ".fdm-tmp.last.state.pt.k2j3h4.tmp", out / ".fdm-tmp.metrics.jsonl.abc123.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    theirs = out / ".report.docx.tmp"  # another program's temporary file: never ours to delete
    theirs.write_bytes(b"theirs")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "tr')  # SIGKILL mid-append
    rc, err = run(capsys, "train", "--data", str(data), "--out", str(out), "--resume", "--epochs", "2")
    assert rc == 0, err
    assert str(out / "metrics.jsonl") in err
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    assert not any(p.exists() for p in orphans)
    assert theirs.read_bytes() == b"theirs"


# --- 12. recipe files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "epochs: [1, 2\n",
        "epochs: !!python/object/apply:os.system ['echo pwned']\n",
        'epochs: "abc"\n',
        "recipe: SELF\n",
        "crop-scale: 0.5\n",
        "lr: .nan\n",
        "hflip: 3\n",
        "model: [1]\n",
        "- 1\n",
    ],
)
def test_bad_recipe_files_are_one_line_errors(tmp_path: Path, capsys, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("SELF", str(path)))
    rc, err = run(capsys, "train", "--recipe", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert rc == 2
    one_line_error(err, str(path))
    assert "pwned" not in err


# --- 13. flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--label-smoothing", "5"],
        ["--device", "foo"],
        ["--threads", "100000"],
        ["--lr", "nan"],
        ["--lr", "inf"],
        ["--momentum", "-1"],
        ["--val-split", "1"],
        ["--dropout", "1.5"],
    ],
)
def test_bad_train_flags_are_one_line_errors(tiny, tmp_path: Path, capsys, flags: list[str]) -> None:
    data, _ = tiny
    rc, err = run(capsys, "train", "--data", str(data), *TINY, *flags, "--out", str(tmp_path / "o"))
    assert rc == 2
    one_line_error(err, flags[0])
    assert not (tmp_path / "o").exists()


def _limited(*argv: str, gib: float = 6) -> subprocess.CompletedProcess:
    """The CLI under an address-space limit: what cannot fit must be refused, not attempted."""
    import resource

    limit = int(gib * 2**30)
    return subprocess.run(
        [sys.executable, "-m", "fdmobilenet.cli", *argv],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )


@pytest.mark.parametrize("flags", [["--resolution", "100000"], ["--model", "fd_mobilenet", "--width", "1000"]])
def test_what_cannot_fit_in_memory_is_refused_with_the_estimate(tiny, tmp_path: Path, flags: list[str]) -> None:
    data, _ = tiny
    r = _limited("train", "--data", str(data), *TINY, *flags, "--epochs", "1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr[-2000:]
    one_line_error(r.stderr, flags[-2], "GiB")


def test_bad_predict_and_bench_flags(tmp_path: Path, capsys) -> None:
    rc, err = run(capsys, "predict", "--weights", "w.safetensors", "--topk", "-3", "a.jpg")
    assert rc == 2 and "--topk" in err
    rc, err = run(capsys, "bench", "--backends", ",")
    assert rc == 2
    one_line_error(err, "--backends")
    rc, err = run(capsys, "eval", "--onnx", "m.onnx", "--threads", "100000", "--data", str(tmp_path))
    assert rc == 2 and "--threads" in err


# --- 14. paths of the wrong kind --------------------------------------------------------------------


def test_files_where_folders_belong_and_back(official_025_src, tiny, tmp_path: Path, capsys) -> None:
    data, _ = tiny
    rc, err = run(capsys, "convert", str(official_025_src), str(tmp_path))
    assert rc == 2
    one_line_error(err, str(tmp_path))
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    rc, err = run(capsys, "train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(afile))
    assert rc == 2
    one_line_error(err, str(afile), "--out")
    rc, err = run(capsys, "prepare", str(data), str(afile))
    assert rc == 2
    one_line_error(err, str(afile))
    rc, err = run(capsys, "prepare", str(afile), str(tmp_path / "p"))
    assert rc == 2
    one_line_error(err, str(afile))
    assert afile.read_text() == "x"


# --- 15. tampered but loadable files ----------------------------------------------------------------


def _weights(tmp_path: Path, name: str, change) -> Path:
    model = create_model("fd_mobilenet_025", num_classes=3)
    sd = {k: change(v) for k, v in model.state_dict().items()}
    path = tmp_path / name
    save_weights(sd, path, {"model": "fd_mobilenet_025", "num_classes": 3, "class_names": ["a", "b", "c"]})
    return path


@pytest.mark.parametrize(
    ("name", "change", "says"),
    [
        ("nan.safetensors", lambda v: torch.full_like(v, float("nan")) if v.is_floating_point() else v, "NaN"),
        ("int8.safetensors", lambda v: v.to(torch.int8) if v.is_floating_point() else v, "int8"),
    ],
)
def test_tampered_weights_are_refused(tmp_path: Path, capsys, name, change, says: str) -> None:
    path = _weights(tmp_path, name, change)
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    rc, err = run(capsys, "predict", "--weights", str(path), str(img))
    assert rc == 2
    one_line_error(err, str(path), says)


def test_prepared_dataset_with_an_out_of_range_label(tiny, tmp_path: Path, capsys) -> None:
    data, _ = tiny
    packed = tmp_path / "packed"
    assert main(["prepare", str(data), str(packed), "--short-side", "32", "--workers", "1"]) == 0
    idx = packed / "shard-00000.idx.npy"
    rows = np.load(idx)
    rows[0, 2] = 99
    np.save(idx, rows)
    capsys.readouterr()
    rc, err = run(capsys, "train", "--data", str(packed), *TINY, "--epochs", "1", "--out", str(tmp_path / "o"))
    assert rc == 2
    one_line_error(err, str(idx), "99")


# --- the CLI's error handling -----------------------------------------------------------------------


def test_debug_flag_and_env_show_the_traceback(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text('epochs: "abc"\n')
    with pytest.raises(ValueError):
        main(["--debug", "train", "--recipe", str(bad)])
    monkeypatch.setenv("FDM_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["train", "--recipe", str(bad)])


def test_broken_pipe_exits_quietly() -> None:
    """``fdmobilenet models | head``: the reader is gone before the output is written."""
    r, w = os.pipe()
    os.close(r)
    proc = subprocess.run([sys.executable, "-m", "fdmobilenet.cli", "models", "fd_*"], env=env(), stdout=w,
                          stderr=subprocess.PIPE, text=True, timeout=120, cwd=SRC)  # fmt: skip
    os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
