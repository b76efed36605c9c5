"""The loss side of training: MixUp/CutMix soft targets (seeded, the global RNGs untouched) and knowledge
distillation (Hinton's loss, teachers from files, names, timm and torchvision caches, class alignment), each
exact under SIGTERM and resume, and `compare --teacher`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fdmobilenet._errors import ParameterError, ParameterPathError
from fdmobilenet.cli import main
from fdmobilenet.models import create_model
from fdmobilenet.train import TrainResult, make_config
from fdmobilenet.train.distill import check_recorded, class_rows, distill_loss, load_teacher
from fdmobilenet.train.mixing import BatchMix
from fdmobilenet.weights import save_weights
from helpers import assert_same_weights, metrics, mini_subset, run_cli, train_until_sigterm

TINY = ["--model", "fd_mobilenet_025", "--resolution", "32", "--batch-size", "8", "--threads", "1", "--workers", "0"]
TINY += ["--val-split", "0.2", "--deterministic", "--lr-base-batch", "8"]


def test_kd_loss_equals_a_hand_computation() -> None:
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.0, 4.0]])
    y = torch.tensor([0, 2])
    ce = nn.CrossEntropyLoss()
    T, w = 2.0, 0.3
    kl = 0.0
    for i in range(2):  # KL(p_teacher || p_student) at temperature T, averaged over the batch
        p = [math.exp(v / T) for v in t[i].tolist()]
        q = [math.exp(v / T) for v in s[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        kl += sum(a * math.log(a / b) for a, b in zip(p, q)) / 2
    hard = ce(s, y).item()
    assert distill_loss(s, t, y, ce, T, w).item() == pytest.approx((1 - w) * hard + w * T * T * kl, rel=1e-6)
    assert distill_loss(s, t, y, ce, T, 0.0).item() == pytest.approx(hard)  # w = 0: plain cross-entropy
    assert distill_loss(s, t, y, ce, 1.0, 1.0).item() == pytest.approx(kl_at(s, t, 1.0), rel=1e-6)
    assert distill_loss(s, s, y, ce, 5.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)  # student == teacher
    soft = F.one_hot(y, 3).float() * 0.7 + 0.1  # probability targets (mixup) work as well
    assert distill_loss(s, t, soft, ce, T, 0.0).item() == pytest.approx(ce(s, soft).item())


def kl_at(s: torch.Tensor, t: torch.Tensor, T: float) -> float:
    p, logq = F.softmax(t / T, 1), F.log_softmax(s / T, 1)
    return float((p * (p.log() - logq)).sum(1).mean())


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_batch_mix_is_seeded_and_leaves_the_global_rng_alone(mixup: float, cutmix: float) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 5, (8,), generator=g)
    mix = BatchMix(mixup, cutmix, 5, seed=3)
    before = torch.get_rng_state()
    a = mix(x, y, step=7, micro=1)
    assert torch.equal(torch.get_rng_state(), before)  # what exact resume restores is untouched
    b = mix(x.clone(), y.clone(), step=7, micro=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same (seed, step, micro-batch): same mix
    assert a[1].shape == (8, 5) and torch.allclose(a[1].sum(1), torch.ones(8))
    assert not torch.equal(a[1], F.one_hot(y, 5).float())  # really mixed
    others = [mix(x, y, step=s, micro=m) for s, m in ((8, 1), (7, 0))]
    assert all(not torch.equal(a[1], o[1]) for o in others)  # another step or micro-batch: another draw
    assert not torch.equal(BatchMix(mixup, cutmix, 5, seed=4)(x, y, 7, 1)[1], a[1])


def test_config_checks_the_loss_fields() -> None:
    for field, bad in (("mixup", -0.1), ("cutmix", -1.0), ("kd_temperature", 0.0), ("kd_weight", 1.5)):
        with pytest.raises(ParameterError, match=field) as e:
            make_config({field: bad})
        assert e.value.param == field
    assert make_config({"mixup": 0.2, "cutmix": 1.0, "teacher": "x.safetensors", "kd_weight": 1.0}).kd_weight == 1.0


@pytest.fixture(scope="module")
def imagenet_teacher(tmp_path_factory) -> Path:
    """A random 1000-class fd_mobilenet_025 saved as this package's weights (no class names: ImageNet order)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("imagenet") / "imagenet.safetensors"
    meta = {"model": "fd_mobilenet_025", "num_classes": 1000, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    save_weights(create_model("fd_mobilenet_025").eval().state_dict(), path, meta)
    return path


def test_imagenet_teacher_selects_the_rows_of_the_runs_classes(imagenet_teacher: Path) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    teacher = load_teacher(str(imagenet_teacher), ["tench", "goldfish"], "cpu", mean, std)
    assert teacher.rows == [0, 1] and teacher.renormalise and not teacher.training
    assert load_teacher(str(imagenet_teacher), ["goldfish", "tench"], "cpu", mean, std).rows == [1, 0]
    x = torch.randn(2, 3, 32, 32)
    raw = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)  # the pixels in [0, 1]
    with torch.no_grad():
        want = teacher.net((raw - 0.5) / 0.25)[:, [0, 1]]  # its own normalisation, then its rows
    torch.testing.assert_close(teacher(x), want, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ParameterError, match="not every class of the run is an ImageNet class") as e:
        load_teacher(str(imagenet_teacher), ["tench", "daisy-ish"])
    assert e.value.param == "teacher"


def test_class_rows_and_the_teacher_forms_that_are_refused(tmp_path: Path, monkeypatch) -> None:
    assert class_rows("t", ["a", "b"], 2, ["a", "b"]) is None  # the run's classes: every logit
    with pytest.raises(ParameterError, match="its 2 classes \\(b, a\\)"):
        class_rows("t", ["b", "a"], 2, ["a", "b"])  # another order is another classifier
    with pytest.raises(ParameterError, match="unnamed"):
        class_rows("t", None, 2, ["a", "b"])
    for spec, match in (
        ("nope.safetensors", "no such file"),
        ("not_a_model", "not a file nor a registered model name"),
        ("timm:no_such_model_xyz", "timm has no pretrained model"),
        ("torchvision:no_such_net", "torchvision has no model"),
    ):
        with pytest.raises((ParameterError, ParameterPathError), match=match) as e:
            load_teacher(spec, ["a"])
        assert e.value.param == "teacher"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: nothing is downloaded
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    for spec in ("torchvision:resnet18", "fd_mobilenet_025"):
        with pytest.raises(ParameterError, match="not in the local cache.*never downloads") as e:
            load_teacher(spec, ["tench"])
        assert e.value.param == "teacher"
    monkeypatch.setenv("FDM_WEIGHTS", str(tmp_path))
    with pytest.raises(ParameterPathError, match=r"FDM_WEIGHTS\) does not exist"):
        load_teacher("fd_mobilenet_025", ["tench"])


def test_timm_teacher_only_from_the_local_cache(tmp_path: Path, monkeypatch) -> None:
    timm = pytest.importorskip("timm")
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "test_resnet.r160_in1k"
    with pytest.raises(ParameterError, match="not in the local cache") as e:
        load_teacher(f"timm:{name}", ["tench", "goldfish"])
    assert e.value.param == "teacher"
    # the Hugging Face cache layout hf_hub_download leaves: refs/main -> snapshots/<commit>/model.safetensors
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = timm.create_model(name, pretrained=False).eval()
    repo = tmp_path / "hub" / f"models--timm--{name}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(net.state_dict(), repo / "snapshots" / commit / "model.safetensors")
    teacher = load_teacher(f"timm:{name}", ["tench", "goldfish"])
    assert teacher.rows == [0, 1] and teacher.renormalise  # timm's test models use mean = std = 0.5
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(teacher(x)[:, 1], teacher(x)[:, 1])
    assert teacher.sha256 and teacher.path.name == "model.safetensors"
    for k, v in net.state_dict().items():
        torch.testing.assert_close(teacher.net.state_dict()[k], v, msg=k)


def test_torchvision_and_registered_teachers_from_local_files(imagenet_teacher: Path, tmp_path, monkeypatch) -> None:
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.DEFAULT.url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(2)
    net = resnet18().eval()
    torch.save(net.state_dict(), cached)  # where torchvision's download would have put it
    teacher = load_teacher("torchvision:resnet18", ["goldfish", "tench"])
    assert teacher.rows == [1, 0] and not teacher.renormalise  # ImageNet mean/std, as the run's default
    torch.testing.assert_close(teacher.net.fc.weight, net.fc.weight)
    torch.save({"model": nn.Linear(1, 1)}, cached)  # a pickled module: loading it would run code
    with pytest.raises(ParameterError, match="could not be loaded \\(UnpicklingError"):
        load_teacher("torchvision:resnet18", ["tench"])
    monkeypatch.setenv("FDM_WEIGHTS", str(tmp_path))  # registered names: $FDM_WEIGHTS/<name>.safetensors
    (tmp_path / "fd_mobilenet_025.safetensors").write_bytes(imagenet_teacher.read_bytes())
    assert load_teacher("fd_mobilenet_025", ["tench"]).rows == [0]


# --- through `train`: a tiny trained teacher distils a second run, exactly under SIGTERM and resume -----------


@pytest.fixture(scope="module")
def flowers(tmp_path_factory) -> tuple[Path, Path]:
    """40 in-repository photos (5 classes) and the best weights of a 1-epoch run on them (the teacher)."""
    tmp = tmp_path_factory.mktemp("distill")
    data = mini_subset(tmp / "flowers", per_class=8)
    assert main(["train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(tmp / "teacher")]) == 0
    return data, tmp / "teacher" / "best.safetensors"


@pytest.mark.parametrize("pipeline", [["--no-in-memory"], ["--in-memory"]], ids=["pil", "in-memory"])
def test_mixup_cutmix_and_teacher_resume_exactly(pipeline, flowers, tmp_path: Path, capsys) -> None:
    data, teacher = flowers
    args = ["--data", str(data), *TINY, *pipeline, "--epochs", "2", "--mixup", "0.2", "--cutmix", "1.0"]
    args += ["--teacher", str(teacher), "--kd-temperature", "2", "--kd-weight", "0.7"]
    straight = tmp_path / "straight"
    assert main(["train", *args, "--out", str(straight)]) == 0
    log = capsys.readouterr().out
    assert f"distilling from {teacher} (all its classes): T 2, weight 0.7" in log
    recorded = json.loads((straight / "teacher.json").read_text())
    assert recorded["spec"] == str(teacher) and len(recorded["sha256"]) == 64
    assert json.loads((straight / "config.json").read_text())["teacher"] == str(teacher)
    assert all(math.isfinite(r["train_loss"]) for r in metrics(straight))

    stopped = tmp_path / "stopped"
    state = train_until_sigterm(args, stopped, step=3)  # 4 steps an epoch: stops inside epoch 1
    assert 3 <= state["step"] < 8
    assert main(["train", "--data", str(data), "--out", str(stopped), "--resume"]) == 0  # config.json: the teacher
    assert_same_weights(stopped / "last.safetensors", straight / "last.safetensors")
    assert [r["train_loss"] for r in metrics(stopped)] == pytest.approx([r["train_loss"] for r in metrics(straight)])

    # without mixing and distillation the same run ends elsewhere: the loss really changed
    plain = tmp_path / "plain"
    assert main(["train", "--data", str(data), *TINY, *pipeline, "--epochs", "2", "--out", str(plain)]) == 0
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_weights(plain / "last.safetensors", straight / "last.safetensors")


def test_resume_refuses_a_teacher_whose_contents_changed(flowers, imagenet_teacher, tmp_path: Path, capsys) -> None:
    data, teacher = flowers
    copy = tmp_path / "teacher.safetensors"
    copy.write_bytes(teacher.read_bytes())
    out = tmp_path / "run"
    args = ["--data", str(data), *TINY, "--epochs", "1", "--teacher", str(copy), "--out", str(out)]
    assert main(["train", *args]) == 0
    other = tmp_path / "other"  # the same classes, other weights
    assert main(["train", "--data", str(data), *TINY, "--epochs", "1", "--seed", "5", "--out", str(other)]) == 0
    copy.write_bytes((other / "best.safetensors").read_bytes())
    capsys.readouterr()
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, "--resume", "--epochs", "2")
    assert code != 0 and "--teacher" in err and "sha256" in err and "keeps its teacher" in err


def test_a_teacher_of_other_classes_is_refused_naming_the_flag(flowers, imagenet_teacher, tmp_path, capsys) -> None:
    data, _ = flowers  # flower names are not ImageNet classes
    code, _, err = run_cli(capsys, "train", "--data", data, *TINY, "--epochs", "1", "--teacher", imagenet_teacher,
                           "--out", tmp_path / "r")  # fmt: skip
    assert code != 0 and "--teacher" in err and "cannot teach this run's 5 classes" in err
    assert "`teacher`" not in err


def test_check_recorded_by_itself(tmp_path: Path, imagenet_teacher: Path) -> None:
    check_recorded(tmp_path, None, resumed=False, write=True)
    check_recorded(tmp_path, None, resumed=True, write=True)  # no teacher before, none now
    teacher = load_teacher(str(imagenet_teacher), ["tench"])
    with pytest.raises(ParameterError, match="started without a `teacher`"):
        check_recorded(tmp_path, teacher, resumed=True, write=True)
    check_recorded(tmp_path, teacher, resumed=False, write=True)
    check_recorded(tmp_path, teacher, resumed=True, write=True)
    with pytest.raises(ParameterError, match="none is given now"):
        check_recorded(tmp_path, None, resumed=True, write=True)


def test_compare_distils_every_run_from_the_same_teacher(flowers, tmp_path: Path, monkeypatch) -> None:
    data, teacher = flowers
    seen = []

    def fake_train(cfg, resume=False, recipe="paper"):
        seen.append((cfg.model, cfg.width, cfg.teacher))
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text(
            json.dumps({"epoch": 1, "val_top1": 50.0, "val_top5": 90.0, "time_s": 1.0, "img_s": 9}) + "\n"
        )
        return TrainResult(0, 50.0, 0, out, cfg.epochs)

    monkeypatch.setattr("fdmobilenet.train.train", fake_train)
    args = ["compare", "--data", str(data), "--budgets", "0.6,1.5", "--families", "fd_mobilenet,mobilenet_v1"]
    args += ["--seeds", "1"]
    args += ["--resolution", "32", "--epochs", "1", "--recipe", "small", "--out", str(tmp_path / "cmp")]
    assert main([*args, "--teacher", str(teacher)]) == 0
    assert len(seen) == 4 and {t for *_, t in seen} == {str(teacher)}
