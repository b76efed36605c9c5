import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fdmobilenet import create_model, load_weights
from fdmobilenet.models import build_from_weights
from fdmobilenet.models.mobilenet import checkpoint_filter_fn
from fdmobilenet.weights import read_weights, save_weights
from helpers import shared_path


def _official_model(tag):
    """The authors' checkpoint loaded into our model by key mapping alone (no file written)."""
    src = shared_path(f"weights/official/{ {'025': '0.25x', '050': '0.5x'}[tag] }-FDMobileNet-224.pth.tar")
    raw = torch.load(src, map_location="cpu", weights_only=True)["state_dict"]
    m = create_model(f"fd_mobilenet_{tag}").eval()
    m.load_state_dict(checkpoint_filter_fn(raw), strict=False)
    return m, raw


@pytest.mark.parametrize("tag", ["025", "050"])
def test_conversion_round_trip_identical_logits(tag, official_weights):
    ref, raw = _official_model(tag)
    # every tensor of the authors' file has a home, and every parameter/buffer but the BN counters is filled
    own = set(ref.state_dict())
    mapped = set(checkpoint_filter_fn(raw))
    assert mapped <= own and {k for k in own - mapped if not k.endswith("num_batches_tracked")} == set()
    loaded = create_model(f"fd_mobilenet_{tag}", pretrained=official_weights[tag]).eval()
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ref(x), loaded(x))


def test_converted_file_is_safetensors_with_metadata(official_weights):
    with safe_open(str(official_weights["025"]), "pt") as f:
        meta = json.loads(f.metadata()["fdmobilenet"])
        assert "stem.conv.weight" in f.keys()  # noqa: SIM118 - safe_open is not a dict
    assert meta["model"] == "fd_mobilenet_025"
    assert meta["num_classes"] == 1000 and len(meta["class_names"]) == 1000
    assert meta["class_names"][0] == "tench" and meta["synsets"][0] == "n01440764"
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["resolution"] == 224 and meta["crop_pct"] == 0.875
    assert meta["source"] == "0.25x-FDMobileNet-224"


def test_module_prefix_is_dropped(tmp_path):
    sd = {"module.features.dw_conv_3.weight": torch.zeros(1), "module.classifier.bias": torch.zeros(1)}
    torch.save({"state_dict": sd}, tmp_path / "legacy.pth.tar")
    raw, _ = read_weights(tmp_path / "legacy.pth.tar")
    assert set(checkpoint_filter_fn(raw)) == {"blocks.3.dw.conv.weight", "classifier.bias"}


def test_mismatched_weights_name_the_keys(official_weights):
    with pytest.raises(ValueError) as e:
        create_model("fd_mobilenet_050", pretrained=official_weights["025"])
    msg = str(e.value)
    assert "mis-shaped" in msg and "stem.conv.weight: file (8, 3, 3, 3) vs model (16, 3, 3, 3)" in msg
    with pytest.raises(ValueError) as e:
        create_model("mobilenet_v1_025", pretrained=official_weights["025"])
    assert "missing (20): blocks.11.dw.conv.weight" in str(e.value)


def test_unexpected_keys_are_named(tmp_path):
    m = create_model("fd_mobilenet_025")
    sd = dict(m.state_dict())
    sd["extra.weight"] = torch.zeros(2)
    save_weights(sd, tmp_path / "w.safetensors", {"model": "fd_mobilenet_025"})
    with pytest.raises(ValueError, match=r"unexpected \(1\): extra.weight"):
        load_weights(create_model("fd_mobilenet_025"), tmp_path / "w.safetensors")


def test_fine_tune_load_skips_only_the_classifier(official_weights):
    m = create_model("fd_mobilenet_025", num_classes=10)
    load_weights(m, official_weights["025"], strict_classifier=False)
    ref, _ = _official_model("025")
    assert torch.equal(m.blocks[5].pw.conv.weight, ref.blocks[5].pw.conv.weight)
    assert m.classifier.weight.shape == (10, 256)
    with pytest.raises(ValueError, match="classifier.weight"):
        load_weights(create_model("fd_mobilenet_025", num_classes=10), official_weights["025"])


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, bad)
    with pytest.raises(ValueError, match="loadable without executing code"):
        read_weights(bad)
    assert not (tmp_path / "pwned").exists()


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="neither a safetensors file"):
        read_weights(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")


def test_build_from_weights_uses_metadata(tmp_path):
    m = create_model("fd_mobilenet", width=0.3, num_classes=3)
    save_weights(
        m.state_dict(),
        tmp_path / "w.safetensors",
        {"model": "fd_mobilenet", "model_kwargs": {"width": 0.3}, "num_classes": 3, "class_names": ["a", "b", "c"]},
    )
    m2, meta = build_from_weights(tmp_path / "w.safetensors")
    assert meta["class_names"] == ["a", "b", "c"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), m2(x))


def test_plain_safetensors_without_metadata_loads(tmp_path):
    m = create_model("fd_mobilenet_025")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    m2, meta = build_from_weights(tmp_path / "plain.safetensors")  # model inferred from the tensors
    assert meta["model"] == "fd_mobilenet_025"


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_weights({"a": torch.zeros(1)}, target, {})
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    monkeypatch.undo()
    umask = os.umask(0o022)
    try:
        save_weights({"a": torch.zeros(1)}, target, {})
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
