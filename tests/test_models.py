import pytest
import torch

import fdmobilenet as fdm
from fdmobilenet import create_model, list_models
from fdmobilenet.models.mobilenet import FD_MOBILENET_TABLE, MOBILENET_V1_TABLE, DepthwiseSeparableNet


def _spatial_sizes(model, res):
    """Output side length after the stem and after each block/stage."""
    sizes = []
    hooks = [model.stem.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))]
    body = model.blocks if hasattr(model, "blocks") else model.stages
    hooks += [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for b in body]
    model.eval()(torch.zeros(1, 3, res, res))
    for h in hooks:
        h.remove()
    return sizes


def test_fd_and_mobilenet_are_one_class_fed_two_tables():
    fd, mb = create_model("fd_mobilenet_100"), create_model("mobilenet_v1_100")
    assert type(fd) is type(mb) is DepthwiseSeparableNet
    assert [c for c, _ in FD_MOBILENET_TABLE] == [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 1024]
    assert [s for _, s in FD_MOBILENET_TABLE] == [2, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1]
    assert [s for _, s in MOBILENET_V1_TABLE] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert len(fd.blocks) == 11 and len(mb.blocks) == 13


@pytest.mark.parametrize("res", [224, 160])
def test_fd_mobilenet_reaches_32x_within_12_layers(res):
    sizes = _spatial_sizes(create_model("fd_mobilenet_050"), res)
    # stem, then 11 blocks: /2, /4, /8, /8, /16, /16, /32 from block 5 on
    r = res
    assert sizes == [r // 2, r // 4, r // 8, r // 8, r // 16, r // 16] + [r // 32] * 6


@pytest.mark.parametrize("res", [224, 160])
def test_mobilenet_v1_downsamples_late(res):
    sizes = _spatial_sizes(create_model("mobilenet_v1_050"), res)
    r = res
    assert sizes == [r // 2, r // 2, r // 4, r // 4, r // 8, r // 8] + [r // 16] * 6 + [r // 32] * 2


@pytest.mark.parametrize("res", [224, 160])
def test_shufflenet_stage_shapes(res):
    m = create_model("shufflenet_v1_g3_100")
    sizes = _spatial_sizes(m, res)
    assert sizes == [res // 4, res // 8, res // 16, res // 32]
    assert m.cfg.channels()[1] == [240, 480, 960]


def test_width_multiplier_truncates_like_the_authors():
    m = create_model("fd_mobilenet", width=0.3)
    assert m.stem.conv.out_channels == int(32 * 0.3)
    assert [b.pw.conv.out_channels for b in m.blocks] == [int(c * 0.3) for c, _ in FD_MOBILENET_TABLE]


def test_any_resolution_and_classes():
    m = create_model("fd_mobilenet_025", num_classes=7).eval()
    for res in (32, 96, 250):
        assert m(torch.randn(2, 3, res, res)).shape == (2, 7)


def test_registry_names():
    names = list_models()
    for n in ("fd_mobilenet_025", "fd_mobilenet_100", "mobilenet_v1_075", "shufflenet_v1_g8_200", "fd_mobilenet"):
        assert n in names
    assert list_models("fd_*") == [
        "fd_mobilenet_025",
        "fd_mobilenet_050",
        "fd_mobilenet_075",
        "fd_mobilenet_100",
        "fd_mobilenet",
    ]
    # every registered model builds and runs
    x = torch.randn(1, 3, 64, 64)
    for n in names:
        assert create_model(n, num_classes=3).eval()(x).shape == (1, 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: create_model("fd_mobilenet", width=0), "width must be > 0"),
        (lambda: create_model("fd_mobilenet", width=-1), "width must be > 0"),
        (lambda: create_model("fd_mobilenet_05"), "Did you mean 'fd_mobilenet_050'"),
        (lambda: create_model("fd_mobilenet_050", resolution=16), "resolution must be an integer >= 32"),
        (lambda: create_model("fd_mobilenet_050", width=0.3), "fixes width"),
        (lambda: create_model("shufflenet_v1", groups=5), "groups must be one of"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_too_small_input_is_a_clear_error():
    m = create_model("fd_mobilenet_025").eval()
    with pytest.raises(ValueError, match="at least 32"):
        m(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="RGB"):
        m(torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize(
    "name, chans",
    [
        ("fd_mobilenet_100", [64, 128, 256, 1024]),
        ("mobilenet_v1_100", [128, 256, 512, 1024]),
        ("shufflenet_v1_g3_100", [24, 240, 480, 960]),
    ],
)
def test_features_only_gives_strides_4_to_32(name, chans):
    m = create_model(name, features_only=True).eval()
    feats = m(torch.randn(1, 3, 224, 224))
    assert [f.shape[1] for f in feats] == chans == [i["num_chs"] for i in m.feature_info]
    assert [f.shape[-1] for f in feats] == [56, 28, 14, 7]
    assert [i["reduction"] for i in m.feature_info] == [4, 8, 16, 32]
    assert not hasattr(m, "classifier")
    sub = create_model(name, features_only=True, out_indices=(2, 3)).eval()
    assert [f.shape[-1] for f in sub(torch.randn(1, 3, 224, 224))] == [14, 7]


def test_pyramid_matches_classifier_trunk():
    torch.manual_seed(0)
    m = create_model("fd_mobilenet_050").eval()
    x = torch.randn(1, 3, 96, 96)
    assert torch.equal(m.forward_pyramid(x)[-1], m.forward_features(x))


def test_reset_classifier_keeps_backbone():
    m = create_model("fd_mobilenet_025")
    w = m.blocks[3].pw.conv.weight.clone()
    m.reset_classifier(5)
    assert m.classifier.out_features == 5 and m.num_classes == 5
    assert torch.equal(w, m.blocks[3].pw.conv.weight)


def test_timm_registration():
    timm = pytest.importorskip("timm")
    import fdmobilenet.timm_support  # noqa: F401

    m = timm.create_model("fd_mobilenet_050", num_classes=10)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert "shufflenet_v1_g3_100" in timm.list_models("shufflenet_v1*")
    f = timm.create_model("fd_mobilenet_025", features_only=True)
    assert [t.shape[1] for t in f(torch.randn(1, 3, 64, 64))] == [16, 32, 64, 256]


def test_torch_hub_entry_points():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    m = torch.hub.load(str(repo), "fd_mobilenet_025", source="local", num_classes=4)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 4)


# --- the alternatives people weigh (torchvision's networks at any width) -----------------------------


@pytest.mark.parametrize("family", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "shufflenet_v2"])
def test_torchvision_families_build_at_any_width_and_meet_a_budget(family):
    w = fdm.solve_width(family, 60)
    model = fdm.create_model(family, width=w, num_classes=7).eval()
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 7)
    macs = fdm.profile(model, 224).macs / 1e6
    assert abs(macs - 60) / 60 < 0.1  # channel rounding makes MACs a step function of the width
    assert fdm.profile(fdm.create_model(family, width=2 * w), 224).macs / 1e6 > 1.5 * macs
    with pytest.raises(ValueError, match="features_only"):
        fdm.create_model(family, features_only=True)


def test_budget_below_a_family_floor_says_so():
    with pytest.raises(ValueError, match="outside what mobilenet_v2 reaches"):  # its 1280-channel head alone
        fdm.solve_width("mobilenet_v2", 12)


# --- timm's conventions --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fd_mobilenet_025", "shufflenet_v1_g3_025", "mobilenet_v2", "shufflenet_v2"])
def test_num_classes_zero_gives_pooled_features(name):
    m = create_model(name, num_classes=0).eval()
    out = m(torch.randn(2, 3, 64, 64))
    assert out.dim() == 2 and out.shape[0] == 2 and out.shape[1] > 0


def test_reset_classifier_zero_and_forward_head():
    m = create_model("fd_mobilenet_025").eval()
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    assert feats.shape == (2, 256, 2, 2)
    pooled = m.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, 256) and torch.equal(m.forward_head(feats), m(x))
    m.reset_classifier(0)
    assert torch.equal(m(x), pooled) and m.num_classes == 0
    with pytest.raises(ValueError, match="global_pool"):
        m.reset_classifier(3, global_pool="max")


def test_pretrained_with_other_num_classes_reinitialises_the_head(tmp_path):
    from fdmobilenet.weights import save_weights

    src = create_model("fd_mobilenet_025")
    save_weights(src.state_dict(), tmp_path / "w.safetensors", {"num_classes": 1000, "class_names": ["x"] * 1000})
    m = create_model("fd_mobilenet_025", num_classes=7, pretrained=tmp_path / "w.safetensors")
    assert m.classifier.out_features == 7 and "class_names" not in m.pretrained_cfg
    assert abs(float(m.classifier.weight.detach().std()) - 0.01) < 0.002  # a new head starts near zero
    assert float(m.classifier.bias.detach().abs().max()) == 0
    assert torch.equal(m.blocks[5].pw.conv.weight, src.blocks[5].pw.conv.weight)
    f = create_model("fd_mobilenet_025", num_classes=0, pretrained=tmp_path / "w.safetensors")
    assert torch.equal(f.stem.conv.weight, src.stem.conv.weight)


def test_unknown_kwargs_are_refused():
    with pytest.raises(ValueError, match="does not take drop_path_rate"):
        create_model("fd_mobilenet_025", drop_path_rate=0.1)


def test_timm_conventions():
    timm = pytest.importorskip("timm")
    from timm.data import resolve_data_config

    import fdmobilenet.timm_support  # noqa: F401

    m = timm.create_model("fd_mobilenet_050", num_classes=0, drop_rate=0.1)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 512) and m.dropout.p == 0.1
    cfg = resolve_data_config({}, model=m)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear"
    for kw in ({"drop_path_rate": 0.1}, {"global_pool": "max"}, {"in_chans": 1}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            timm.create_model("fd_mobilenet_025", **kw)
    assert timm.create_model("fd_mobilenet_025", drop_path_rate=0.0, global_pool="avg").num_classes == 1000


def test_complexity_table_matches_profile():
    """`fdmobilenet models` prints a generated table; it must equal profile() for every fixed-width name.
    On a mismatch: `python -m fdmobilenet.models._factory` regenerates it."""
    from fdmobilenet.models._complexity_table import COMPLEXITY_AT_224
    from fdmobilenet.models._factory import complexity_at_224

    fixed = [n for n in list_models() if n not in fdm.models.FAMILIES]
    assert sorted(COMPLEXITY_AT_224) == sorted(fixed)
    assert complexity_at_224() == COMPLEXITY_AT_224


def test_registry_is_data_and_refuses_duplicates():
    from fdmobilenet.models import _builder, _registry
    from fdmobilenet.models.shufflenet import SHUFFLENET_STAGE_CHANNELS

    assert tuple(SHUFFLENET_STAGE_CHANNELS) == _registry.SHUFFLENET_GROUPS
    assert set(_builder._FAMILY_BUILDERS) == set(_registry.FAMILIES)
    with pytest.raises(ValueError, match="already registered"):
        _registry.register_model("fd_mobilenet_050", "fd_mobilenet", width=0.5)
    with pytest.raises(ValueError, match="unknown family"):
        _registry.register_model("resnet_050", "resnet")


def test_one_release_table():
    from fdmobilenet.models import RELEASED_WIDTHS, RELEASES, hub

    assert hub.RELEASES is RELEASES
    assert RELEASED_WIDTHS == {"fd_mobilenet_025": 0.25, "fd_mobilenet_050": 0.5}  # the verified ones
    assert not RELEASES["fd_mobilenet_100"].verified  # listed (git blob id known), never fetched here
    for name, r in RELEASES.items():
        assert fdm.models.model_family(name) == "fd_mobilenet" and f"{r.width:g}x-" in r.file


def test_models_command_imports_no_torch():
    """`fdmobilenet models` reads names and the generated table only: it answers in a fraction of a second."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys; from fdmobilenet.cli import main; main(['models']); assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(Path(fdm.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fd_mobilenet_050" in proc.stdout and "40.13" in proc.stdout


@pytest.mark.parametrize("name", ["fd_mobilenet_025", "mobilenet_v1_025", "shufflenet_v1_g3_050"])
def test_default_init_is_pytorchs_and_the_authors_is_a_choice(name):
    """Every conv and the classifier start as PyTorch's layers do (std = 1/sqrt(3 fan_in)), not with the authors'
    Kaiming-normal (fan-out; std sqrt(2/fan_out)) that trains 7-9 points lower in 10 epochs; ``authors`` keeps
    theirs for long ImageNet runs, and BN starts as the identity either way."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.numel() >= 512]
    fc = model.get_classifier()

    def rel_err(w: torch.Tensor, std: float) -> float:
        return abs(float(w.detach().std()) - std) / std

    def fan_in(m: torch.nn.Conv2d) -> int:
        return m.weight[0].numel()

    assert all(rel_err(m.weight, (3 * fan_in(m)) ** -0.5) < 0.2 for m in convs)
    assert rel_err(fc.weight, (3 * fc.in_features) ** -0.5) < 0.2
    model.reset_parameters("authors")
    for m in convs:
        fan = fan_in(m) if m.groups > 1 and m.groups == m.in_channels else m.out_channels * m.kernel_size[0] ** 2
        assert rel_err(m.weight, (2 / fan) ** 0.5) < 0.2
    assert rel_err(fc.weight, 0.01) < 0.2 and float(fc.bias.detach().abs().max()) == 0
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((b.weight == 1).all() and (b.bias == 0).all()) for b in bns)
    with pytest.raises(ValueError, match="scheme must be one of pytorch, authors"):
        model.reset_parameters("kaiming")
