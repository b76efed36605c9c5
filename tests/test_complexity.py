import pytest
import torch

from fdmobilenet import create_model, profile, solve_width


@pytest.mark.parametrize(
    "name, mmacs, params",
    [
        ("fd_mobilenet_100", 144.49, 2_901_288),
        ("fd_mobilenet_050", 40.13, 993_928),
        ("fd_mobilenet_025", 12.04, 383_160),
        ("mobilenet_v1_100", 568.74, 4_231_976),
        ("mobilenet_v1_050", 149.50, None),
        ("mobilenet_v1_025", 41.03, None),
    ],
)
def test_paper_complexity(name, mmacs, params):
    p = profile(create_model(name), 224)
    assert round(p.macs / 1e6, 2) == mmacs
    if params is not None:
        assert p.params == params


@pytest.mark.parametrize(
    "name, paper",
    [
        ("shufflenet_v1_g1_100", 143),
        ("shufflenet_v1_g2_100", 140),
        ("shufflenet_v1_g3_100", 137),
        ("shufflenet_v1_g4_100", 133),
        ("shufflenet_v1_g8_100", 137),
        ("shufflenet_v1_g3_050", 38),
        ("shufflenet_v1_g3_025", 13),
    ],
)
def test_shufflenet_complexity_close_to_paper(name, paper):
    # ShuffleNet paper, Table 2 and 1; g=3 1x is 137.46 M here.
    assert abs(profile(create_model(name), 224).macs / 1e6 - paper) / paper < 0.03


def test_macs_are_conv_and_linear_only_and_scale_with_resolution():
    m = create_model("fd_mobilenet_050")
    p224, p448 = profile(m, 224), profile(m, 448)
    cls = 512 * 1000
    # every conv layer's MACs scale with its output pixels (x4 at twice the side); the classifier's do not
    assert p448.macs - cls == 4 * (p224.macs - cls)
    kinds = {layer.kind for layer in p224.layers if layer.macs}
    assert kinds == {"Conv2d", "Linear"}
    assert sum(layer.macs for layer in p224.layers) == p224.macs


def test_peak_activation_memory():
    # BN and ReLU are folded/fused, so FD-MobileNet 1x peaks at the stem conv: 3x224x224 in + 32x112x112 out
    p = profile(create_model("fd_mobilenet_100"), 224)
    assert p.peak_activation_bytes == 4 * (3 * 224 * 224 + 32 * 112 * 112)
    # a residual unit keeps its input alive: ShuffleNet 2x peaks in a stride-1 unit of stage 2, where
    # the held 480x28x28 input, the 120x28x28 bottleneck and the 480x28x28 expand output coexist --
    # more than any single layer's input + output (the 48x112x112 stem pair is 752,640 floats)
    wide = profile(create_model("shufflenet_v1_g3_200"), 224)
    assert wide.peak_activation_bytes == 4 * (480 * 28 * 28 * 2 + 120 * 28 * 28)


def test_profile_leaves_model_untouched():
    m = create_model("fd_mobilenet_025").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    profile(m, 224)
    assert m.training and not m._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("family", ["fd_mobilenet", "mobilenet_v1", "shufflenet_v1"])
@pytest.mark.parametrize("budget, res", [(12, 224), (40, 224), (140, 224), (5, 96), (600, 320)])
def test_budget_solver_within_3_percent(family, budget, res):
    w = solve_width(family, budget, resolution=res)
    m = create_model(family, mflops=budget, resolution=res)
    macs = profile(m, res).macs / 1e6
    assert abs(macs - budget) / budget < 0.03, (w, macs)


def test_budget_solver_finds_the_paper_widths():
    assert solve_width("fd_mobilenet", 40.13) == pytest.approx(0.5, abs=0.01)
    assert solve_width("mobilenet_v1", 41.03) == pytest.approx(0.25, abs=0.01)


def test_budget_out_of_reach_is_a_clear_error():
    with pytest.raises(ValueError, match="outside what shufflenet_v1 reaches"):
        solve_width("shufflenet_v1", 5, resolution=320)
    with pytest.raises(ValueError, match="bare family name"):
        create_model("fd_mobilenet_050", mflops=40)


def test_int8_peak_in_the_npus_brick_layout():
    """NHCWB16 (Ethos-U): feature maps padded to 16 channels, the input image not. Vela planned 112.6 KiB for
    FD-MobileNet 0.25x at 128 px and 343.6 at 224 (benchmarks/mcu/results.md); 16-channel maps are unchanged."""
    fd = create_model("fd_mobilenet", width=0.25)
    assert profile(fd, 128).int8_peak_activation_bytes == 3 * 128 * 128 + 8 * 64 * 64
    assert profile(fd, 128).int8_peak_nhcwb16_bytes == 3 * 128 * 128 + 16 * 64 * 64  # 112 KiB
    assert profile(fd, 224).int8_peak_nhcwb16_bytes == 3 * 224 * 224 + 16 * 112 * 112  # 343 KiB
    wide = profile(create_model("fd_mobilenet", width=0.5), 160)
    assert wide.int8_peak_nhcwb16_bytes == wide.int8_peak_activation_bytes
