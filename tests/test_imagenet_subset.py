"""Synset folders that hold a few ImageNet classes (Imagenette): a run trains a head of those classes,
fine-tuning starts it from their rows of a 1000-way classifier, and eval/predict map the folders back."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fdmobilenet.cli import main
from fdmobilenet.data.splits import load_folders
from fdmobilenet.models import create_model
from fdmobilenet.preprocess import imagenet_classes, imagenet_label_names, imagenet_rows
from fdmobilenet.train.config import make_config
from fdmobilenet.train.optim import build_model
from fdmobilenet.weights import read_weights, save_weights
from helpers import mini_subset

SYNSETS = ["n01440764", "n02102040", "n03888257"]  # tench, English springer, parachute: ImageNet rows 0, 217, 701


def synset_folders(dst: Path, per_class: int = 8) -> Path:
    """The in-repository flower photos under three synset names (the pictures do not matter here)."""
    mini_subset(dst, per_class, classes=3)
    for flower, synset in zip(sorted(p.name for p in dst.iterdir()), SYNSETS):
        (dst / flower).rename(dst / synset)
    return dst


def test_label_names_are_unique_and_keep_readable_names() -> None:
    names = imagenet_label_names()
    assert len(set(names)) == 1000
    assert names[0] == "tench" and sum("crane (" in n for n in names) == 2
    assert imagenet_rows(["tench", "English springer", "parachute"]) == [0, 217, 701]
    assert imagenet_rows(["tench", "my own class"]) is None


def test_synset_subset_has_its_own_classes(tmp_path: Path) -> None:
    split = load_folders(synset_folders(tmp_path / "d"), 0.25, 0)
    assert split.train.classes == ["tench", "English springer", "parachute"]
    assert {y for _, y in split.train.samples} == {0, 1, 2} == {y for _, y in split.val.samples}
    # the full ImageNet layout keeps its 1000 classes (a model for all of them)
    synsets, readable = imagenet_classes()
    assert len(readable) == 1000 and split.train.classes != readable


def test_finetune_head_starts_from_the_matching_rows(tmp_path: Path) -> None:
    src = create_model("fd_mobilenet_025")  # a 1000-way classifier
    save_weights(src.state_dict(), tmp_path / "w.safetensors", {"model": "fd_mobilenet_025", "num_classes": 1000})
    cfg = make_config({"model": "fd_mobilenet_025", "pretrained": str(tmp_path / "w.safetensors")})
    said: list[str] = []
    model = build_model(cfg, ["tench", "English springer", "parachute"], said.append)
    rows = [0, 217, 701]
    assert torch.equal(model.classifier.weight, src.classifier.weight[rows])
    assert torch.equal(model.classifier.bias, src.classifier.bias[rows])
    assert "rows" in said[-1]
    other = build_model(cfg, ["daisy", "tulips"], said.append)  # not ImageNet names: a new head
    assert other.classifier.weight.shape[0] == 2 and "re-initialised" in said[-1]


def test_train_then_eval_on_synset_folders(tmp_path: Path, capsys) -> None:
    data, out = synset_folders(tmp_path / "d"), tmp_path / "run"
    args = ["--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "1"]
    assert main(["train", *args, "--batch-size", "8", "--threads", "1", "--workers", "0", "--out", str(out)]) == 0
    sd, meta = read_weights(out / "best.safetensors")
    assert sd["classifier.weight"].shape[0] == 3 and meta["num_classes"] == 3
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.safetensors"), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 24  # every photo labelled among the model's 3 classes


def test_in_memory_is_the_default_when_the_photos_fit(tmp_path: Path, capsys) -> None:
    data = synset_folders(tmp_path / "d")
    base = ["train", "--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--epochs", "1"]
    base += ["--batch-size", "8", "--threads", "1", "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "in-memory input pipeline on (default)" in out and "memory input pipeline;" in out
    assert json.loads((tmp_path / "a" / "config.json").read_text())["in_memory"] is True  # resume keeps it
    assert main([*base, "--no-in-memory", "--out", str(tmp_path / "b")]) == 0
    assert "pil input pipeline" in capsys.readouterr().out
