"""SSDLite detectors on every backbone family: registry, training and inference contracts, weights, cost."""

from __future__ import annotations

import json

import pytest
import torch

from fdmobilenet import create_model, list_models, profile
from fdmobilenet.models import (
    FAMILIES,
    build_detector,
    build_from_weights,
    detector_metadata,
    macs_by_part,
    model_family,
    model_task,
)
from fdmobilenet.weights import read_weights, save_weights
from helpers import run_cli, shared_path

# One detector per backbone family, small enough to run in a fraction of a second.
FAMILY_CASES = [
    ("ssdlite_fd_mobilenet_025", {}),
    ("ssdlite_mobilenet_v1_025", {}),
    ("ssdlite_shufflenet_v1_g3_025", {}),
    ("ssdlite_mobilenet_v2", {"width": 0.25}),
    ("ssdlite_mobilenet_v3_small", {"width": 0.25}),
    ("ssdlite_mobilenet_v3_large", {"width": 0.25}),
    ("ssdlite_shufflenet_v2", {"width": 0.25}),
]
K = 3


def _targets(n: int) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[10.0, 20.0, 120.0, 150.0], [60.0, 30.0, 200.0, 90.0]])
    return [{"boxes": boxes[: 1 + i % 2], "labels": torch.tensor([1, K])[: 1 + i % 2]} for i in range(n)]


def _body(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("backbone.body.")}


def test_registry_names_and_tasks():
    detectors = list_models(task="detection")
    classifiers = list_models()
    assert {f"ssdlite_{n}" for n in classifiers} | {"ssdlite"} == set(detectors)
    assert not any(n.startswith("ssdlite") for n in classifiers)  # tools iterating classifiers are unaffected
    assert sorted(list_models(task=None)) == sorted(classifiers + detectors)
    for name in ("ssdlite_fd_mobilenet_050", "ssdlite_mobilenet_v1_025", "ssdlite_shufflenet_v1_g3_050"):
        assert model_task(name) == "detection" and model_family(name) == "ssdlite"
    for fam in FAMILIES:
        assert model_task(fam) == "classification" and model_task(f"ssdlite_{fam}") == "detection"
    assert list_models("ssdlite_fd*", task="detection")[-1] == "ssdlite_fd_mobilenet"  # bare families last
    with pytest.raises(ValueError, match="task must be"):
        list_models(task="segmentation")


@pytest.mark.parametrize("name, kw", FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_every_family_trains_and_detects(name, kw):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, **kw)
    assert model.pretrained_cfg["resolution"] == 320 and model.num_classes == K  # detector defaults
    model.eval()
    sizes = {r: [f.shape[-1] for f in model.backbone(torch.zeros(1, 3, r, r)).values()] for r in (320, 256)}
    assert sizes == {320: [20, 10, 5, 3, 2, 1], 256: [16, 8, 4, 2, 1, 1]}

    model = create_model(name, num_classes=K, resolution=256, **kw).train()
    losses = model(torch.rand(2, 3, 256, 256), _targets(2))
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.backbone.body, model.backbone.extras, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())

    model.eval()
    sizes_hw = [(200, 300), (256, 256)]  # any input size: resized in, boxes mapped back out
    with torch.no_grad():
        out = model([torch.rand(3, h, w) for h, w in sizes_hw])
    assert len(out) == 2
    for det, (h, w) in zip(out, sizes_hw, strict=True):
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        assert len(boxes) == len(scores) == len(labels) > 0 and len(boxes) <= 200
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert labels.min() >= 1 and labels.max() <= K
        assert (scores >= model.score_thresh).all()


def test_cfg_batch_input_and_label_checks():
    model = create_model("ssdlite_fd_mobilenet_025", num_classes=K)
    cfg = model.pretrained_cfg
    assert cfg["task"] == "detection" and cfg["backbone"] == "fd_mobilenet_025" and cfg["backbone_width"] == 0.25
    post = (cfg["score_thresh"], cfg["nms_thresh"], cfg["detections_per_img"], cfg["topk_candidates"])
    assert post == (0.001, 0.55, 200, 300)
    assert cfg["anchor_aspect_ratios"] == [[2, 3]] * 6
    assert (cfg["anchor_min_ratio"], cfg["anchor_max_ratio"]) == (0.2, 0.95)
    assert cfg["mean"] == (0.485, 0.456, 0.406) and list(model.transform.image_mean) == list(cfg["mean"])
    model.train()
    with pytest.raises(ValueError, match=r"labels must be in 1\.\.3"):
        background = {"boxes": torch.tensor([[1.0, 1, 50, 50]]), "labels": torch.tensor([0])}
        model(torch.rand(2, 3, 128, 128), [background] * 2)
    with pytest.raises(ValueError, match="float RGB"):
        model(torch.zeros(2, 3, 128, 128, dtype=torch.uint8), _targets(2))
    model.eval()
    with torch.no_grad():
        assert len(model(torch.rand(3, 3, 128, 160))) == 3  # a batch tensor is N images


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: create_model("ssdlite_fd_mobilenet_050", width=0.3), "use 'ssdlite_fd_mobilenet' with width="),
        (lambda: create_model("ssdlite"), "needs backbone="),
        (lambda: create_model("ssdlite", backbone="ssdlite_fd_mobilenet"), "backbone must be a classifier"),
        (lambda: create_model("ssdlite_fd_mobilenet_050", backbone="mobilenet_v1"), "fixes backbone"),
        (lambda: create_model("ssdlite_mobilenet_v2", groups=3), "groups= is for shufflenet_v1"),
        (lambda: create_model("ssdlite_fd_mobilenet_050", dropout=0.1), "does not take dropout"),
        (lambda: create_model("ssdlite_fd_mobilenet", mflops=12), "solve_width"),
        (lambda: create_model("ssdlite_fd_mobilenet_050", num_classes=0), "num_classes must be"),
        (lambda: create_model("ssdlite_mobilenet_v1", pretrained=True), "pretrained=True .* no released weights"),
    ],
)
def test_bad_arguments_say_what_to_do(call, message, monkeypatch):
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    with pytest.raises(ValueError, match=message):
        call()


def test_bare_ssdlite_matches_the_registered_name():
    a = create_model("ssdlite", backbone="fd_mobilenet", width=0.25, num_classes=K)
    b = create_model("ssdlite_fd_mobilenet_025", num_classes=K)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.pretrained_cfg["model_kwargs"] == {"backbone": "fd_mobilenet", "width": 0.25}
    s = create_model("ssdlite_shufflenet_v1", groups=2, width=0.5, num_classes=K)
    assert s.backbone.body.cfg.groups == 2


def test_backbone_from_classification_weights_changes_only_the_backbone(tmp_path):
    torch.manual_seed(1)
    clf = create_model("fd_mobilenet_025", num_classes=10)
    path = tmp_path / "clf.safetensors"
    meta = {"model": "fd_mobilenet_025", "num_classes": 10, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    save_weights(clf.state_dict(), path, meta)

    torch.manual_seed(2)
    fresh = create_model("ssdlite_fd_mobilenet_025", num_classes=K)
    torch.manual_seed(2)
    det = create_model("ssdlite_fd_mobilenet_025", num_classes=K, pretrained=path)
    fresh_sd, det_sd = fresh.state_dict(), det.state_dict()
    body = _body(det)
    assert body and {k.removeprefix("backbone.body."): v for k, v in body.items()}.keys() == {
        k for k in clf.state_dict() if not k.startswith("classifier.")
    }
    for k, v in det_sd.items():
        if k.startswith("backbone.body."):
            assert torch.equal(v, clf.state_dict()[k.removeprefix("backbone.body.")]), k
        else:
            assert torch.equal(v, fresh_sd[k]), k  # extras and head: untouched, as initialised
    assert any(not torch.equal(fresh_sd[k], det_sd[k]) for k in body if k.endswith("weight"))
    assert det.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and det.transform.image_std == [0.25, 0.25, 0.25]

    with pytest.raises(ValueError, match=r"pretrained=.*fd_mobilenet_025.*'ssdlite_fd_mobilenet_025'"):
        create_model("ssdlite_fd_mobilenet_050", pretrained=path)


def test_pretrained_true_is_the_backbone_release(tmp_path, monkeypatch):
    clf = create_model("fd_mobilenet_025")
    save_weights(clf.state_dict(), tmp_path / "fd_mobilenet_025.safetensors", {"model": "fd_mobilenet_025"})
    monkeypatch.setenv("FDM_WEIGHTS", str(tmp_path))
    det = create_model("ssdlite_fd_mobilenet_025", pretrained=True)
    assert torch.equal(det.backbone.body.blocks[7].pw.conv.weight, clf.blocks[7].pw.conv.weight)


def test_backbone_from_the_authors_checkpoint():
    src = shared_path("weights/official/0.5x-FDMobileNet-224.pth.tar")
    clf = create_model("fd_mobilenet_050", pretrained=src)
    det = create_model("ssdlite_fd_mobilenet_050", num_classes=K, pretrained=src)
    for k, v in _body(det).items():
        assert torch.equal(v, clf.state_dict()[k.removeprefix("backbone.body.")]), k


def test_detector_checkpoint_round_trips(tmp_path):
    torch.manual_seed(3)
    model = create_model("ssdlite", backbone="mobilenet_v1", width=0.125, num_classes=K, resolution=256, nms_thresh=0.5)
    with torch.no_grad():  # give BatchNorm running statistics something to carry
        model.train()(torch.rand(2, 3, 256, 256), _targets(2))
    path = tmp_path / "det.safetensors"
    save_weights(model.state_dict(), path, detector_metadata(model, ["cat", "dog", "bird"]))
    meta = read_weights(path)[1]
    assert json.loads(json.dumps(meta)) == meta and meta["model"] == "ssdlite" and meta["task"] == "detection"
    assert meta["model_kwargs"] == {"backbone": "mobilenet_v1", "width": 0.125}

    rebuilt, _ = build_from_weights(path)
    assert rebuilt.pretrained_cfg["resolution"] == 256 and rebuilt.nms_thresh == 0.5
    assert rebuilt.pretrained_cfg["class_names"] == ["cat", "dog", "bird"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k
    x = [torch.rand(3, 200, 240)]
    with torch.no_grad():
        a, b = model.eval()(x)[0], rebuilt(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])

    same = create_model("ssdlite", backbone="mobilenet_v1", width=0.125, pretrained=path)
    assert same.num_classes == K and same.pretrained_cfg["resolution"] == 256  # the file's, when not given
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())

    other = create_model("ssdlite", backbone="mobilenet_v1", width=0.125, num_classes=K + 2, pretrained=path)
    assert other.pretrained_cfg["reinitialised"] == ["head.classification_head"]
    assert "class_names" not in other.pretrained_cfg
    for k, v in model.state_dict().items():
        if not k.startswith("head.classification_head."):
            assert torch.equal(v, other.state_dict()[k]), k

    with pytest.raises(ValueError, match=r"pretrained=.*create_model\('ssdlite', backbone='mobilenet_v1'"):
        create_model("ssdlite_fd_mobilenet_025", pretrained=path)

    # anchor scales are part of what a file rebuilds (train sizes them to the data); asking for others is refused
    save_weights(model.state_dict(), path, {**meta, "anchor_min_ratio": 0.1})
    assert build_from_weights(path)[0].pretrained_cfg["anchor_min_ratio"] == 0.1
    with pytest.raises(ValueError, match="anchor_min_ratio=0.1"):
        create_model(meta["model"], pretrained=path, anchor_min_ratio=0.2, **meta["model_kwargs"])


def test_profile_counts_backbone_extras_and_head():
    with torch.device("meta"):
        det = build_detector("ssdlite_fd_mobilenet_050")
        clf = create_model("fd_mobilenet_050")
        body = create_model("fd_mobilenet_050", features_only=True)
    p = profile(det, 320)
    parts = macs_by_part(p)
    assert parts["backbone"] + parts["extras"] + parts["head"] == p.macs > parts["backbone"] > 0
    assert parts["backbone"] == profile(body, 320).macs
    fc = clf.classifier.in_features * clf.classifier.out_features
    # every conv's output shrinks 32x in both sides: 224 -> 7, 320 -> 10
    assert parts["backbone"] == (profile(clf, 224).macs - fc) * 100 // 49
    assert p.peak_activation_bytes >= profile(body, 320).peak_activation_bytes


def test_cli_profile_and_models(capsys):
    code, out, _ = run_cli(capsys, "profile", "ssdlite_fd_mobilenet_050", "--resolution", "320", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["resolution"] == 320 and row["num_classes"] == 20
    assert row["backbone_macs"] + row["extras_macs"] + row["head_macs"] == row["macs"]
    code, out, _ = run_cli(capsys, "profile", "ssdlite_fd_mobilenet_025")
    assert code == 0 and " 320 " in out and "backbone" in out
    code, out, _ = run_cli(capsys, "models", "ssdlite_fd*")
    assert code == 0 and "ssdlite_fd_mobilenet_050" in out and "fd_mobilenet_050" in out
