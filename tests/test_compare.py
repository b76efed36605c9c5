import json

import pytest

from fdmobilenet.cli import main
from fdmobilenet.train import compare as cmp
from helpers import mini_subset, shared_path


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """3 classes x 30 real photos (in the repository), class folders only (compare carves the val split)."""
    return mini_subset(tmp_path_factory.mktemp("tiny") / "flowers", per_class=30, classes=3)


def test_compare_end_to_end_and_resume(tiny_cifar, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_cifar), "--budgets", "0.6,1.5", "--families", "fd_mobilenet,mobilenet_v1"]
    args += ["--resolution", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0", "--out", str(out)]
    args += ["--in-memory", "--seeds", "1"]
    assert main(args) == 0
    for name in ("results.csv", "results.json", "results.md", "accuracy_vs_mflops.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["family"], r["budget_mflops"]) for r in rows} == {
        (f, b) for f in ("fd_mobilenet", "mobilenet_v1") for b in (0.6, 1.5)
    }
    for r in rows:  # each model really met its budget at 32 px, and was trained and evaluated
        assert abs(r["mmacs"] - r["budget_mflops"]) / r["budget_mflops"] < 0.03
        assert 0 <= r["top1_mean"] <= 100 and r["seeds"] == 1 and r["train_seconds"] > 0
    md = (out / "results.md").read_text()
    assert "| fd_mobilenet |" in md and "1.5 MFLOPs" in md
    assert (out / "accuracy_vs_mflops.png").read_bytes()[:4] == b"\x89PNG"

    # a re-run trains nothing: every run is kept
    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("fdmobilenet.train.train", no_training)
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done before, kept") == 4
    assert json.loads((out / "results.json").read_text())["rows"] == rows


def test_compare_bad_family(tmp_path):
    with pytest.raises(ValueError, match="unknown family 'resnet'"):
        cmp.plan([12], ["resnet"], 224, 1)


def test_in_memory_training_learns_and_reuses_its_cache(tmp_path, capsys):
    src = shared_path("datasets/cifar10/train")
    data = tmp_path / "data"
    for cls in ("airplane", "automobile", "frog"):
        (data / cls).mkdir(parents=True)
        for p in sorted((src / cls).glob("*.jpg"))[:150]:
            (data / cls / p.name).write_bytes(p.read_bytes())
    args = ["train", "--data", str(data), "--model", "fd_mobilenet_025", "--resolution", "32", "--in-memory"]
    args += ["--epochs", "10", "--batch-size", "32", "--lr", "0.1", "--lr-base-batch", "32", "--schedule", "cosine"]
    args += ["--workers", "0", "--threads", "1"]
    args += ["--crop-scale", "0.5", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    log = capsys.readouterr()
    assert "in memory: 405 train + 45 val images at 32 px" in log.out and "built" in log.out
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    # it learns from the cached tensors: loss falls, val accuracy well above the 33 % of chance
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.1
    assert max(r["val_top1"] for r in rows) >= 50
    # a second run on the same data reuses the cache beside the output and is seeded identically
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "reused" in capsys.readouterr().out
    rows_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows_b] == pytest.approx([r["train_loss"] for r in rows], rel=1e-3)


def test_pretrained_rows_where_official_widths_match(official_weights, tmp_path):
    jobs = cmp.plan(
        [12, 40, 140], ["fd_mobilenet", "mobilenet_v1"], 224, 1, pretrained_from=official_weights["025"].parent
    )
    ft = [j for j in jobs if j.pretrained]
    # the 12 and 40 MFLOPs FD-MobileNets are the authors' 0.25x and 0.5x; 140 M has no released weights
    assert [
        (j.budget, j.width, j.pretrained.endswith(f"fd_mobilenet_0{int(j.width * 100)}.safetensors")) for j in ft
    ] == [
        (12, 0.25, True),
        (40, 0.5, True),
    ]
    assert len(jobs) == 6 + 2 and all("-ft-" in j.name for j in ft)
    with pytest.raises(ValueError, match="not found; convert the authors' weights"):
        cmp.plan([40], ["fd_mobilenet"], 224, 1, pretrained_from=tmp_path)


def test_loader_and_resolution_schedule_reach_every_run(tiny_cifar, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_cifar), "--budgets", "1.0", "--families", "fd_mobilenet"]
    args += ["--resolution", "40", "--epochs", "2", "--batch-size", "16", "--workers", "0", "--out", str(out)]
    args += ["--seeds", "1"]
    assert main([*args, "--loader", "gpu", "--train-resolution", "32,40@2"]) == 0
    configs = [json.loads(p.read_text()) for p in out.rglob("config.json")]
    assert len(configs) == 1
    assert (configs[0]["loader"], configs[0]["train_resolution"], configs[0]["resolution"]) == ("gpu", "32,40@2", 40)
    assert json.loads((out / "results.json").read_text())["rows"][0]["top1_mean"] >= 0


def test_budgets_beyond_any_published_width_are_refused() -> None:
    from fdmobilenet._errors import ParameterError
    from fdmobilenet.train.compare import plan

    with pytest.raises(ParameterError, match="width .* beyond any published width"):
        plan([140.0], ["fd_mobilenet"], 64, 1)  # 140 MFLOPs at 64 px: width ~3.5
    assert plan([12.0], ["fd_mobilenet"], 64, 1)[0].width < 2  # within reach: planned
