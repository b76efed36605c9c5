"""A training folder with the wrong layout is refused in one line that names the folder and the fix,
instead of training a 1-class model to a perfect, meaningless score."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import FLOWERS_MINI, mini_subset, run_cli


def test_one_level_above_the_class_folders(tmp_path: Path, capsys) -> None:
    mini_subset(tmp_path / "photos" / "flowers", 2)
    (tmp_path / "photos" / "README.md").write_text("not an image")
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "photos", "--out", tmp_path / "o")
    assert code == 2  # its one "class" would be flowers, whose sub-folders are the real classes
    assert "single class folder (flowers)" in err and f"point --data at {tmp_path / 'photos' / 'flowers'}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_single_class_without_sub_folders(tmp_path: Path, capsys) -> None:
    shutil.copytree(FLOWERS_MINI / "daisy", tmp_path / "d" / "daisy")
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "d", "--out", tmp_path / "o")
    assert code == 2 and "needs two or more: add class folders" in err


def test_images_at_the_top_level(tmp_path: Path, capsys) -> None:
    data = mini_subset(tmp_path / "d", 2)
    shutil.copy(next((FLOWERS_MINI / "daisy").glob("*.jpg")), data / "stray.jpg")
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "o")
    assert code == 2 and "1 image(s) at its top level (e.g. stray.jpg)" in err and f"{data}/<class>/<images>" in err


def test_resume_says_what_it_changes(tmp_path: Path, capsys) -> None:
    data = mini_subset(tmp_path / "d", 4, classes=2)
    args = ["train", "--data", data, "--model", "fd_mobilenet_025", "--resolution", "32", "--batch-size", "4"]
    args += ["--threads", "1", "--workers", "0", "--out", tmp_path / "o"]
    assert run_cli(capsys, *args, "--epochs", "1")[0] == 0
    code, out, _ = run_cli(capsys, *args, "--epochs", "2", "--resume")
    assert code == 0 and "resume: --epochs changes from 1 to 2 (asked for)" in out
    code, out, _ = run_cli(capsys, *args, "--epochs", "2", "--resume")
    assert code == 0 and "resume:" not in out  # the same plan: nothing to say
