"""``profile``'s INT8 memory: weights in flash and peak activations in RAM, checked on hand-counted models."""

import torch
from torch import nn

from fdmobilenet import create_model, profile
from fdmobilenet.cli import main


class Tiny(nn.Module):
    """stem 3x3/2 conv -> depthwise 3x3 -> pointwise 1x1 -> global pool -> linear, BatchNorm after each conv."""

    def __init__(self):
        super().__init__()

        def cbr(cin, cout, k, stride=1, groups=1):
            conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = cbr(3, 4, 3, stride=2)
        self.dw = cbr(4, 4, 3, groups=4)
        self.pw = cbr(4, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(self.pw(self.dw(self.stem(x)))).flatten(1))


def test_tiny_model_by_hand():
    p = profile(Tiny(), 8)
    # activations (elements): stem 3x8x8 in + 4x4x4 out = 256, dw 64 + 64, pw 64 + 8x4x4 = 192, pool 128 + 8
    assert p.int8_peak_activation_bytes == 256
    assert p.peak_activation_bytes == 4 * 256
    assert [layer.activation_elements for layer in p.layers if layer.kind in ("Conv2d", "Linear")] == [
        256,
        128,
        192,
        18,
    ]
    # INT8 weights: int8 weights + (int32 bias + fp32 scale) per output channel; BatchNorm folded away
    stem, dw, pw, fc = 3 * 4 * 9 + 8 * 4, 4 * 9 + 8 * 4, 4 * 8 + 8 * 8, 8 * 10 + 8 * 10
    assert p.int8_weight_bytes == stem + dw + pw + fc == 464
    # fp32: every weight and one bias per output channel (folding BatchNorm adds one) at 4 bytes
    assert p.weight_bytes == 4 * ((108 + 4) + (36 + 4) + (32 + 8) + (80 + 10))
    assert sum(layer.int8_weight_bytes for layer in p.layers) == p.int8_weight_bytes


def test_standalone_batchnorm_and_meta_device_agree():
    class BnFirst(Tiny):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(3)  # nothing to fold it into: scale + shift stay, 32-bit

        def forward(self, x):
            return super().forward(self.norm(x))

    p = profile(BnFirst(), 8)
    assert p.int8_weight_bytes == 464 + 2 * 3 * 4
    with torch.device("meta"):
        m = BnFirst()
    q = profile(m, 8)
    assert (q.int8_weight_bytes, q.int8_peak_activation_bytes) == (p.int8_weight_bytes, 256)


def test_released_models():
    # FD-MobileNet peaks at the stem: 3x224x224 in + 8x112x112 out (0.25x), one byte each
    p = profile(create_model("fd_mobilenet_025"), 224)
    assert p.int8_peak_activation_bytes == 3 * 224 * 224 + 8 * 112 * 112
    convs = [m for m in p.layers if m.kind in ("Conv2d", "Linear")]
    channels = sum(m.out_shape[1] for m in convs)
    weights = sum(m.params for m in convs) - 1000  # the classifier's bias is counted per channel below
    assert p.int8_weight_bytes == weights + 8 * channels
    # a residual unit's input stays alive: ShuffleNet 2x, held 480x28x28 + 120x28x28 bottleneck + 480x28x28
    wide = profile(create_model("shufflenet_v1_g3_200"), 224)
    assert wide.int8_peak_activation_bytes == 480 * 28 * 28 * 2 + 120 * 28 * 28


def test_torchvision_residuals_hold_their_input():
    with torch.device("meta"):
        m = create_model("mobilenet_v2", width=1.0)
    p = profile(m, 224)
    dw = next(layer for layer in p.layers if layer.name == "features.3.conv.1.0")  # 24 -> 144 -> 24 at 56x56
    assert dw.activation_elements == 24 * 56 * 56 + 2 * 144 * 56 * 56


def test_profile_int8_cli(capsys):
    assert main(["profile", "fd_mobilenet_025", "--int8", "--resolution", "128", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "int8 weights" in out and "80.0KiB" in out  # 3x128x128 + 8x64x64 bytes
