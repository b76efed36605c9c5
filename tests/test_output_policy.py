"""One output policy (issue 35): every command that writes a single file (``predict -o``, ``export -o``,
``quantize -o``, ``bench --plot``, ``convert``) writes a new path, replaces a file it wrote itself, and
replaces anything else only with ``--overwrite``; a link, a folder, a device node or a FIFO never. Refusals
happen before any model is built, so these tests take seconds."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from fdmobilenet import _outputs
from fdmobilenet._outputs import written_by_fdmobilenet
from fdmobilenet._utils import atomic_write_bytes, torch_threads
from fdmobilenet.cli import main
from helpers import FLOWERS_MINI, mini_photos, one_line_error, run, run_cli, shared_path

MINE = b"my notes, not a model\n"
DEV_FULL = Path("/dev/full")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The authors' 0.25x weights converted by ``convert``: a file this package wrote."""
    src = shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")
    dst = tmp_path_factory.mktemp("policy") / "fd025.safetensors"
    assert main(["convert", str(src), str(dst)]) == 0
    return dst


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def never_into_dev(monkeypatch) -> None:
    """A safety net for the device-node cases (the tests may run as root): a regression fails the test instead
    of replacing /dev/full with a regular file."""
    real_replace, real_mkstemp = os.replace, tempfile.mkstemp

    def in_dev(path: object) -> bool:
        return os.path.realpath(os.path.dirname(os.path.abspath(str(path)))) == "/dev"

    def replace(src, dst, *a, **k):
        assert not in_dev(dst), f"about to replace {dst}"
        return real_replace(src, dst, *a, **k)

    def mkstemp(*a, **k):
        assert not in_dev(os.path.join(str(k.get("dir") or "."), "x")), "a temporary file in /dev"
        return real_mkstemp(*a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# Each command with its single output file last; ``w``: a weights file of ours.
COMMANDS: dict[str, tuple[str, Callable[[Path], list[object]]]] = {
    "predict": ("out.csv", lambda w: ["predict", "--weights", w, mini_photos(1)[0], "--device", "cpu", "-o"]),
    "export-onnx": ("m.onnx", lambda w: ["export", "--weights", w, "--resolution", 32, "-o"]),
    "export-pte": ("m.pte", lambda w: ["export", "--weights", w, "--resolution", 32, "-o"]),
    "export-tflite": ("m.tflite", lambda w: ["export", "--weights", w, "--resolution", 32, "-o"]),
    "export-pt2": ("m.pt2", lambda w: ["export", "--weights", w, "--resolution", 32, "-o"]),
    "export-pt": ("m.pt", lambda w: ["export", "--weights", w, "--resolution", 32, "-o"]),
    "quantize": ("q.onnx", lambda w: ["quantize", "--weights", w, "--calibration", FLOWERS_MINI, "-o"]),
    "bench": (
        "lat.png",
        lambda w: [
            "bench",
            "--models",
            "fd_mobilenet_025@32",
            "--backends",
            "torch",
            "--runs",
            1,
            "--warmup",
            0,
            "--threads",
            1,
            "--plot",
        ],
    ),  # fmt: skip
    "convert": ("w.safetensors", lambda w: ["convert", w]),
}
FLAG = {"bench": "--plot", "convert": "dst"}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_users_file_is_refused_and_kept(cmd: str, weights: Path, tmp_path: Path, capsys) -> None:
    name, argv = COMMANDS[cmd]
    mine = tmp_path / name
    mine.write_bytes(MINE)
    rc, err = run(capsys, *argv(weights), mine)
    assert rc == 2, err
    one_line_error(err, FLAG.get(cmd, "-o"), str(mine), "not written by fdmobilenet", "--overwrite")
    assert mine.read_bytes() == MINE
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file either


def test_keep_fp32_file_follows_the_policy_too(weights: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "m.fp32.onnx").write_bytes(MINE)
    rc, err = run(capsys, "export", "--weights", weights, "-o", tmp_path / "m.onnx", "--int8", "--calibration",
                  FLOWERS_MINI, "--keep-fp32")  # fmt: skip
    assert rc == 2, err
    one_line_error(err, "--keep-fp32", "m.fp32.onnx", "--overwrite")
    assert (tmp_path / "m.fp32.onnx").read_bytes() == MINE and not (tmp_path / "m.onnx").exists()


def _special(kind: str, tmp_path: Path, name: str) -> Path:
    """A path of ``kind`` that no command may replace; a link and its target are the user's. ``device``: a
    character device with the command's file name (``/dev/full``'s numbers), where this user may make one."""
    path = tmp_path / name
    if kind == "dev-full":
        if not DEV_FULL.exists() or not stat.S_ISCHR(DEV_FULL.stat().st_mode):
            pytest.skip("no /dev/full here")
        return DEV_FULL
    if kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except OSError:
            pytest.skip("making a device node needs privileges this user lacks")
        return path
    if kind == "link":
        (tmp_path / "target").write_bytes(MINE)
        path.symlink_to(tmp_path / "target")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["link", "device", "dev-full", "fifo", "folder"])
@pytest.mark.parametrize("cmd", COMMANDS)
def test_links_devices_fifos_folders_are_refused_even_with_overwrite(
    cmd: str, kind: str, weights: Path, tmp_path: Path, capsys
) -> None:
    # predict -o FOLDER is left to the model's kind: a detector's output folder (its own marker rule), refused
    # for a classifier (these weights) once they are read, before any photo is
    name, argv = COMMANDS[cmd]
    path = _special(kind, tmp_path, name)
    before = os.lstat(path)
    rc, err = run(capsys, *argv(weights), path, "--overwrite")
    assert rc == 2, err
    said = {"link": "symbolic link", "device": "character device", "fifo": "named pipe", "folder": "folder"}
    if kind == "dev-full" and cmd.startswith(("export", "quantize")):
        one_line_error(err, str(path), "unknown suffix")  # the format comes from the suffix: refused first
    else:
        one_line_error(err, FLAG.get(cmd, "-o"), str(path), said.get(kind, "character device"))
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    if kind == "link":
        assert os.readlink(path) == str(tmp_path / "target") and (tmp_path / "target").read_bytes() == MINE


def test_files_it_wrote_are_rewritten_without_overwrite(weights: Path, tmp_path: Path, capsys) -> None:
    """convert, predict's CSV, export (.pt, .onnx) and bench's PNG run twice onto their own output."""
    src = shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")
    photos = mini_photos(2)
    runs = [
        ["convert", src, tmp_path / "w.safetensors"],
        ["predict", "--weights", weights, *photos, "--device", "cpu", "-o", tmp_path / "p.csv"],
        ["export", "--weights", weights, "--resolution", 32, "-o", tmp_path / "m.pt"],
        ["export", "--weights", weights, "--resolution", 32, "-o", tmp_path / "m.onnx"],
        ["bench", "--models", "fd_mobilenet_025@32", "--backends", "torch", "--runs", 1, "--warmup", 0, "--threads",
         1, "--plot", tmp_path / "lat.png"],
    ]  # fmt: skip
    for argv in runs:
        for _ in range(2):
            code, _, err = run_cli(capsys, *argv)
            assert code == 0, (argv[0], err)
        assert written_by_fdmobilenet(argv[-1]), argv[0]


def test_overwrite_replaces_a_users_regular_file(weights: Path, tmp_path: Path, capsys) -> None:
    src = shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")
    for argv, out in (
        (["convert", src], tmp_path / "w.safetensors"),
        (["predict", "--weights", weights, mini_photos(1)[0], "--device", "cpu", "-o"], tmp_path / "p.csv"),
    ):
        out.write_bytes(MINE)
        code, _, err = run_cli(capsys, *argv, out, "--overwrite")
        assert code == 0, err
        assert out.read_bytes() != MINE and written_by_fdmobilenet(out)


def test_the_atomic_writer_never_replaces_a_device_node(tmp_path: Path) -> None:
    """The last line of defence, below every command: no writer turns a device node into a regular file."""
    if not DEV_FULL.exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(FileExistsError, match="character device"):
        atomic_write_bytes(DEV_FULL, b"x")
    assert stat.S_ISCHR(DEV_FULL.stat().st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="named pipe"):
        atomic_write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# --- recognising what this package wrote -----------------------------------------------------------------


def test_recognises_each_format_it_writes_and_nothing_else(tmp_path: Path) -> None:
    from fdmobilenet.deploy.executorch import META_METHOD, lower_to_pte
    from fdmobilenet.deploy.metadata import export_metadata
    from fdmobilenet.deploy.torch_formats import _META_FILE, export_pt2, export_torchscript
    from fdmobilenet.models import create_model
    from fdmobilenet.weights import META_KEY, save_weights

    assert (_outputs.WEIGHTS_META_KEY, _outputs.EXTRA_FILE) == (META_KEY, _META_FILE)
    model = create_model("fd_mobilenet_025", num_classes=3).eval()
    meta = {"model": "fd_mobilenet_025", "num_classes": 3, "class_names": ["a", "b", "c"]}
    full = export_metadata(meta, 32, model)
    assert full["producer"].startswith(f"{_outputs.PRODUCER} ")
    save_weights(model.state_dict(), tmp_path / "w.safetensors", meta)
    export_torchscript(model, tmp_path / "m.pt", meta, 32)
    export_pt2(model, tmp_path / "m.pt2", meta, 32)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).eval()
    program = torch.export.export(tiny, (torch.zeros(1, 3, 4, 4),))
    lower_to_pte(program, tmp_path / "m.pte", full)  # the writer of every .pte export and quantize make
    assert META_METHOD.encode() in (tmp_path / "m.pte").read_bytes()
    for name in ("w.safetensors", "m.pt", "m.pt2", "m.pte"):
        assert written_by_fdmobilenet(tmp_path / name), name

    # the same formats without our metadata: someone else's
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    torch.jit.save(torch.jit.script(tiny), str(tmp_path / "theirs.pt"))
    with zipfile.ZipFile(tmp_path / "fake.pt2", "w") as z:  # our file name, another producer
        z.writestr("archive/extra/fdmobilenet.json", json.dumps({"producer": "someone else"}))
    from executorch.exir import to_edge

    atomic_write_bytes(tmp_path / "theirs.pte", to_edge(program).to_executorch().buffer)
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_bytes(MINE)
    for name in ("theirs.safetensors", "theirs.pt", "fake.pt2", "theirs.pte", "empty.onnx", "text.onnx"):
        assert not written_by_fdmobilenet(tmp_path / name), name


def test_recognises_onnx_png_and_csv(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from fdmobilenet.deploy.metadata import set_onnx_metadata

    def graph_file(name: str, meta: dict | None) -> Path:
        node = helper.make_node("Relu", ["x"], ["y"])
        vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy"]
        proto = helper.make_model(helper.make_graph([node], "g", [vi[0]], [vi[1]]))
        if meta is not None:
            set_onnx_metadata(proto, meta)  # what every ONNX writer of the package calls
        onnx.save(proto, str(tmp_path / name))
        return tmp_path / name

    assert written_by_fdmobilenet(graph_file("ours.onnx", {"model": "m", "producer": "fdmobilenet 9.9"}))
    assert not written_by_fdmobilenet(graph_file("theirs.onnx", None))
    assert not written_by_fdmobilenet(graph_file("other.onnx", {"producer": "pytorch 2.9"}))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fdmobilenet._utils import save_figure

    save_figure(plt.figure(), tmp_path / "ours.png")
    plt.figure().savefig(tmp_path / "theirs.png")
    plt.close("all")
    assert written_by_fdmobilenet(tmp_path / "ours.png")
    assert not written_by_fdmobilenet(tmp_path / "theirs.png")

    header = "path,class1,index1,prob1,class2,index2,prob2,error\n"
    for name, text, ours in (
        ("ours.csv", header + "a.jpg,cat,1,0.9,dog,2,0.1,\n", True),
        ("reordered.csv", "path,class1,prob1,index1,error\n", False),
        ("theirs.csv", "path,label\n", False),
        ("skipped.csv", "path,class2,index2,prob2,error\n", False),
    ):
        (tmp_path / name).write_text(text)
        assert written_by_fdmobilenet(tmp_path / name) is ours, name
    # a synthetic .tflite layout (LiteRT is its own extra): identifier TFL3 and our metadata's JSON inside
    flatbuffer = b"\x1c\0\0\0TFL3" + b"\0" * 40
    (tmp_path / "m.tflite").write_bytes(flatbuffer + json.dumps({"producer": "fdmobilenet 9"}).encode())
    (tmp_path / "t.tflite").write_bytes(flatbuffer + b'{"producer": "tflite"}')
    assert written_by_fdmobilenet(tmp_path / "m.tflite") and not written_by_fdmobilenet(tmp_path / "t.tflite")
