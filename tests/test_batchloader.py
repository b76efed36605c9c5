import shutil

import torch
from PIL import Image

from conftest import shared_path
from fdmobilenet import create_model
from fdmobilenet.batchloader import BatchDecodeLoader
from fdmobilenet.data import eval_transform, scan_folder
from fdmobilenet.evaluate import evaluate
from fdmobilenet.packed import PackedFolder, prepare


def test_batched_eval_path_agrees_with_the_regular_loader(official_weights, imagenet_sample):
    model = create_model("fd_mobilenet_050", pretrained=official_weights["050"]).eval()
    folder = scan_folder(imagenet_sample)
    ref = evaluate(model, folder, eval_transform(224))
    loader = BatchDecodeLoader(folder, 25, 224, train=False)
    hit1 = n = 0
    with torch.no_grad():
        for x, y, bad in loader:
            assert not bad
            hit1 += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    # roi_align's box resize is not PIL's resize, but the predictions must barely move
    assert n == 50 and abs(100 * hit1 / n - ref.top1) <= 4


def test_mixed_formats_and_bad_files_are_reported_not_fatal(tmp_path):
    src = sorted(shared_path("datasets/imagenet-sample-50").rglob("*.JPEG"))[:4]
    d = tmp_path / "a"
    d.mkdir()
    for p in src:
        shutil.copy(p, d / p.name)
    Image.open(src[0]).convert("RGB").save(d / "as_png.png")  # not a JPEG: PIL fallback
    (d / "zero.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(src[1].read_bytes()[:300])
    folder = scan_folder(tmp_path)
    seen, bad_all = 0, []
    for x, y, bad in BatchDecodeLoader(folder, 4, 64, train=True, generator=torch.Generator().manual_seed(0)):
        bad_all += bad
        if x is not None:
            assert x.shape[1:] == (3, 64, 64) and len(y) == x.shape[0]
            seen += x.shape[0]
    assert seen == 5
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in bad_all) == ["truncated.jpg", "zero.jpg"]


def test_packed_source_and_fixed_order(tmp_path):
    photos = shared_path("datasets/imagenet-sample-50")
    prepare(photos, tmp_path / "p", 96, shards=2, workers=1, progress=False)
    pf = PackedFolder.open(tmp_path / "p")
    order = list(range(len(pf)))[::-1]
    labels = torch.cat([y for _, y, _ in BatchDecodeLoader(pf, 16, 64, train=False, indices=order)])
    assert labels.tolist() == pf.labels[order].tolist()
