import json

import numpy as np
import pytest
from PIL import Image

from fdmobilenet.cli import main
from fdmobilenet.data import packed
from fdmobilenet.data.folders import scan_folder
from fdmobilenet.data.images import load_image
from fdmobilenet.preprocess import Preprocess
from helpers import mini_photos, shared_path


@pytest.fixture
def photos(tmp_path):
    """12 real photos in 3 classes, plus one broken file."""
    src = mini_photos(12)
    root = tmp_path / "src"
    for i, p in enumerate(src):
        d = root / f"class{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name).write_bytes(p.read_bytes())
    (root / "class1" / "zero.jpg").write_bytes(b"")
    return root


def test_prepare_round_trip(photos, tmp_path, capsys):
    dst = tmp_path / "packed"
    assert main(["prepare", str(photos), str(dst), "--short-side", "64", "--shards", "3", "--workers", "1"]) == 0
    assert "prepared 12 images in 3 shards" in capsys.readouterr().out
    pf = packed.PackedFolder.open(dst)
    assert pf.classes == ["class0", "class1", "class2"] and len(pf) == 12
    src = scan_folder(photos)
    # same label multiset; every image decodes, shorter side 64 (all sources are larger)
    assert sorted(pf.labels.tolist()) == sorted(label for p, label in src.samples if p.stat().st_size)
    sizes = [pf.decode(i).size for i in range(len(pf))]
    assert all(min(s) == 64 for s in sizes)
    bad = json.loads((dst / "bad.json").read_text())
    assert len(bad) == 1 and bad[0][0].endswith("zero.jpg") and "empty" in bad[0][1]
    # the re-encoded image looks like the original at the same size
    meta = json.loads((dst / "meta.json").read_text())
    assert meta["n_images"] == 12 and meta["bad"] == 1


def test_prepare_resumes_after_interruption(photos, tmp_path, monkeypatch):
    dst = tmp_path / "packed"
    real = packed.write_shard
    calls = []

    def flaky(dst_, shard, *a):
        calls.append(shard)
        if shard == 2:
            raise KeyboardInterrupt
        return real(dst_, shard, *a)

    monkeypatch.setattr(packed, "write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        packed.prepare(photos, dst, 64, shards=4, workers=1, progress=False)
    assert not (dst / "meta.json").exists()  # incomplete: not readable as a dataset
    with pytest.raises(ValueError, match="not a complete prepared dataset"):
        packed.PackedFolder.open(dst)
    calls.clear()
    monkeypatch.setattr(packed, "write_shard", real)
    seen = []
    monkeypatch.setattr(packed, "write_shard", lambda d, s, *a: seen.append(s) or real(d, s, *a))
    packed.prepare(photos, dst, 64, shards=4, workers=1, progress=False)
    assert seen == [2, 3]  # shards 0 and 1 were kept
    assert len(packed.PackedFolder.open(dst)) == 12
    with pytest.raises(ValueError, match="other settings"):
        packed.prepare(photos, dst, 96, shards=4, workers=1, progress=False)


def test_prepare_in_parallel_matches_sequential(photos, tmp_path):
    a = packed.prepare(photos, tmp_path / "a", 96, shards=2, workers=1, progress=False)
    b = packed.prepare(photos, tmp_path / "b", 96, shards=2, workers=2, progress=False)
    assert a == b
    pa, pb = packed.PackedFolder.open(tmp_path / "a"), packed.PackedFolder.open(tmp_path / "b")
    assert np.array_equal(pa.rows, pb.rows) and pa.read_bytes(5) == pb.read_bytes(5)


def test_draft_decode_gives_the_same_size_as_full_decode():
    tf = Preprocess(224).transform()
    for p in sorted(shared_path("datasets/imagenet-sample-50").rglob("*.JPEG"))[:5]:
        full, draft = load_image(p), load_image(p, draft_size=64)
        assert draft.size[0] < full.size[0] or min(full.size) < 128  # draft really decoded smaller
        a, b = Preprocess(64).transform()(full), Preprocess(64).transform()(load_image(p, draft_size=73))
        assert a.shape == b.shape == (3, 64, 64)
        assert (a - b).abs().mean() < 0.15  # normalised units: same picture
        assert tf(load_image(p, draft_size=256)).shape == tf(full).shape


def test_prepare_bad_arguments(photos, tmp_path):
    with pytest.raises(ValueError, match="`short_side`"):
        packed.prepare(photos, tmp_path / "x", 8)
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        packed.prepare(tmp_path / "missing", tmp_path / "x")


def test_grey_and_cmyk_sources_are_packed_as_rgb(tmp_path):
    root = tmp_path / "src" / "a"
    root.mkdir(parents=True)
    Image.new("L", (300, 200), 80).save(root / "grey.png")
    Image.new("CMYK", (300, 200), (0, 255, 0, 0)).save(root / "cmyk.jpg")
    packed.prepare(tmp_path / "src", tmp_path / "dst", 100, shards=1, workers=1, progress=False)
    pf = packed.PackedFolder.open(tmp_path / "dst")
    imgs = [pf.decode(i) for i in range(2)]
    assert all(im.mode == "RGB" and min(im.size) == 100 for im in imgs)
    colours = sorted(tuple(int(v) for v in np.asarray(im).reshape(-1, 3).mean(0).round()) for im in imgs)
    # grey 80 stays grey; CMYK (0, 255, 0, 0) is magenta in RGB (JPEG rounding allowed)
    assert all(abs(c - 80) <= 2 for c in colours[0])
    assert colours[1][0] > 240 and colours[1][1] < 15 and colours[1][2] > 240
