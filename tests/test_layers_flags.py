"""The library speaks Python: below ``cli/`` errors name parameters (``_errors``), and only the command line
turns them into flags, through one map (``cli.flag_of``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from fdmobilenet._errors import NamesParameters, ParameterError, ParameterPathError, StoppedError
from fdmobilenet.cli import flag_of, in_flags, main

SRC = Path(__file__).resolve().parents[1] / "src" / "fdmobilenet"
FLAG = re.compile(r"(?<![\w-])--[a-z]|\bfdmobilenet [a-z-]+:")
PENDING: set[str] = set()  # files allowed to speak in flags: none


def _skipped(tree: ast.AST, rel: str) -> set[int]:
    """Ids of the string constants allowed to name flags: docstrings (they document the CLI mapping),
    and in train/config.py the ``_f(default, help)`` texts, which *are* the ``train`` flags' help."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if rel == "train/config.py" and isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_f":
            skip.update(id(n) for arg in node.args for n in ast.walk(arg))
    return skip


def _flag_strings() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/") or rel in PENDING:
            continue
        tree = ast.parse(path.read_text())
        skip = _skipped(tree, rel)
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            if is_text and FLAG.search(node.value):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_flags_or_command_prefixes_below_cli() -> None:
    assert _flag_strings() == []


def test_one_map_from_parameters_to_flags() -> None:
    assert flag_of("calibration") == "--calibration"
    assert flag_of("calibration_size") == "--calibration-size"
    assert flag_of("output") == "-o" and flag_of("fmt") == "--format" and flag_of("model_name") == "--model"
    assert in_flags("pass `verify_data` DIR") == "pass --verify-data DIR"


def test_errors_name_parameters_and_the_cli_renders_flags() -> None:
    e = ParameterError("calibration", "`int8` needs `calibration` DIR")
    assert isinstance(e, ValueError) and e.param == "calibration" and e.params == ["int8", "calibration"]
    assert str(e) == "`int8` needs `calibration` DIR"
    assert e.render(flag_of) == "--int8 needs --calibration DIR"
    missing = ParameterPathError("split", "`split` x: no split.json")
    assert isinstance(missing, FileNotFoundError) and isinstance(missing, NamesParameters)
    stopped = StoppedError("lower `lr`", 3)
    assert stopped.exit_code == 3 and stopped.render(flag_of) == "lower --lr"


def test_export_config_names_fields_not_flags(tmp_path: Path) -> None:
    from fdmobilenet.deploy import ExportConfig, export_weights

    with pytest.raises(ParameterError, match="`int8` needs `calibration`") as info:
        export_weights(tmp_path / "w.safetensors", tmp_path / "m.onnx", ExportConfig(int8=True))
    assert info.value.param == "calibration" and "--" not in str(info.value)
    with pytest.raises(ParameterError, match="`calibration` is only used with `int8`"):
        ExportConfig(calibration=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="`calibration` folder"):
        ExportConfig(int8=True, calibration=str(tmp_path / "absent"))
    with pytest.raises(ParameterError) as info:
        ExportConfig(opset=3)
    assert info.value.param == "opset"
    with pytest.raises(ParameterError, match="`keep_fp32`"):
        ExportConfig(int8=True, calibration=str(tmp_path), keep_fp32=True).check_format("executorch")
    with pytest.raises(ParameterError, match="`int8` writes"):
        ExportConfig(int8=True, calibration=str(tmp_path)).check_format("torchscript")
    with pytest.raises(ParameterError) as info:
        ExportConfig(calibration_size=0)
    assert info.value.param == "calibration_size"


def test_cli_still_speaks_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(tmp_path / "w.safetensors"), "-o", str(out), "--int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdmobilenet export: error: --int8 needs --calibration DIR") and "`" not in err
    assert main(["export", "--weights", "w.safetensors", "-o", str(tmp_path / "m.xyz")]) == 2
    assert capsys.readouterr().err.startswith("fdmobilenet export: error: -o ")


def test_bench_backends_derive_from_the_runtimes() -> None:
    from fdmobilenet.deploy import bench, runtime

    for r in runtime.BACKENDS:
        assert r in bench.BACKENDS and f"{r}-int8" in bench.BACKENDS
    assert bench.BACKENDS == ("torch", "torch-compile", "ort", "ort-int8", "openvino", "openvino-int8", "ort-raw",
                              "executorch", "executorch-int8")  # fmt: skip
