import json
import shutil

import pytest
from PIL import Image

from fdmobilenet import create_model
from fdmobilenet.cli import main
from fdmobilenet.data.folders import scan_folder
from fdmobilenet.data.images import load_image
from fdmobilenet.evaluate import evaluate
from fdmobilenet.preprocess import Preprocess
from helpers import FLOWERS_MINI, mini_photos, run_cli


@pytest.mark.parametrize("tag, top1, top5", [("025", 52.0, 70.0), ("050", 56.0, 84.0)])
def test_official_weights_on_the_shared_sample(tag, top1, top5, official_weights, imagenet_sample, capsys):
    # The reference figures of the authors' weights with resize-256 / center-crop-224 (bilinear).
    assert main(["eval", "--weights", str(official_weights[tag]), "--data", str(imagenet_sample), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["top1"], out["top5"], out["n"]) == (top1, top5, 50)
    assert out["model"] == f"fd_mobilenet_{tag}"


def test_synset_folders_use_the_imagenet_order(tmp_path):
    for synset, photo in zip(("n01443537", "n01440764", "n15075141"), mini_photos(3)):  # goldfish, tench, tissue
        (tmp_path / synset).mkdir()
        shutil.copy(photo, tmp_path / synset / photo.name)
    f = scan_folder(tmp_path)
    assert len(f.classes) == 1000 and len(f.samples) == 3
    assert {p.parent.name: label for p, label in f.samples} == {"n01440764": 0, "n01443537": 1, "n15075141": 999}
    assert f.classes[0] == "tench"


def test_predict_names_classes_and_reports_bad_files(official_weights, imagenet_sample, tmp_path, capsys):
    img = sorted(imagenet_sample.rglob("*.JPEG"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    rc = main(["predict", "--weights", str(official_weights["050"]), "--json", "--topk", "3", str(bad), str(img)])
    assert rc == 1  # one file failed ...
    out = json.loads(capsys.readouterr().out)
    assert out[0]["error"] and "broken.jpg" in out[0]["path"] and out[0]["top"] is None
    top = out[1]["top"]  # ... the other was still predicted
    assert len(top) == 3 and all(isinstance(n, str) for n, _ in top)
    assert top[0][1] >= top[1][1] >= top[2][1] and 0 < sum(p for _, p in top) <= 1.0001


def test_predict_text_output(official_weights, imagenet_sample, capsys):
    # the shared goldfish photo is recognised by class name
    img = next(imagenet_sample.glob("n01443537/*"), None) or sorted(imagenet_sample.rglob("*.JPEG"))[0]
    assert main(["predict", "--weights", str(official_weights["050"]), str(img)]) == 0
    text = capsys.readouterr().out
    assert str(img) in text and "%" in text and len(text.strip().splitlines()) == 6


def test_custom_class_folders_use_weights_class_names(tmp_path):
    # a non-synset folder layout maps folder names through the class names stored with the weights
    src = mini_photos(2)
    for p, name in zip(src, ["b", "a"]):
        (tmp_path / name).mkdir()
        shutil.copy(p, tmp_path / name / p.name)
    f = scan_folder(tmp_path, class_names=["x", "a", "b"])
    assert sorted(label for _, label in f.samples) == [1, 2]
    with pytest.raises(ValueError, match="not among the 2 classes"):
        scan_folder(tmp_path, class_names=["x", "y"])
    assert scan_folder(tmp_path).classes == ["a", "b"]


def test_eval_skips_unreadable_files(tmp_path):
    d = tmp_path / "cls"
    d.mkdir()
    shutil.copy(mini_photos(1)[0], d / "good.jpg")
    (d / "empty.jpg").write_bytes(b"")
    r = evaluate(
        create_model("fd_mobilenet_025", num_classes=1).eval(), scan_folder(tmp_path), Preprocess(64).transform()
    )
    assert r.n == 1 and len(r.bad) == 1 and "empty file" in r.bad[0][1]


def test_bad_data_folders_explain_the_layout(tmp_path, capsys):
    rc = main(["eval", "--weights", "nope.safetensors", "--data", str(tmp_path)])
    assert rc == 2 and "nope.safetensors does not exist" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        scan_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        scan_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="holds no image files"):
        scan_folder(tmp_path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    ext = "tiff" if mode == "CMYK" else "png"
    Image.new(mode, (40, 30)).save(tmp_path / f"x.{ext}")
    im = load_image(tmp_path / f"x.{ext}")
    assert im.mode == "RGB" and im.size == (40, 30)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    import numpy as np

    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "x.png")
    assert 120 <= load_image(tmp_path / "x.png").getpixel((0, 0))[0] <= 135


def test_cli_models_and_profile(capsys):
    assert main(["models", "fd_*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"]: r["macs"] for r in rows}["fd_mobilenet_050"] == 40_132_224
    assert main(["profile", "fd_mobilenet_025", "mobilenet_v1_025", "--json", "--resolution", "160"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["fd_mobilenet_025", "mobilenet_v1_025"]
    assert all({"model", "resolution", "macs", "params", "peak_activation_bytes"} <= set(r) for r in rows)
    assert rows[0]["resolution"] == 160
    assert main(["profile", "fd_mobilenet_025", "--layers"]) == 0
    assert "blocks.10.pw.conv" in capsys.readouterr().out
    assert main(["profile", "fd_mobilenet_25"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_cli_convert(tmp_path, capsys):
    from helpers import shared_path

    src = shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")
    assert main(["convert", str(src), str(tmp_path / "w.safetensors")]) == 0
    assert "fd_mobilenet_025" in capsys.readouterr().out
    assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--model", "fd_mobilenet_050"]) == 2
    assert "mis-shaped" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


# --- eval and predict on folders, prepared data, a run's validation split, any device -----------------


@pytest.fixture(scope="module")
def flower_weights(tmp_path_factory):
    """Untrained 5-class weights that know the flower class names (what `train` writes, without training)."""
    from fdmobilenet.weights import save_weights

    path = tmp_path_factory.mktemp("w") / "flowers.safetensors"
    classes = sorted(d.name for d in FLOWERS_MINI.iterdir() if d.is_dir())
    meta = {"model": "fd_mobilenet_025", "num_classes": 5, "class_names": classes, **Preprocess(64).to_meta()}
    save_weights(create_model("fd_mobilenet_025", num_classes=5).state_dict(), path, meta)
    return path


def test_predict_a_folder_writes_a_csv(flower_weights, tmp_path, capsys):
    import csv

    out = tmp_path / "pred.csv"
    args = ["predict", "--weights", str(flower_weights), "--topk", "2", "--batch-size", "7", "--device", "cpu"]
    assert main([*args, str(FLOWERS_MINI), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 200 and rows[0].keys() == {
        "path",
        "class1",
        "index1",
        "prob1",
        "class2",
        "index2",
        "prob2",
        "error",
    }
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert all(r["class1"] in ("daisy", "dandelion", "roses", "sunflowers", "tulips") for r in rows)
    assert all(float(r["prob1"]) >= float(r["prob2"]) for r in rows)
    assert main([*args, str(FLOWERS_MINI / "roses")]) == 0  # a folder alone: CSV on stdout
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("path,class1") and len(lines) == 41


def test_eval_reads_prepared_data_and_a_runs_validation_split(flower_weights, tmp_path, capsys):
    from fdmobilenet.data.splits import load_folders

    base = ["eval", "--weights", str(flower_weights), "--json", "--workers", "1", "--device", "auto"]
    assert main([*base, "--data", str(FLOWERS_MINI)]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["prepare", str(FLOWERS_MINI), str(tmp_path / "packed"), "--short-side", "80", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--data", str(tmp_path / "packed")]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == plain["n"] == 200
    # a run folder's split.json, as `train` writes it: only its validation images are scored
    run = tmp_path / "run"
    run.mkdir()
    record = load_folders(FLOWERS_MINI, 0.25, 0).record
    (run / "split.json").write_text(json.dumps(record))
    assert main([*base, "--split", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(record["val"]) == 50
    if not __import__("torch").cuda.is_available():  # no GPU: --device cuda says so instead of crashing
        assert main([*base, "--device", "cuda", "--data", str(FLOWERS_MINI)]) == 2
        assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, shown", [("eval", "(default: 64)"), ("bench", "(default: 200)"), ("train", "[default:")]
)
def test_help_shows_defaults(command, shown, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert shown in text
    if command == "train":
        assert "without --data, digits" in " ".join(text.split())


def test_missing_inputs_and_foreign_formats_are_bad_input(flower_weights, tmp_path, capsys):
    """A photo path that does not exist is bad input (exit 2), not a failed image (exit 1); a torch .pt2 given
    to --exported says how to load it instead of an ONNX parse error; errors speak of --exported."""
    code, _, err = run_cli(capsys, "predict", "--weights", flower_weights, tmp_path / "nope.jpg")
    assert code == 2 and "nope.jpg does not exist" in err
    (tmp_path / "m.pt2").write_bytes(b"PK\x03\x04 not onnx")
    code, _, err = run_cli(capsys, "eval", "--exported", tmp_path / "m.pt2", "--data", tmp_path)
    assert code == 2 and "torch.export.load" in err and "InvalidProtobuf" not in err
    code, _, err = run_cli(capsys, "eval", "--data", tmp_path)
    assert code == 2 and "--exported FILE" in err and "--onnx" not in err


def test_predict_never_writes_over_a_photo_and_csv_cells_are_not_formulas(tmp_path, capsys):
    from fdmobilenet.weights import save_weights

    photo = tmp_path / "photo.jpg"
    shutil.copy(mini_photos(1)[0], photo)
    before = photo.read_bytes()
    weights = tmp_path / "w.safetensors"
    names = ['=HYPERLINK("http://x","y")', "+b", "-c", "@d", "e"]
    meta = {"model": "fd_mobilenet_025", "num_classes": 5, "class_names": names, **Preprocess(64).to_meta()}
    save_weights(create_model("fd_mobilenet_025", num_classes=5).state_dict(), weights, meta)
    code, _, err = run_cli(capsys, "predict", "--weights", weights, photo, "-o", photo)
    assert code == 2 and "is one of the input photos" in err and photo.read_bytes() == before
    code, _, err = run_cli(capsys, "predict", "--weights", weights, photo, "-o", tmp_path / "p.csv", "--topk", 5)
    assert code == 0, err
    cells = [c for row in (tmp_path / "p.csv").read_text().splitlines()[1:] for c in row.split(",")]
    assert not any(c.lstrip('"')[:1] in ("=", "+", "-", "@") for c in cells)
