"""Hostile files, round two (issue 23): what is read from a user's file is validated before anything acts on
it (``_schema``), memory is bounded by what the file honestly holds, the package never deletes or overwrites
what it did not write, and text from a file is printed as data. Each failure is one line with exit code 2."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdmobilenet.cli import main
from fdmobilenet.models import create_model
from fdmobilenet.weights import save_weights
from helpers import TINY, cifar_subset, one_line_error, run, run_cli


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(img)
    return img


def _weights(path: Path, meta: object, classifier: bool = True) -> Path:
    """fd_mobilenet_025 weights (3 classes) under any metadata, written as raw JSON (even what we never write)."""
    from safetensors.torch import save_file

    sd = create_model("fd_mobilenet_025", num_classes=3).state_dict()
    sd = {k: v.contiguous() for k, v in sd.items() if classifier or not k.startswith("classifier.")}
    save_file(sd, str(path), metadata={"format": "pt", "fdmobilenet": json.dumps(meta)})
    return path


# --- 1. one validation layer: weights metadata ------------------------------------------------------

_M = {"model": "fd_mobilenet_025", "num_classes": 3}


@pytest.mark.parametrize(
    ("meta", "says", "classifier"),
    [
        ([1, 2, 3], "JSON object", True),  # was AttributeError
        ({**_M, "model_kwargs": "abc"}, "model_kwargs", True),  # was TypeError
        ({**_M, "num_classes": 2.5}, "num_classes", True),
        ({**_M, "class_names": {"a": 1}}, "class_names", True),
        ({**_M, "class_names": ["x" * 100_000, "b", "c"]}, "class_names", True),
        ({"model": "fd_mobilenet", "model_kwargs": {"width": 18}}, "width", True),  # was 2.79 GB
        ({"model": "fd_mobilenet", "model_kwargs": {"width": 12.0}}, "do not fit", True),  # built on meta first
        ({**_M, "num_classes": 2_500_000}, "num_classes", False),  # was 2.97 GB
        ({**_M, "num_classes": 90_000}, "do not fit", False),
        ({**_M, "resolution": [1]}, "resolution", True),
    ],
)
def test_weights_metadata_is_checked_before_a_model_is_built(
    tmp_path: Path, photo: Path, capsys, meta, says: str, classifier: bool
) -> None:
    path = _weights(tmp_path / "w.safetensors", meta, classifier)
    before = peak_mb()
    rc, err = run(capsys, "predict", "--weights", path, photo)
    assert rc == 2, err
    one_line_error(err, str(path), says)
    assert len(err) < 2000  # an excerpt, never the value
    assert peak_mb() - before < 400


def test_detector_metadata_that_disagrees_with_its_class_head(tmp_path: Path) -> None:
    from fdmobilenet.models.detection import detector_metadata
    from fdmobilenet.models.pretrained import build_from_weights

    m = create_model("ssdlite_fd_mobilenet_025", num_classes=3)
    path = tmp_path / "d.safetensors"
    save_weights(m.state_dict(), path, {**detector_metadata(m), "num_classes": 90_000})
    before = peak_mb()
    with pytest.raises(ValueError, match="num_classes 90000"):
        build_from_weights(path)
    assert peak_mb() - before < 400


def test_weights_that_would_unpickle_code_say_why_in_one_line(tmp_path: Path, photo: Path, capsys) -> None:
    import pickle

    import torch

    path = tmp_path / "w.pth.tar"
    torch.save({"state_dict": {}, "extra": pickle.loads(pickle.dumps(Path("x")))}, path)
    rc, err = run(capsys, "convert", path, tmp_path / "o.safetensors")
    assert rc == 2
    one_line_error(err, str(path), "could run code")
    assert "Re-running" not in err


def test_compressed_checkpoint_records_are_refused_before_inflating(tmp_path: Path, capsys) -> None:
    """torch.save stores records uncompressed; a deflated 2.4 MB record inflated to 2.9 GB."""
    import zipfile

    import torch

    plain = tmp_path / "plain.pth.tar"
    torch.save({"state_dict": create_model("fd_mobilenet_025").state_dict()}, plain)
    bomb = tmp_path / "bomb.pth.tar"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    rc, err = run(capsys, "convert", bomb, tmp_path / "o.safetensors")
    assert rc == 2
    one_line_error(err, str(bomb), "compressed")


# --- 1. prepared datasets, split.json, config.json --------------------------------------------------


@pytest.fixture(scope="module")
def packed(tiny, tmp_path_factory) -> Path:
    data, _ = tiny
    dst = tmp_path_factory.mktemp("packed") / "p"
    assert main(["prepare", str(data), str(dst), "--short-side", "32", "--workers", "1"]) == 0
    return dst


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: m.pop("shards"), "shards"),  # was KeyError
        (lambda m: m.update(classes="abc"), "classes"),  # was TypeError
        (lambda m: m.update(classes=["a\x1b[2J"] * 10), "classes"),
        (lambda m: m.update(shards=10**12), "shards"),
    ],
)
def test_damaged_prepared_meta_is_one_line(packed: Path, tmp_path: Path, change, says: str) -> None:
    from fdmobilenet.data.packed import PackedFolder

    root = tmp_path / "p"
    shutil.copytree(packed, root)
    meta = json.loads((root / "meta.json").read_text())
    change(meta)
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=says) as e:
        PackedFolder.open(root)
    assert str(root / "meta.json") in str(e.value)


@pytest.mark.parametrize("rows", [np.arange(6, dtype=np.int64), np.zeros((2, 3)), np.array([[0, 10**9, 0]])])
def test_damaged_shard_index_is_one_line(packed: Path, tmp_path: Path, rows: np.ndarray) -> None:
    from fdmobilenet.data.packed import PackedFolder

    root = tmp_path / "p"
    shutil.copytree(packed, root)
    np.save(root / "shard-00000.idx.npy", rows.astype(rows.dtype))
    with pytest.raises(ValueError, match="shard-00000.idx.npy"):
        PackedFolder.open(root)


def test_a_stray_meta_json_is_not_a_prepared_dataset(tiny, tmp_path: Path) -> None:
    from fdmobilenet.data.packed import is_packed

    data, _ = tiny
    (tmp_path / "meta.json").write_text("[1, 2]")  # was AttributeError
    assert not is_packed(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": "fdmobilenet-packed-v1", "classes": 3}')
    with pytest.raises(ValueError, match="classes"):
        is_packed(tmp_path)
    (tmp_path / "meta.json").write_text('{"a": ')
    with pytest.raises(ValueError, match="meta.json"):
        is_packed(tmp_path)


@pytest.mark.parametrize("content", ["[]", '{"root": 1}', '{"root": "x", "val_split": 0.2, "seed": 0, "val": "abc"}'])
def test_damaged_split_json_is_one_line(tiny, tmp_path: Path, capsys, content: str) -> None:
    data, done = tiny
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "split.json").write_text(content)
    rc, err = run(capsys, "eval", "--weights", done / "best.safetensors", "--split", run_dir, "--threads", "1")
    assert rc == 2, err
    one_line_error(err, str(run_dir / "split.json"))


@pytest.mark.parametrize("content", ["[1, 2]", '{"epochs": 1}', '{"recipe": "small", "epochs": "x"}'])
def test_damaged_config_json_on_resume_is_one_line(tiny, tmp_path: Path, capsys, content: str) -> None:
    data, done = tiny
    out = tmp_path / "run"
    shutil.copytree(done, out)
    (out / "config.json").write_text(content)
    rc, err = run(capsys, "train", "--data", data, "--out", out, "--resume")
    assert rc == 2, err
    one_line_error(err, str(out / "config.json"))


def test_resume_with_another_width_is_one_line(tiny, tmp_path: Path, capsys) -> None:
    data, done = tiny
    out = tmp_path / "run"
    shutil.copytree(done, out)
    rc, err = run(capsys, "train", "--data", data, "--out", out, "--resume", "--model", "fd_mobilenet_050")
    assert rc == 2, err
    one_line_error(err, "--model", "config.json")


# --- 2. YAML with limits ----------------------------------------------------------------------------

_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    + "crop-scale: [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("epochs: " + "[" * 20_000 + "\n", "nested"),  # was RecursionError
        ("epochs: " + "{a: " * 5_000 + "\n", "nested"),
        (_BOMB, "alias"),  # was >= 5 GB and a 1.4 GB error line
        ("recipe: " + _BOMB.split("crop-scale: ")[1], "recipe"),
        ("crop-scale: &a [1, *a]\n", "recursive"),
        ('model: "\\x1b[2Jfd"\n', "printable"),
        ('"\\x1b]0;title\\x07": 1\n', "unknown"),
        ("epochs: 1\n" + "#" * (2 * 2**20) + "\n", "bytes"),
    ],
)
def test_hostile_recipe_yaml_is_one_short_line(tmp_path: Path, capsys, text: str, says: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    before = peak_mb()
    rc, err = run(capsys, "train", "--recipe", path, "--data", tmp_path, "--out", tmp_path / "o")
    assert rc == 2
    one_line_error(err, str(path), says)
    assert len(err) < 1500 and "\x1b" not in err and "\x07" not in err
    assert peak_mb() - before < 200


# --- 3. numbers and paths of the flags ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--lr", "1e300"],  # was SGD's overflow RuntimeError
        ["train", "--lr", "nan"],
        ["train", "--epochs", "10000000"],
        ["train", "--weight-decay", "1e30"],
        ["compare", "--lr", "1e300", "--seeds", "1", "--budgets", "12"],
        ["compare", "--seeds", "-1"],  # was "0 runs", then IndexError
        ["compare", "--budgets", "nan"],  # planned "fd_mobilenet-nanM-w0.02"
        ["compare", "--budgets", "1e300", "--seeds", "1"],
        ["compare", "--epochs", "-5", "--seeds", "1", "--budgets", "12"],
    ],
)
def test_numeric_flags_are_checked_before_any_work(tmp_path: Path, capsys, argv: list[str]) -> None:
    data = tmp_path / "data"  # not even a dataset: the flag is refused before it is read
    data.mkdir()
    rc, err = run(capsys, *argv, "--data", data, "--out", tmp_path / "o")
    assert rc == 2, err
    one_line_error(err, argv[1])
    assert not (tmp_path / "o").exists()


def test_out_inside_data_is_refused(tiny, tmp_path: Path, capsys) -> None:
    data = cifar_subset(tmp_path / "data", per_class=2)
    before = sorted(p.name for p in data.iterdir())
    rc, err = run(capsys, "train", "--data", data, *TINY, "--epochs", "1", "--out", data / "run")
    assert rc == 2, err
    one_line_error(err, "--out", "--data")
    assert sorted(p.name for p in data.iterdir()) == before


# --- 4. never delete or overwrite what the package did not write --------------------------------------


def test_train_refuses_a_folder_of_someone_elses_files(tiny, tmp_path: Path, capsys) -> None:
    data, _ = tiny
    out = tmp_path / "mine"
    out.mkdir()
    files = {"metrics.jsonl": b'{"my": "numbers"}\n', "bad_images.txt": b"mine\n", ".report.docx.tmp": b"draft"}
    for name, content in files.items():
        (out / name).write_bytes(content)
    for resume in ([], ["--resume"]):
        rc, err = run(capsys, "train", "--data", data, *TINY, "--epochs", "1", "--out", out, *resume)
        assert rc == 2, err
        one_line_error(err, str(out), "--out", "did not write")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # not even a lock file left


def test_a_new_run_folder_carries_our_marker(tiny) -> None:
    _, done = tiny
    assert (done / ".fdmobilenet-run").is_file()


def test_convert_onto_its_own_input_is_refused(tmp_path: Path, capsys) -> None:
    import torch

    src = tmp_path / "w.pth.tar"
    torch.save({"state_dict": create_model("fd_mobilenet_025").state_dict()}, src)
    before = src.read_bytes()
    rc, err = run(capsys, "convert", src, tmp_path / "." / "w.pth.tar")
    assert rc == 2
    one_line_error(err, "input file itself")
    assert src.read_bytes() == before


def test_prepare_never_deletes_another_programs_files(tiny, tmp_path: Path, capsys) -> None:
    data, _ = tiny
    dst = tmp_path / "p"
    dst.mkdir()
    theirs = dst / ".download.part.tmp"
    theirs.write_bytes(b"theirs")
    rc, err = run(capsys, "prepare", data, dst, "--short-side", "32", "--workers", "1")
    assert rc == 2
    one_line_error(err, str(dst), "did not write")
    assert [p.name for p in dst.iterdir()] == [theirs.name]
    theirs.unlink()
    assert main(["prepare", str(data), str(dst), "--short-side", "32", "--workers", "1"]) == 0
    theirs.write_bytes(b"theirs")  # beside a prepare of ours, resumed: still never touched
    ours = dst / ".fdm-tmp.shard-00000.bin.abcd1234.tmp"
    ours.write_bytes(b"half")
    assert main(["prepare", str(data), str(dst), "--short-side", "32", "--workers", "1"]) == 0
    assert theirs.read_bytes() == b"theirs" and not ours.exists()


# --- 5. untrusted text is data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["\x1b]0;owned\x07cat", "\x1b[2J\x1b[Hdog", "ship\nFAKE-LINE 99.99% ship", "a\u202egnp.exe", "x" * 300]
)
def test_class_names_with_control_characters_are_refused_at_load(
    tmp_path: Path, photo: Path, capsys, name: str
) -> None:
    path = _weights(tmp_path / "w.safetensors", {**_M, "class_names": [name, "b", "c"]})
    code, out, err = run_cli(capsys, "predict", "--weights", path, photo)
    assert code == 2
    one_line_error(err, str(path), "class_names[0]")
    assert not any(c in out + err for c in "\x1b\x07\u202e") and "FAKE-LINE" not in out


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch) -> None:
    """write() and fsync() raise ENOSPC without a file name: the error names the file, no temp file is left."""
    import errno
    import os

    from fdmobilenet._utils import atomic_write_bytes

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "report.csv", b"x")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "report.csv")
    assert list(tmp_path.iterdir()) == []


def test_export_removes_its_own_orphan_temp_files_only(tmp_path, capsys) -> None:
    """A killed export leaves ``.fdm-tmp.NAME.*.tmp`` beside its output: the next export to that file removes
    it; another program's temp file is kept."""
    from fdmobilenet.preprocess import Preprocess

    weights = tmp_path / "w.safetensors"
    meta = {"model": "fd_mobilenet_025", "num_classes": 3, "class_names": ["a", "b", "c"], **Preprocess(64).to_meta()}
    save_weights(create_model("fd_mobilenet_025", num_classes=3).state_dict(), weights, meta)
    ours, theirs = tmp_path / ".fdm-tmp.m.onnx.abc123.tmp", tmp_path / "m.onnx.download.tmp"
    ours.write_bytes(b"half")
    theirs.write_bytes(b"keep")
    code, _, err = run_cli(capsys, "export", "--weights", weights, "-o", tmp_path / "m.onnx", "--resolution", 64)
    assert code == 0, err
    assert not ours.exists() and theirs.read_bytes() == b"keep" and (tmp_path / "m.onnx").is_file()


# --- 2. resources bounded by what a file can honestly need: foreign graphs, decoded images -----------


def _graph_asking_for(path: Path, floats: int) -> Path:
    """A 3-class 'classifier' ONNX file of a few hundred bytes whose logits depend on a ConstantOfShape of
    ``floats`` floats (what an attacker's graph does; ``fdmobilenet export`` never writes one)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [2], [1, floats])),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("ReduceSum", ["big"], ["zero"], keepdims=1),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "zero"], ["logits"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_foreign_graph_runs_under_a_memory_cap_and_says_so(tmp_path: Path, photo: Path) -> None:
    import subprocess
    import sys

    from helpers import env

    pytest.importorskip("onnxruntime")
    bomb = _graph_asking_for(tmp_path / "bomb.onnx", 800_000_000)  # 3.2 GB; it took 3.23 GB and exited 0
    small = _graph_asking_for(tmp_path / "small.onnx", 1000)
    child = (
        "import resource, sys; from fdmobilenet.cli import main; code = main(sys.argv[1:]); "
        "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024); sys.exit(code)"
    )

    def predict(onnx_file: Path, cap: str | None = None) -> subprocess.CompletedProcess:
        e = {**env(), **({"FDM_ORT_MAX_MEMORY": cap} if cap else {})}
        argv = [sys.executable, "-c", child, "predict", "--exported", str(onnx_file), str(photo)]
        return subprocess.run(argv, env=e, capture_output=True, text=True, timeout=120)

    r = predict(bomb)
    assert r.returncode == 2, r.stderr[-2000:]
    one_line_error(r.stderr, "bomb.onnx", "2 GiB memory cap", "FDM_ORT_MAX_MEMORY")
    assert "not written by `fdmobilenet export`" in r.stderr and "[E:onnxruntime" not in r.stderr
    assert int(r.stdout.split("peak")[-1]) < 2500  # MB: refused, never allocated (it took 3.23 GB); ~0.7 alone
    r = predict(small)  # the same kind of file, asking for little: it runs, and the user is told what it is
    assert r.returncode == 0, r.stderr[-2000:]
    assert "runs at your own risk" in r.stderr and "2 GiB" in r.stderr


def test_the_memory_cap_setting_is_a_size(monkeypatch) -> None:
    from fdmobilenet.deploy.runtime import memory_cap

    monkeypatch.setenv("FDM_ORT_MAX_MEMORY", "512MiB")
    assert memory_cap() == 512 * 2**20
    for bad, says in (("lots", "not a size"), ("1MiB", "under 16 MiB")):
        monkeypatch.setenv("FDM_ORT_MAX_MEMORY", bad)
        with pytest.raises(ValueError, match=says):
            memory_cap()


def test_decoding_is_bounded_by_bytes_per_pixel_not_pixels(tmp_path: Path, monkeypatch) -> None:
    from fdmobilenet.data import images
    from fdmobilenet.data.images import BadImageError, load_image

    grey = np.linspace(0, 1, 60 * 50, dtype=np.float32).reshape(50, 60)
    Image.fromarray(grey, mode="F").save(tmp_path / "float.tif")  # 4 bytes a pixel
    Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "rgb.png")  # 3
    Image.fromarray((grey * 65535).astype(np.uint16)).save(tmp_path / "grey16.png")  # 2
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 3 * 60 * 50)  # an RGB image of this size, no more
    with pytest.raises(BadImageError, match=r"60x50 F image decodes to .* MB, over the"):
        load_image(tmp_path / "float.tif")
    rgb = np.asarray(load_image(tmp_path / "rgb.png"))
    for name in ("grey16.png", "float.tif"):  # within the limit: the same 8-bit picture, scaled, not clipped
        if name == "float.tif":
            monkeypatch.setattr(images, "MAX_DECODED_BYTES", 4 * 60 * 50)
        got = np.asarray(load_image(tmp_path / name))
        assert got.shape == (50, 60, 3) and np.abs(got.astype(int) - rgb.astype(int)).max() <= 1
