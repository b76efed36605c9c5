"""``compare``'s statistics: mean ± sd over seeds, paired-bootstrap verdicts, the default seed count and the
split the report names, on fabricated runs (no training)."""

import json

import numpy as np
import pytest

from fdmobilenet._errors import ParameterError
from fdmobilenet.cli import main
from fdmobilenet.train import compare as cmp
from fdmobilenet.train import compare_classification
from fdmobilenet.train import verdicts as vd


def _correct(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` photos of which a random ``share`` are right."""
    c = np.zeros(n, dtype=bool)
    c[rng.permutation(n)[: round(share * n)]] = True
    return c


def test_identical_families_are_within_noise():
    rng = np.random.default_rng(0)
    a = [_correct(500, 0.6, rng) for _ in range(3)]
    diff, lo, hi = vd.paired_bootstrap(a, [x.copy() for x in a])
    assert diff == 0 and lo <= 0 <= hi
    assert vd.verdict_word("fd_mobilenet", "mobilenet_v1", lo, hi) == "within noise"


def test_a_clear_difference_is_ahead_with_the_right_sign():
    rng = np.random.default_rng(1)
    good, bad = [_correct(500, 0.8, rng)], [_correct(500, 0.4, rng)]
    diff, lo, hi = vd.paired_bootstrap(good, bad)
    assert diff == pytest.approx(40) and 30 < lo < diff < hi < 50
    assert vd.verdict_word("fd_mobilenet", "mobilenet_v1", lo, hi) == "fd_mobilenet ahead"
    diff, lo, hi = vd.paired_bootstrap(bad, good)
    assert diff == pytest.approx(-40) and hi < 0
    assert vd.verdict_word("fd_mobilenet", "mobilenet_v1", lo, hi) == "mobilenet_v1 ahead"
    # reproducible: the generator is seeded
    assert vd.paired_bootstrap(bad, good) == (diff, lo, hi)


def test_seeds_widen_the_interval():
    """Seeds that disagree (A ahead at one seed, behind at another) leave the verdict open."""
    rng = np.random.default_rng(2)
    a = [_correct(400, 0.7, rng), _correct(400, 0.5, rng), _correct(400, 0.72, rng), _correct(400, 0.48, rng)]
    b = [_correct(400, 0.5, rng), _correct(400, 0.7, rng), _correct(400, 0.52, rng), _correct(400, 0.69, rng)]
    _, lo, hi = vd.paired_bootstrap(a, b)
    assert lo < 0 < hi


def test_mean_and_sample_sd():
    assert vd.mean_sd([70.0, 72.0, 74.0]) == (72.0, 2.0)  # n - 1: the population sd would be 1.63
    assert vd.mean_sd([61.5]) == (61.5, None)
    assert vd.format_mean_sd(72.0, 2.0, 3) == "72.00 ± 2.00"
    assert vd.format_mean_sd(61.5, None, 1) == "61.50, 1 seed"


def _fake_runs(monkeypatch, share: dict[str, float], n_val=200, n_train=2000, predictions=True, split=True):
    """Replace training by runs that write what a finished run leaves: done row, split.json, predictions."""
    calls = []

    def run_one(job, base, recipe, out, groups, log):
        calls.append(job.name)
        run = out / "runs" / job.name
        run.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(job.seed)  # the split (and its targets) depend on the seed only
        target = rng.integers(0, 5, n_val)
        right = _correct(n_val, share[job.family] + 0.01 * job.seed, np.random.default_rng([job.seed, len(job.family)]))
        pred = np.where(right, target, (target + 1) % 5)
        if predictions:
            lines = ["index,target,pred", *(f"{i},{t},{p}" for i, (t, p) in enumerate(zip(target, pred)))]
            (run / "val_predictions.csv").write_text("\n".join(lines) + "\n")
        if split:
            val = [f"c/{i}.jpg" for i in range(n_val)]
            rec = {"root": base["data"], "val_split": 0.1, "seed": job.seed, "val": val}
            (run / "split.json").write_text(json.dumps(rec))
        return {
            "family": job.family, "budget_mflops": job.budget, "width": job.width, "macs": job.macs,
            "params": job.params, "seed": job.seed, "top1": 100 * float(right.mean()), "top5": None, "epochs": 1,
            "train_seconds": 1.0, "img_per_s": 10.0,
        }  # fmt: skip

    monkeypatch.setattr(cmp, "run_job", run_one)
    monkeypatch.setattr(compare_classification, "count_images", lambda data, val_split: (n_train, n_val))
    return calls


def _compare(tmp_path, seeds=None, families=("fd_mobilenet", "mobilenet_v1"), log=None):
    lines = [] if log is None else log
    return cmp.compare(
        str(tmp_path / "photos"), [0.6], list(families), tmp_path / "cmp", resolution=32, epochs=1, seeds=seeds,
        log=lines.append,
    )  # fmt: skip


def test_small_data_defaults_to_three_seeds_and_gets_a_verdict(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch, {"fd_mobilenet": 0.8, "mobilenet_v1": 0.4})
    log: list[str] = []
    summary = _compare(tmp_path, log=log)
    assert len(calls) == 6 and {r["seeds"] for r in summary} == {3}
    assert any("3 seeds" in line and "2,000 training images < 25,600" in line for line in log), log
    row = next(r for r in summary if r["family"] == "fd_mobilenet")
    assert row["sd"] is not None and row["sd"] == 1.0 and row["mean"] == pytest.approx(81)
    report = json.loads((tmp_path / "cmp" / "results.json").read_text())
    (v,) = report["verdicts"]
    assert {k: v[k] for k in ("budget", "a", "b", "verdict", "photos", "seeds")} == {
        "budget": 0.6, "a": "fd_mobilenet", "b": "mobilenet_v1", "verdict": "fd_mobilenet ahead", "photos": 200,
        "seeds": 3,
    }  # fmt: skip
    assert v["lo"] < v["diff"] < v["hi"] and v["lo"] > 0 and v["diff"] == pytest.approx(40)
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "## Verdicts" in md and "fd_mobilenet ahead" in md and "± 0.00" not in md
    # the split: one per seed here (compare's runs split with their own seed), and its size
    assert f"Split: {tmp_path / 'photos'}, 10% held out, one split per seed (split seeds 0, 1, 2)" in md
    assert "200 validation photos" in md and report["split"]["photos"] == 200
    header = (tmp_path / "cmp" / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:11] == [
        "family", "budget_mflops", "width", "mmacs", "params", "seeds", "top1_mean", "top1_std", "top5_mean",
        "train_seconds", "img_per_s",
    ] and header[11:] == ["mean", "sd"]  # fmt: skip


def test_large_data_defaults_to_one_seed_and_says_so(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch, {"fd_mobilenet": 0.6, "mobilenet_v1": 0.6}, n_train=30000)
    log: list[str] = []
    summary = _compare(tmp_path, log=log)
    assert len(calls) == 2 and {r["seeds"] for r in summary} == {1}
    assert any("1 seed " in line and "30,000 training images >= 25,600" in line for line in log), log
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "± 0.00" not in md and "60.00, 1 seed" in md and "within noise" in md
    assert "photo sampling only, not seed-to-seed variation" in md
    assert "Split: " in md and "split seed 0, 200 validation photos" in md
    assert json.loads((tmp_path / "cmp" / "results.json").read_text())["rows"][0]["sd"] is None


def test_explicit_seeds_win_without_counting(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch, {"fd_mobilenet": 0.6, "mobilenet_v1": 0.5})

    def no_count(*a):
        raise AssertionError("counted the images though seeds and recipe were given")

    monkeypatch.setattr(cmp, "count_images", no_count)
    cmp.compare(str(tmp_path / "photos"), [0.6], ["fd_mobilenet"], tmp_path / "cmp", 32, 1, seeds=2, recipe="small",
                log=print)  # fmt: skip
    assert len(calls) == 2


def test_missing_predictions_fall_back_to_the_means(tmp_path, monkeypatch):
    _fake_runs(monkeypatch, {"fd_mobilenet": 0.7, "mobilenet_v1": 0.5}, predictions=False, split=False)
    _compare(tmp_path, seeds=2)
    report = json.loads((tmp_path / "cmp" / "results.json").read_text())
    (v,) = report["verdicts"]
    assert v["verdict"] == "no verdict: per-photo predictions missing" and v["lo"] is None
    assert v["diff"] == pytest.approx(20)  # the difference of the means, without an interval
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "no verdict: per-photo predictions missing" in md
    # no split.json: a DIR/train + DIR/val layout, named as such, with its counted validation photos
    assert f"Split: {tmp_path / 'photos' / 'train'} and {tmp_path / 'photos' / 'val'}, 200 validation photos" in md


def test_pairs_at_each_budget_put_fd_mobilenet_first():
    runs = {(f, b): {} for f in ("mobilenet_v1", "shufflenet_v1", "fd_mobilenet") for b in (12.0, 40.0)}
    pairs = [(v["budget"], v["a"], v["b"]) for v in vd.verdicts(runs)]
    assert pairs[:3] == [(12.0, "fd_mobilenet", "mobilenet_v1"), (12.0, "fd_mobilenet", "shufflenet_v1"),
                         (12.0, "mobilenet_v1", "shufflenet_v1")]  # fmt: skip
    assert len(pairs) == 6


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--seeds", "-1"], "--seeds"), (["--seeds", "0"], "--seeds"), (["--budgets", "nan"], "--budgets"),
     (["--budgets", "-5"], "--budgets"), (["--budgets", "inf"], "--budgets")],
)  # fmt: skip
def test_bad_seeds_and_budgets_are_one_line(tmp_path, capsys, args, flag):
    assert main(["compare", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and err.startswith("fdmobilenet compare: error:"), err
    assert not (tmp_path / "o").exists()


def test_python_seeds_and_budgets_name_the_parameter():
    with pytest.raises(ParameterError, match="`seeds` must be a whole number >= 1") as e:
        cmp.plan([12], ["fd_mobilenet"], 224, 0)
    assert e.value.param == "seeds"
    with pytest.raises(ParameterError, match="`budgets` must be finite") as e:
        cmp.plan([float("nan")], ["fd_mobilenet"], 224, 1)
    assert e.value.param == "budgets"
    with pytest.raises(ParameterError, match="`seeds`"):
        cmp.compare("nowhere", [12], ["fd_mobilenet"], "out", seeds=-1)


def test_predictions_file_is_read_in_index_order(tmp_path):
    p = tmp_path / "val_predictions.csv"
    p.write_text("index,target,pred\n1,2,2\n0,1,0\n")
    got = vd.read_predictions(p)
    assert got.target.tolist() == [1, 2] and got.correct.tolist() == [False, True]
    p.write_text("index,target,pred\n0,1,1\n2,1,1\n")  # a gap: not a whole validation set
    assert vd.read_predictions(p) is None
    assert vd.read_predictions(tmp_path / "absent.csv") is None


def test_a_kept_run_with_other_settings_is_refused(tmp_path) -> None:
    from fdmobilenet.train.runner import same_settings

    run = tmp_path / "runs" / "fd_mobilenet-12M-s0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"teacher": None, "epochs": 10, "in_memory": True}))
    same_settings(run, {"epochs": 10, "in_memory": None})  # same plan (None: decided by the run)
    with pytest.raises(ParameterError, match="`teacher` None, not 'big.safetensors'") as e:
        same_settings(run, {"teacher": "big.safetensors"})
    assert e.value.param == "out"
