import shutil

import pytest
import torch
from PIL import Image

from fdmobilenet import create_model
from fdmobilenet.data.batchloader import BatchDecodeLoader, Prefetcher, size_groups
from fdmobilenet.data.folders import Folder, scan_folder
from fdmobilenet.data.packed import PackedFolder, prepare
from fdmobilenet.evaluate import evaluate, evaluate_loader
from fdmobilenet.preprocess import Preprocess
from helpers import FLOWERS_MINI, mini_photos


def test_batched_eval_path_agrees_with_the_regular_loader(official_weights, imagenet_sample):
    model = create_model("fd_mobilenet_050", pretrained=official_weights["050"]).eval()
    folder = scan_folder(imagenet_sample)
    ref = evaluate(model, folder, Preprocess(224).transform())
    got = evaluate_loader(model, Prefetcher(BatchDecodeLoader(folder, 25, 224, train=False)), folder)
    # roi_align's box resize is not PIL's resize, but the predictions must barely move
    assert got.n == 50 and not got.bad and abs(got.top1 - ref.top1) <= 4 and abs(got.top5 - ref.top5) <= 4


def test_ragged_batch_is_cropped_as_if_each_image_were_alone():
    """Padding never leaks into a crop (the full-image box touches the right and bottom edges), and the
    size groups keep each padded canvas within 1.5x of its images' pixels."""
    folder = scan_folder(FLOWERS_MINI)
    folder = Folder([folder.samples[i] for i in range(0, 200, 4)], folder.classes, folder.root)  # 50 photos
    loader = BatchDecodeLoader(folder, 50, 64, train=False, crop_pct=1.0)
    blobs, _, idx = next(iter(loader.loader))
    images, _, bad = loader.decode(blobs, idx)
    assert not bad and len({tuple(im.shape) for im in images}) > 15  # many sizes (all 96 px on the short side)
    together = loader.transform(images)
    alone = torch.cat([loader.transform([im]) for im in images])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-4)
    hs, ws = [im.shape[1] for im in images], [im.shape[2] for im in images]
    groups = size_groups(hs, ws)
    assert sorted(k for g in groups for k in g) == list(range(50)) and len(groups) < 25
    for g in groups:
        canvas = len(g) * max(hs[k] for k in g) * max(ws[k] for k in g)
        assert len(g) == 1 or canvas <= 1.5 * sum(hs[k] * ws[k] for k in g)


@pytest.fixture
def mixed(tmp_path):
    """4 real JPEGs, a PNG (PIL fallback), an empty and a truncated JPEG, in one class folder."""
    src = mini_photos(4)
    d = tmp_path / "a"
    d.mkdir()
    for p in src:
        shutil.copy(p, d / p.name)
    Image.open(src[0]).convert("RGB").save(d / "as_png.png")
    (d / "zero.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(src[1].read_bytes()[:300])
    return scan_folder(tmp_path)


def test_mixed_formats_and_bad_files_are_reported_not_fatal(mixed):
    seen, bad_all = [], []
    for x, y, idx, bad in BatchDecodeLoader(mixed, 4, 64, train=True):
        bad_all += bad
        if x is not None:
            assert x.shape[1:] == (3, 64, 64) and len(y) == x.shape[0] == len(idx)
            assert y.tolist() == [mixed.label(i) for i in idx.tolist()]
            seen += idx.tolist()
    bad_names = sorted(mixed.name(i).rsplit("/", 1)[-1] for i, _ in bad_all)
    assert bad_names == ["truncated.jpg", "zero.jpg"] and len(seen) == 5
    assert sorted(seen + [i for i, _ in bad_all]) == list(range(7))  # every file used or reported once
    reasons = dict((mixed.name(i).rsplit("/", 1)[-1], r) for i, r in bad_all)
    assert "empty" in reasons["zero.jpg"]


def test_crops_are_seeded_per_batch_so_a_resumed_epoch_sees_the_same_crops(mixed):
    order = [6, 0, 3, 1, 4, 2, 5]
    full = list(BatchDecodeLoader(mixed, 2, 48, indices=order, seed=7, epoch=3))
    again = list(BatchDecodeLoader(mixed, 2, 48, indices=order, seed=7, epoch=3))
    resumed = list(BatchDecodeLoader(mixed, 2, 48, indices=order[4:], seed=7, epoch=3, first_batch=2))
    other_epoch = list(BatchDecodeLoader(mixed, 2, 48, indices=order, seed=7, epoch=4))
    same = lambda a, b: (a[0] is None and b[0] is None) or torch.equal(a[0], b[0])
    assert all(same(a, b) for a, b in zip(full, again, strict=True))
    assert all(same(a, b) for a, b in zip(full[2:], resumed, strict=True))
    assert not all(same(a, b) for a, b in zip(full, other_epoch))


def test_prefetcher_gives_the_same_batches_raises_errors_and_stops_early():
    assert list(Prefetcher(range(10), depth=3)) == list(range(10))

    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(Prefetcher(failing()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    p = Prefetcher(endless(), depth=2)
    it = iter(p)
    assert [next(it), next(it)] == [0, 1]
    it.close()  # the consumer leaves (an interrupted epoch): the producer must stop, not run on
    assert not p._thread.is_alive() and len(produced) <= 5


def test_packed_source_and_fixed_order(tmp_path):
    photos = FLOWERS_MINI
    prepare(photos, tmp_path / "p", 96, shards=2, workers=1, progress=False)
    pf = PackedFolder.open(tmp_path / "p")
    order = list(range(len(pf)))[::-1]
    batches = list(BatchDecodeLoader(pf, 16, 64, train=False, indices=order))
    assert torch.cat([b[2] for b in batches]).tolist() == order
    assert torch.cat([b[1] for b in batches]).tolist() == pf.labels[order].tolist()
