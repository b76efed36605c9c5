"""The per-class report: its numbers on a hand-computed case, its files and their escaping, one validation
pass for several models, and what ``train`` and ``eval`` write and print."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fdmobilenet import create_model
from fdmobilenet.classreport import (
    TOP_PAIRS,
    check_report_dir,
    class_report,
    read_predictions,
    render_table,
    write_predictions,
    write_report,
)
from fdmobilenet.data.folders import scan_folder
from fdmobilenet.data.images import ImageDataset, collate_skip_bad
from fdmobilenet.evaluate import evaluate_loader, evaluate_models
from fdmobilenet.preprocess import Preprocess
from helpers import FLOWERS_MINI, metrics, mini_subset, run_cli

# 4 classes, the last absent: confusion rows (true) [2,1,0,0], [0,1,1,0], [2,0,2,0], [0,0,0,0]
TARGETS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDS = [0, 0, 1, 1, 2, 2, 2, 0, 0]
NAMES = ["a", "b", "c", "d"]


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="")))


def test_numbers_of_a_hand_computed_case() -> None:
    r = class_report(TARGETS, PREDS, NAMES)
    assert r.confusion.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [2, 0, 2, 0], [0, 0, 0, 0]]
    # precision: diagonal / column sums 4, 2, 3; recall: diagonal / row sums 3, 2, 4
    assert np.allclose(r.precision, [2 / 4, 1 / 2, 2 / 3, 0])
    assert np.allclose(r.recall, [2 / 3, 1 / 2, 2 / 4, 0])
    assert np.allclose(r.f1, [4 / 7, 1 / 2, 4 / 7, 0])
    assert r.support.tolist() == [3, 2, 4, 0]
    assert r.top1 == 100.0 * 5 / 9 and r.n == 9
    assert r.macro_f1 == pytest.approx((4 / 7 + 1 / 2 + 4 / 7) / 3)  # the absent class "d" does not count
    # most images first, then by class index; share of the true class
    assert [(p.true, p.pred, p.count) for p in r.pairs] == [(2, 0, 2), (0, 1, 1), (1, 2, 1)]
    assert [p.share for p in r.pairs] == [2 / 4, 1 / 3, 1 / 2]
    table = render_table(r)
    body = [ln.split()[0] for ln in table.splitlines()[1:4]]
    assert body == ["b", "c", "a"]  # worst F1 first (a and c tie: more images first)
    assert "left out" in table and "c -> a: 2 (50.0%)" in table
    d = r.as_dict()
    assert [c["support"] for c in d["per_class"]] == [3, 2, 4, 0]
    assert d["confused_pairs"][0] == {
        "true": "c", "pred": "a", "true_index": 2, "pred_index": 0, "count": 2, "share": 0.5
    }  # fmt: skip
    with pytest.raises(ValueError, match="class_names"):
        class_report([0, 5], [0, 1], NAMES)


def test_report_files_and_escaped_names(tmp_path: Path) -> None:
    names = ["=cmd|' /C calc'!A0", "two\nlines\x1b[31m", "@sum", "-1+2"]
    r = class_report(TARGETS, PREDS, names)
    written = write_report(r, tmp_path / "rep")
    assert sorted(p.name for p in written) == sorted(
        ["per_class.csv", "confusion.csv", "confused_pairs.csv", "confusion.png"]
    )
    assert (tmp_path / "rep" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_class = _rows(tmp_path / "rep" / "per_class.csv")
    assert per_class[0] == ["index", "class", "precision", "recall", "f1", "support"]
    assert [row[1] for row in per_class[1:]] == ["'=cmd|' /C calc'!A0", "two lines[31m", "'@sum", "'-1+2"]
    assert [int(row[5]) for row in per_class[1:]] == [3, 2, 4, 0]
    confusion = _rows(tmp_path / "rep" / "confusion.csv")
    assert confusion[0][1:] == [row[1] for row in per_class[1:]]
    assert [[int(x) for x in row[1:]] for row in confusion[1:]] == r.confusion.tolist()
    pairs = _rows(tmp_path / "rep" / "confused_pairs.csv")
    assert pairs[0] == ["true_index", "true", "pred_index", "pred", "count", "share"]
    assert pairs[1] == ["2", "'@sum", "0", "'=cmd|' /C calc'!A0", "2", "0.500000"]
    table = render_table(r)
    assert "\x1b" not in table and "two lines[31m" in table
    assert all(not line.startswith("lines") for line in table.splitlines())
    text = json.dumps(r.as_dict())
    assert "\\u001b" not in text and "\\n" not in text


def test_over_100_classes_writes_the_pairs_but_no_matrix_image(tmp_path: Path) -> None:
    k = 120
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(k), 5)
    p = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, k, len(y)))
    (tmp_path / "confusion.png").write_bytes(b"an older report's image")
    r = class_report(y, p, [f"class{i}" for i in range(k)])
    written = write_report(r, tmp_path)
    assert not (tmp_path / "confusion.png").exists() and {q.name for q in written} == {
        "per_class.csv", "confusion.csv", "confused_pairs.csv"
    }  # fmt: skip
    pairs = _rows(tmp_path / "confused_pairs.csv")[1:]
    assert len(pairs) == TOP_PAIRS and [int(q[4]) for q in pairs] == sorted((int(q[4]) for q in pairs), reverse=True)
    table = render_table(r)
    assert len(table.splitlines()) == 1 + 15 + 1 + 1 + 1 + 5 and "more classes with a higher F1" in table


def test_report_folder_is_never_one_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="`report` .* is a file"):
        check_report_dir(tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="other files"):
        check_report_dir(tmp_path / "mine")
    write_report(class_report(TARGETS, PREDS, NAMES), tmp_path / "again")
    assert check_report_dir(tmp_path / "again") == tmp_path / "again"  # a report's own folder may be rewritten


def test_predictions_file_round_trip(tmp_path: Path) -> None:
    write_predictions(tmp_path / "p.csv", [0, 1, 2], [2, 1, 0], [2, 0, 0])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["index,target,pred", "0,2,2", "1,1,0", "2,0,0"]
    assert [a.tolist() for a in read_predictions(tmp_path / "p.csv")] == [[0, 1, 2], [2, 1, 0], [2, 0, 0]]


class _Counted:
    """A loader that counts how often it is iterated."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)


def test_one_pass_gives_the_numbers_of_separate_passes() -> None:
    folder = scan_folder(FLOWERS_MINI)
    ds = ImageDataset(folder.samples[::3], Preprocess(32).transform())
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate_skip_bad, shuffle=False)
    models = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        models[f"m{seed}"] = create_model("fd_mobilenet_025", num_classes=5)
    counted = _Counted(loader)
    together = evaluate_models(models, counted, folder, keep_preds=True)
    assert counted.passes == 1
    for name, model in models.items():
        alone = evaluate_loader(model, loader, folder, keep_preds=True)
        got = together[name]
        assert (got.top1, got.top5, got.n, got.correct1, got.correct5) == (
            alone.top1, alone.top5, alone.n, alone.correct1, alone.correct5
        )  # fmt: skip
        assert got.index.tolist() == list(range(len(ds))) and np.array_equal(got.preds, alone.preds)
        assert np.array_equal(got.targets, alone.targets)
        assert got.top1 == pytest.approx(100.0 * (got.preds == got.targets).mean(), abs=1e-9)  # 100 c / n
    assert evaluate_loader(models["m0"], loader).index is None  # predictions are kept only when asked


def test_tied_logits_go_to_the_lower_class_index_as_in_argmax():
    """Quantized logits tie exactly; topk's order among ties is unspecified (it moved INT8 top-1 by a photo)."""
    logits = (torch.randn(64, 1000, generator=torch.Generator().manual_seed(0)) * 10).round()
    tied = (logits == logits.max(1, keepdim=True).values).sum(1) > 1
    assert tied.sum() == 6  # 6 rows tie at the top; topk put another of the tied classes first on 3 of them

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[x[:, 0, 0, 0].long()]

    x = torch.arange(64.0).view(64, 1, 1, 1).expand(64, 3, 2, 2)
    loader = [(x, logits.argmax(1), list(range(64)), [])]
    r = evaluate_models({"m": Fixed()}, loader, keep_preds=True)["m"]
    assert r.preds.tolist() == logits.argmax(1).tolist() and r.top1 == 100.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two epochs with an EMA on 5 x 16 in-repository photos, read by the same pipeline as eval."""
    from fdmobilenet.cli import main

    tmp = tmp_path_factory.mktemp("report")
    data = mini_subset(tmp / "flowers", per_class=16)
    out = tmp / "run"
    args = ["--data", data, "--model", "fd_mobilenet_025", "--resolution", 32, "--epochs", 2, "--batch-size", 8]
    args += ["--lr-base-batch", 8, "--val-split", 0.25, "--ema-decay", 0.9, "--no-in-memory", "--loader", "pil"]
    assert main(["train", *map(str, args), "--threads", "1", "--workers", "0", "--out", str(out)]) == 0
    return data, out


def test_train_writes_predictions_and_report(tiny_run, capsys) -> None:
    data, out = tiny_run
    rows = metrics(out)
    assert all("val_top1_ema" in r and "val_top1_raw" in r for r in rows)
    assert (out / "val_predictions.csv").read_text().splitlines()[0] == "index,target,pred"
    index, targets, preds = read_predictions(out / "val_predictions.csv")
    assert index.tolist() == list(range(20))
    best = max(r["val_top1"] for r in rows)
    assert round(100.0 * (targets == preds).mean(), 4) == best
    for name in ("per_class.csv", "confusion.csv", "confused_pairs.csv", "confusion.png"):
        assert (out / "report" / name).is_file()
    assert _rows(out / "report" / "per_class.csv")[0] == ["index", "class", "precision", "recall", "f1", "support"]
    assert sum(int(r[5]) for r in _rows(out / "report" / "per_class.csv")[1:]) == 20
    # eval of best.safetensors on the run's split: the same top-1, image by image
    code, stdout, _ = run_cli(capsys, "eval", "--weights", out / "best.safetensors", "--split", out, "--json")
    assert code == 0
    got = json.loads(stdout)
    assert got["top1"] == round(100.0 * (targets == preds).mean(), 4) and got["n"] == 20
    assert [c["support"] for c in got["per_class"]] == np.bincount(targets, minlength=5).tolist()
    assert all({"true", "pred", "count", "share"} <= set(p) for p in got["confused_pairs"])
    code, stdout, _ = run_cli(capsys, "eval", "--weights", out / "best.safetensors", "--split", out)
    assert code == 0 and "precision" in stdout and "macro F1" in stdout


def test_eval_report_folder(tiny_run, tmp_path: Path, capsys) -> None:
    _, out = tiny_run
    base = ["eval", "--weights", out / "best.safetensors", "--split", out, "--device", "cpu"]
    code, _, err = run_cli(capsys, *base, "--report", tmp_path / "rep")
    assert code == 0 and "per-class report in" in err
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {
        "per_class.csv", "confusion.csv", "confused_pairs.csv", "confusion.png"
    }  # fmt: skip
    assert _rows(tmp_path / "rep" / "per_class.csv")[1:] == _rows(out / "report" / "per_class.csv")[1:]
    (tmp_path / "taken.txt").write_text("not ours")
    code, _, err = run_cli(capsys, *base, "--report", tmp_path / "taken.txt")
    assert code == 2 and "--report" in err and "is a file" in err
    code, _, err = run_cli(capsys, *base, "--report", tmp_path)
    assert code == 2 and "--report" in err and "other files" in err
    assert (tmp_path / "taken.txt").read_text() == "not ours"


def _no_sklearn(monkeypatch) -> None:
    import fdmobilenet.classreport as cr
    from fdmobilenet._utils import require

    def refuse(module: str, purpose: str, hint: str = ""):
        return require("sklearn_is_not_installed_here", purpose, hint)

    monkeypatch.setattr(cr, "require", refuse)


def test_without_scikit_learn_train_and_eval_still_work(tiny_run, tmp_path: Path, monkeypatch, capsys) -> None:
    from fdmobilenet.train.outputs import write_run_report

    _, out = tiny_run
    _no_sklearn(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    (run / "val_predictions.csv").write_bytes((out / "val_predictions.csv").read_bytes())
    lines: list[str] = []
    write_run_report(run, ["a", "b", "c", "d", "e"], lines.append)
    assert len(lines) == 1 and "fdmobilenet[train]" in lines[0] and not (run / "report").exists()
    base = ["eval", "--weights", out / "best.safetensors", "--split", out, "--device", "cpu"]
    code, stdout, err = run_cli(capsys, *base)
    assert code == 0 and "top-1" in stdout and "precision" not in stdout and "fdmobilenet[train]" in err
    code, _, err = run_cli(capsys, *base, "--report", tmp_path / "rep")
    assert code == 2 and "fdmobilenet[train]" in err and not (tmp_path / "rep").exists()


def test_engine_validates_ema_and_raw_weights_in_one_pass(tmp_path: Path, monkeypatch) -> None:
    from fdmobilenet.cli import main
    from fdmobilenet.train import tasks

    calls: list[tuple[list[str], int]] = []

    def counting(models, loader, *args, **kwargs):
        counted = _Counted(loader)
        got = evaluate_models(models, counted, *args, **kwargs)
        calls.append((list(models), counted.passes))
        return got

    monkeypatch.setattr(tasks, "evaluate_models", counting)
    data = mini_subset(tmp_path / "flowers", per_class=8)
    args = ["--data", data, "--model", "fd_mobilenet_025", "--resolution", 32, "--epochs", 2, "--batch-size", 8]
    args += ["--val-split", 0.25, "--ema-decay", 0.9, "--threads", 1, "--workers", 0, "--out", tmp_path / "run"]
    assert main(["train", *map(str, args)]) == 0
    assert calls == [(["ema", "raw"], 1), (["ema", "raw"], 1)]
    rows = metrics(tmp_path / "run")
    assert [r["val_top1"] for r in rows] == [max(r["val_top1_ema"], r["val_top1_raw"]) for r in rows]


def _odd_photos(root: Path, n: int = 6) -> Path:
    """Photos of 3 classes at sizes around and below the 36 px evaluation resize of 32 px (and one panorama):
    where a cache resized for training and eval's own PIL resize part ways."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(30, 40), (50, 37), (36, 36), (64, 48), (33, 90), (120, 31)]
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_in_memory_validation_feeds_the_network_evals_exact_tensors(tmp_path: Path) -> None:
    from fdmobilenet.data.augment import BatchAugment
    from fdmobilenet.data.images import load_image
    from fdmobilenet.data.memcache import load_or_build

    folder = scan_folder(_odd_photos(tmp_path / "photos"))
    pre = Preprocess(32)
    mem = load_or_build(folder, 32, tmp_path / "cache", progress=False, crop=pre)
    assert tuple(mem.images.shape[1:]) == (3, 32, 32)
    index = torch.arange(len(mem.labels))
    batch = BatchAugment(32, crop_pct=1.0)(mem.images, train=False, sizes=mem.sizes, index=index)
    want = torch.stack([pre.transform()(load_image(p)) for p, _ in folder.samples])
    assert torch.allclose(batch, want, atol=1e-5)
    # another crop at the same side is another cache, never the stale one
    wider = load_or_build(folder, 32, tmp_path / "cache", progress=False, crop=Preprocess(32, crop_pct=1.0))
    assert wider.rebuilt and not torch.equal(wider.images, mem.images)


def test_in_memory_runs_log_the_val_top1_that_eval_split_gives(tmp_path: Path, capsys) -> None:
    from fdmobilenet.cli import main

    data, out = _odd_photos(tmp_path / "photos", n=12), tmp_path / "run"
    args = ["--data", data, "--model", "fd_mobilenet_025", "--resolution", 32, "--epochs", 1, "--batch-size", 8]
    args += ["--lr-base-batch", 8, "--val-split", 0.25, "--in-memory", "--threads", 1, "--out", out]
    assert main(["train", *map(str, args)]) == 0
    capsys.readouterr()
    _, targets, preds = read_predictions(out / "val_predictions.csv")
    code, stdout, _ = run_cli(capsys, "eval", "--weights", out / "best.safetensors", "--split", out, "--json")
    assert code == 0
    got = json.loads(stdout)
    assert got["n"] == len(targets) == 9 and got["top1"] == round(100.0 * (targets == preds).mean(), 4)
    assert got["top1"] == max(r["val_top1"] for r in metrics(out))
