"""Helpers shared by the tests: where ``../shared`` is, small real datasets, running the CLI in this process
(``run_cli``) or ``train`` in a subprocess (plain or under torchrun), and comparing the weights two runs ended with."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdmobilenet.cli import main
from fdmobilenet.weights import read_weights

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
SHARED = Path(os.environ.get("FDM_SHARED", REPO.parent / "shared"))
# 60 real flower photos (5 classes, shorter side 96 px) shipped with the repository: see its README.md.
FLOWERS_MINI = REPO / "tests" / "data" / "flowers-mini"


def mini_photos(n: int | None = None) -> list[Path]:
    """The in-repository photos (sorted, spread over the classes): real JPEGs for tests that need no
    particular data set, so a clone without ``../shared`` runs them."""
    by_class = [sorted(d.glob("*.jpg")) for d in sorted(FLOWERS_MINI.iterdir()) if d.is_dir()]
    interleaved = [p for group in zip(*by_class) for p in group]
    return interleaved[:n]


def require(p: Path) -> Path:
    """A shared file or folder: missing is a failure in CI (CI=true) and a skip elsewhere."""
    if not p.exists():
        msg = (
            f"shared data {p} is missing (set FDM_SHARED to the shared folder; the authors' weights alone come "
            "from their pinned download: create_model(name, pretrained=True), see docs/model-card.md)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def shared_path(rel: str) -> Path:
    """``require`` for a path relative to the shared folder."""
    return require(SHARED / rel)


RESUME_ARGS = [
    "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "4", "--batch-size", "16",
    "--lr", "0.05", "--lr-base-batch", "16", "--val-split", "0.2", "--deterministic", "--seed", "3", "--threads", "1",
]  # fmt: skip


def cifar_subset(dst: Path, per_class: int, offset: int = 0) -> Path:
    """``dst/<class>/`` with symlinks to ``per_class`` CIFAR-10 training JPEGs per class."""
    src = shared_path("datasets/cifar10/train")
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / d.name).mkdir(parents=True)
        for f in sorted(os.listdir(d))[offset : offset + per_class]:
            (dst / d.name / f).symlink_to(d / f)
    return dst


def mini_subset(dst: Path, per_class: int, offset: int = 0, classes: int = 5) -> Path:
    """``dst/<class>/`` with symlinks to ``per_class`` in-repository flower photos (40 per class in all) of
    the first ``classes`` classes: ``cifar_subset`` for tests of mechanics (resume, processes, file formats)
    rather than of accuracy."""
    for d in sorted(p for p in FLOWERS_MINI.iterdir() if p.is_dir())[:classes]:
        (dst / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.jpg"))[offset : offset + per_class]:
            (dst / d.name / f.name).symlink_to(f)
    return dst


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``fdmobilenet ARGV`` in this process: (exit code, stdout, stderr). Arguments may be paths or numbers;
    an argparse error (SystemExit) gives its exit code like any other failure."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)  # as the interpreter would exit
    out = capsys.readouterr()
    return code, out.out, out.err


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fdmobilenet.cli", "train", *args]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def params(path: Path) -> dict[str, torch.Tensor]:
    """Trainable tensors of a weights file (BatchNorm running statistics left out)."""
    sd = read_weights(path)[0]
    return {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    sa, sb = read_weights(a)[0], read_weights(b)[0]
    assert sa.keys() == sb.keys()
    worst = max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)
    assert worst <= atol, f"weights differ by up to {worst:.3g}"


def train_until_sigterm(args: list[str], out: Path, step: int) -> dict:
    """Run ``train`` in this process, checkpointing every ``step`` steps; SIGTERM it once the checkpoint of
    global step ``step`` is on disk. Asserts the signal exit code; returns the state file written."""
    state = out / "last.state.pt"

    def terminate() -> None:
        while not (state.exists() and torch.load(state, weights_only=True)["step"] >= step):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=terminate, daemon=True)
    watcher.start()
    assert main(["train", *args, "--checkpoint-every", str(step), "--out", str(out)]) == 128 + signal.SIGTERM
    watcher.join()
    return torch.load(state, weights_only=True)


def torchrun_cmd(port: int, *args: str) -> list[str]:
    """``fdmobilenet ARGS`` under torchrun with two local processes (gloo on CPU)."""
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    return [*run, "-m", "fdmobilenet.cli", *args]


def bad_corpus(root: Path) -> tuple[Path, list[Path]]:
    """train/{red,blue}/ with readable images in odd modes plus broken files, an empty class folder, and val/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 27), ("val", 6)):
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(np.array(colour) + rng.normal(0, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.jpg")
    red = root / "train" / "red"
    Image.new("L", (40, 40), 90).save(red / "grey.png")
    Image.new("RGBA", (40, 40), (200, 0, 0, 128)).save(red / "rgba.png")
    Image.new("RGB", (40, 40), (200, 0, 0)).convert("P").save(red / "palette.gif")
    Image.new("CMYK", (40, 40), (0, 200, 200, 0)).save(red / "cmyk.jpg")
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(red / "sixteen.png")
    Image.new("LA", (40, 40), (90, 200)).save(red / "grey_alpha.png")
    (root / "train" / "empty_class").mkdir()
    (red / "notes.txt").write_text("not an image")
    bad = [red / "zero.jpg", red / "text.jpg", red / "truncated.jpg", red / "bomb.png"]
    bad[0].write_bytes(b"")
    bad[1].write_text("this is not a JPEG")
    good = (red / "0.jpg").read_bytes()
    bad[2].write_bytes(good[: len(good) // 2])
    Image.new("1", (9000, 8000)).save(bad[3])  # 72 Mpixel: over the decompression-bomb limit
    return root, bad


# hostile-input tests (test_hostile*.py): a tiny run and the CLI's one-line error style
TINY = [
    "--model", "fd_mobilenet_025", "--resolution", "32", "--batch-size", "8", "--lr", "0.05", "--lr-base-batch", "8",
    "--val-split", "0.2", "--deterministic", "--seed", "1", "--threads", "1", "--workers", "0",
]  # fmt: skip


def one_line_error(err: str, *names: str) -> None:
    """The CLI's error style: no traceback, one ``fdmobilenet CMD: error:`` line naming what is wrong."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for n in names:
        assert n in lines[0], (n, err)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    """``run_cli`` keeping what the hostile-input tests check: (exit code, stderr)."""
    code, _, err = run_cli(capsys, *argv)
    return code, err
