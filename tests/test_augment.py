import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from fdmobilenet.data.augment import BatchAugment, center_boxes, crop_resize, pad_crop, random_flip, rrc_boxes
from fdmobilenet.data.folders import Folder, scan_folder
from fdmobilenet.data.memcache import load_or_build
from fdmobilenet.preprocess import Preprocess
from helpers import FLOWERS_MINI, shared_path


def _torchvision_boxes(h, w, scale, n, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(1, h, w)
    out = []
    for _ in range(n):
        i, j, bh, bw = T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
        out.append((j, i, j + bw, i + bh))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("h, w, scale", [(375, 500, (0.08, 1.0)), (224, 224, (0.36, 1.0)), (32, 300, (0.08, 1.0))])
def test_rrc_boxes_match_torchvision_statistics(h, w, scale):
    n = 4000
    ours = rrc_boxes(torch.full((n,), h), torch.full((n,), w), scale, generator=torch.Generator().manual_seed(1))
    ref = _torchvision_boxes(h, w, scale, n)
    ours = ours.double()
    # every box lies inside its image, with integer pixel sides
    assert (ours[:, 0] >= 0).all() and (ours[:, 1] >= 0).all() and (ours[:, 2] <= w).all() and (ours[:, 3] <= h).all()
    bw, bh = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
    assert torch.equal(bw, bw.round()) and (bw > 0).all() and (bh > 0).all()

    def stats(b):
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        area, logr = bw * bh / (h * w), torch.log(bw / bh)
        cx, cy = (b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h
        q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
        return torch.cat([area.quantile(q), logr.quantile(q), cx.quantile(q), cy.quantile(q)])

    # same distribution of area fraction, log aspect ratio and centre as torchvision's sampler
    assert torch.allclose(stats(ours), stats(ref), atol=0.035), (stats(ours), stats(ref))


def test_rrc_area_and_ratio_ranges_when_the_crop_fits():
    n = 2000
    b = rrc_boxes(torch.full((n,), 1000), torch.full((n,), 1000), (0.36, 1.0))
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    area = bw * bh / 1e6
    assert area.min() >= 0.36 - 0.01 and area.max() <= 1.0
    assert (bw / bh).min() >= 0.75 - 0.01 and (bw / bh).max() <= 4 / 3 + 0.01


def test_center_box_equals_resize_then_center_crop():
    # a smooth image: roi_align on the centre box ~ torchvision's Resize(256) + CenterCrop(224)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 255 / (h + w)], -1).astype(np.uint8)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])(Image.fromarray(arr)).float()
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    ours = crop_resize(x, center_boxes(torch.tensor([h]), torch.tensor([w]), 0.875), 224)[0]
    assert (ours - ref).abs().mean() < 1.0


def test_crop_resize_identity_box_is_exact():
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 16, 16]] * 3, dtype=torch.float32)
    assert torch.allclose(crop_resize(x, boxes, 16), x.float(), atol=1e-3)


def test_flip_and_pad_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8).repeat(50, 1, 1, 1)
    f = random_flip(x, 0.5, g)
    flipped = (f == x.flip(-1)).flatten(1).all(1)
    same = (f == x).flatten(1).all(1)
    assert (flipped ^ same).all() and 25 <= flipped.sum() <= 75
    p = pad_crop(x, 4, g)
    assert p.shape == x.shape
    # each output is a shifted window of the zero-padded input
    padded = torch.nn.functional.pad(x, (4,) * 4)
    for i in range(5):
        assert any(torch.equal(p[i], padded[i, :, dy : dy + 8, dx : dx + 8]) for dy in range(9) for dx in range(9))


def test_batch_augment_shapes_and_normalisation():
    x = torch.full((4, 3, 40, 40), 124, dtype=torch.uint8)
    aug = BatchAugment(32, "rrc")
    y = aug(x, train=True)
    assert y.shape == (4, 3, 32, 32) and y.dtype == torch.float32
    assert torch.allclose(y[:, 0], torch.full_like(y[:, 0], (124 / 255 - 0.485) / 0.229), atol=1e-4)
    assert BatchAugment(64, "pad-crop")(x, train=False).shape == (4, 3, 64, 64)
    with pytest.raises(ValueError, match="'rrc' or 'pad-crop'"):
        BatchAugment(32, "mixup")


def test_memcache_builds_reuses_and_invalidates(tmp_path):
    cifar = shared_path("datasets/cifar10/train")
    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for p in sorted((cifar / cls).glob("*.jpg"))[:10]:
            (root / cls / p.name).write_bytes(p.read_bytes())
    (root / "dog" / "broken.jpg").write_bytes(b"nope")
    cache = tmp_path / "cache"
    ds = load_or_build(scan_folder(root), 32, cache, progress=False)
    assert ds.rebuilt and ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0] * 10 + [1] * 10 and ds.classes == ["cat", "dog"]
    assert len(ds.bad) == 1 and ds.bad[0][0].endswith("broken.jpg")
    # pixels equal a direct decode
    first = sorted((root / "cat").glob("*.jpg"))[0]
    assert torch.equal(ds.images[0], torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1))
    again = load_or_build(scan_folder(root), 32, cache, progress=False)
    assert not again.rebuilt and torch.equal(again.images, ds.images)
    # touching a file invalidates the cache
    victim = sorted((root / "dog").glob("*.jpg"))[0]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(victim)
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_or_build(scan_folder(root), 32, cache, progress=False)
    assert third.rebuilt and not torch.equal(third.images, ds.images)
    # a different size is a separate cache; a damaged cache file is rebuilt
    assert load_or_build(scan_folder(root), 16, cache, progress=False).images.shape[-1] == 16
    third.cache_file.write_bytes(b"garbage")
    assert load_or_build(scan_folder(root), 32, cache, progress=False).rebuilt


def test_memcache_keeps_whole_photos_and_evaluates_like_the_eval_transform(tmp_path):
    """The cache holds each photo's whole frame (longer side up to 4/3 of the shorter), so training crops see
    what the PIL pipeline sees; its evaluation crop (centre box of the real size) equals the eval transform."""
    from fdmobilenet.data.images import load_image
    from fdmobilenet.data.memcache import fit

    f = scan_folder(FLOWERS_MINI)
    sizes = [Image.open(p).size for p, _ in f.samples]
    portrait = next(i for i, (w, h) in enumerate(sizes) if h > w)
    land = [i for i, (w, h) in enumerate(sizes) if w > h][:2]
    sub = Folder([f.samples[land[0]], f.samples[land[1]], f.samples[portrait]], f.classes, f.root)
    photos = [load_image(p) for p, _ in sub.samples]
    ref = Preprocess(64, crop_pct=1.0, mean=(0, 0, 0), std=(1 / 255,) * 3).transform()
    direct = torch.stack([ref(p) for p in photos])  # Resize(64) + CenterCrop(64), 0-255
    for p in photos:  # shorter side 64, longer side cut to at most 85 (4/3), centred
        a = fit(p, 64)
        w, h = p.size
        long = min(85, int(max(w, h) * 64 / min(w, h)))
        assert sorted(a.shape[1:]) == [64, long]
    # the cache decodes JPEGs in draft mode (1/2..1/8 scale): same size, nearly the same pixels
    ds = load_or_build(sub, 64, tmp_path, progress=False)
    assert ds.images.shape[:2] == (3, 3) and ds.sizes.min().item() == 64 and ds.sizes.max().item() > 64
    aug = BatchAugment(64, "rrc", crop_pct=1.0, mean=(0, 0, 0), std=(1 / 255,) * 3)
    evaluated = aug(ds.images, train=False, sizes=ds.sizes)
    assert (evaluated - direct).abs().mean() < 12
    # a crop from the shared canvas equals the same crop from the photo alone (the canvas beyond a photo
    # replicates its edge, so boxes touching the border never blend in other pixels)
    hs, ws = ds.sizes[:, 0].double(), ds.sizes[:, 1].double()
    boxes = rrc_boxes(hs, ws, (0.36, 1.0), generator=torch.Generator().manual_seed(0))
    # small crops in the bottom-right corner (upsampled: their last samples fall between the edge and beyond)
    boxes[1:] = torch.stack([ws[1:] - 30, hs[1:] - 30, ws[1:], hs[1:]], 1)
    assert (ds.sizes[1:] < torch.tensor(ds.images.shape[2:])).any()  # and they do not fill the canvas
    for canvas in (ds.images, ds.images.float()):  # the CPU uint8 path and roi_align (the GPU path)
        batched = crop_resize(canvas, boxes, 64)
        for i, (h, w) in enumerate(ds.sizes.tolist()):
            alone = crop_resize(canvas[i : i + 1, :, :h, :w], boxes[i : i + 1], 64)
            assert torch.allclose(batched[i : i + 1], alone, atol=1e-3)


# --- strong augmentation: auto_augment and random_erasing (issue 20) ---------------------------------


def _photos(n: int = 6) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(FLOWERS_MINI.rglob("*.jpg"))[:n]]


def test_pil_train_transform_with_the_options_off_is_unchanged():
    """Same seed, same tensor and the same random draws as the transform before the options existed."""
    from fdmobilenet.preprocess import IMAGENET_MEAN, IMAGENET_STD, train_transform

    before = T.Compose([T.RandomResizedCrop(32, scale=(0.36, 1.0), antialias=True), T.RandomHorizontalFlip(),
                        T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # fmt: skip
    now = train_transform(32, crop_scale=(0.36, 1.0), auto_augment="none", random_erasing=0.0)
    for seed, img in enumerate(_photos()):
        torch.manual_seed(seed)
        ref, ref_next = before(img), torch.rand(3)
        torch.manual_seed(seed)
        assert torch.equal(now(img), ref) and torch.equal(torch.rand(3), ref_next)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_policies_change_images_after_the_same_crop(policy):
    from fdmobilenet.preprocess import train_transform

    plain, strong = train_transform(32), train_transform(32, auto_augment=policy, ra_magnitude=15)
    changed = 0
    for seed, img in enumerate(_photos(8)):
        torch.manual_seed(seed)
        a = plain(img)
        torch.manual_seed(seed)
        b = strong(img)
        torch.manual_seed(seed)
        assert torch.equal(strong(img), b)  # seeded: what SeededView relies on for exact resume
        changed += not torch.equal(a, b)
    assert changed >= 5  # an op can draw identity (or a zero magnitude): most images still change


def test_pil_random_erasing_erases_the_normalised_tensor():
    from fdmobilenet.preprocess import train_transform

    img = _photos(1)[0]
    torch.manual_seed(0)
    plain = train_transform(64)(img)
    torch.manual_seed(0)
    erased = train_transform(64, random_erasing=1.0)(img)
    diff = plain != erased
    assert diff.any() and (erased[diff] == 0).all()  # torchvision's value 0: the mean colour after normalising


def _memory(n: int = 10, side: int = 40) -> object:
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    return SimpleNamespace(images=images, sizes=torch.full((n, 2), side), labels=torch.arange(n))


def test_memory_batches_with_strong_augmentation_are_a_function_of_seed_epoch_step():
    from fdmobilenet.data.order import EpochOrder
    from fdmobilenet.train.inputs import MemoryBatches

    mem = _memory()
    aug = BatchAugment(32, "rrc", (0.36, 1.0), auto_augment="trivialaugment", random_erasing=0.5)

    def batches(epoch: int, start: int) -> list[torch.Tensor]:
        order = EpochOrder(10, 4, 0, 1, seed=5, epoch=epoch, start_step=start)
        return [b[0] for b in MemoryBatches(mem, order, 4, aug, True, seed=5, epoch=epoch, start=start)]

    torch.manual_seed(123)
    state = torch.get_rng_state()
    whole = batches(1, 0)
    assert torch.equal(torch.get_rng_state(), state)  # the engine's global stream is untouched
    resumed = batches(1, 1)  # a run resumed at step 1 gets the same batch 1
    assert len(whole) == 2 and len(resumed) == 1 and torch.equal(resumed[0], whole[1])
    assert all(torch.equal(a, b) for a, b in zip(batches(1, 0), whole))
    assert not torch.equal(batches(2, 0)[0], whole[0])
    assert torch.equal(torch.get_rng_state(), state)


def test_batch_augment_policies_change_crops_and_off_draws_nothing_more():
    mem = _memory(8)
    idx, sizes = torch.arange(8), mem.sizes

    def run(**kw) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(7)
        out = BatchAugment(32, "rrc", **kw)(mem.images, generator=g, sizes=sizes, index=idx)
        return out, torch.rand(2, generator=g)

    plain, plain_next = run()
    off, off_next = run(auto_augment="none", random_erasing=0.0)
    assert torch.equal(off, plain) and torch.equal(off_next, plain_next)  # off: the batches of before
    ra, _ = run(auto_augment="randaugment", ra_magnitude=15)
    assert sum(not torch.equal(a, b) for a, b in zip(ra, plain)) >= 5  # per image, not one op for the batch
    erased, _ = run(random_erasing=1.0)
    assert all((e != p).any() for e, p in zip(erased, plain))
    # the float path (a batch without an index: a GPU's roi_align) takes the same options
    g = torch.Generator().manual_seed(7)
    out = BatchAugment(32, "rrc", auto_augment="trivialaugment", random_erasing=0.5)(mem.images, generator=g)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"auto_augment": "autoaugment"}, "auto_augment"),
        ({"ra_magnitude": 31}, "ra_magnitude"),
        ({"ra_magnitude": -1}, "ra_magnitude"),
        ({"random_erasing": 1.5}, "random_erasing"),
        ({"random_erasing": -0.1}, "random_erasing"),
        ({"loader": "gpu", "auto_augment": "trivialaugment"}, "auto_augment"),
        ({"loader": "gpu", "random_erasing": 0.25}, "random_erasing"),
    ],
)
def test_bad_strong_augmentation_settings_are_refused_naming_the_field(overrides, field):
    from fdmobilenet._errors import ParameterError
    from fdmobilenet.train import make_config

    with pytest.raises(ParameterError, match=f"`{field}`") as e:
        make_config(overrides)
    assert e.value.param == field


def test_long_recipe_is_small_plus_strong_augmentation_and_listed_in_help(capsys):
    from fdmobilenet.train.config import RECIPES, TrainConfig
    from helpers import run_cli

    assert RECIPES["long"] == {**RECIPES["small"], "auto_augment": "trivialaugment", "random_erasing": 0.25}
    assert (TrainConfig.auto_augment, TrainConfig.random_erasing) == ("none", 0.0)  # the defaults stay off
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for flag in ("--auto-augment", "--ra-magnitude", "--random-erasing", "trivialaugment"):
        assert flag in out
    code, _, err = run_cli(capsys, "train", "--loader", "gpu", "--random-erasing", "0.5")
    assert code != 0 and "--random-erasing" in err and "--loader" in err  # the CLI speaks in flags
