"""One folder walk (issue 19): ``predict DIR``, ``quantize``/calibration (``image_paths``) and the training
scanner see the same files, with one rule for hidden names, symlinks, extensions and order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fdmobilenet.data.folders import non_image_files, scan_folder
from fdmobilenet.data.images import find_images
from fdmobilenet.deploy.samples import image_paths
from fdmobilenet.models import create_model
from fdmobilenet.preprocess import Preprocess
from fdmobilenet.weights import save_weights
from helpers import run_cli

EXPECTED = ["UPPER.PNG", "a.jpg", "link.jpg", "linked/d.jpg", "sub/b.png", "sub/deep/c.jpeg"]


def _tree(tmp_path: Path) -> Path:
    """Every case the rule decides: hidden file/dir, symlinked file/dir, a loop, a dangling link, a non-image."""
    root, outside = tmp_path / "photos", tmp_path / "outside"
    for rel in ["a.jpg", "UPPER.PNG", ".hidden.jpg", "._a.jpg", ".cache/x.jpg", "sub/b.png", "sub/deep/c.jpeg",
                "sub/.thumbs/t.jpg"]:  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (200, 30, 30)).save(
            root / rel, format="PNG" if rel.lower().endswith("png") else "JPEG"
        )
    (root / "notes.txt").write_text("not an image")
    (outside / "dir").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(outside / "dir" / "d.jpg")
    Image.new("RGB", (40, 40)).save(outside / "e.jpg")
    (root / "linked").symlink_to(outside / "dir", target_is_directory=True)
    (root / "link.jpg").symlink_to(outside / "e.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a loop: entered once
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path)


def test_the_rule(tree: Path) -> None:
    assert [p.relative_to(tree).as_posix() for p in find_images(tree)] == EXPECTED


def test_predict_and_quantize_see_the_same_files(tree: Path, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.safetensors"
    meta = {"model": "fd_mobilenet_025", "num_classes": 2, "class_names": ["x", "y"], **Preprocess(32).to_meta()}
    save_weights(create_model("fd_mobilenet_025", num_classes=2).state_dict(), weights, meta)
    code, out, err = run_cli(capsys, "predict", "--weights", weights, "--device", "cpu", "--json", tree)
    assert code == 0, err
    predicted = [Path(r["path"]) for r in json.loads(out)]
    assert predicted == image_paths(tree)
    assert [p.relative_to(tree).as_posix() for p in predicted] == EXPECTED


def test_training_scan_uses_the_same_walk(tree: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cls").symlink_to(tree, target_is_directory=True)  # a linked class folder, as split datasets have
    (data / ".hidden_class").mkdir()
    folder = scan_folder(data)
    assert folder.classes == ["cls"]
    assert [p.relative_to(data / "cls").as_posix() for p, _ in folder.samples] == EXPECTED
    assert non_image_files(data) == [str(data / "cls" / "notes.txt")]
