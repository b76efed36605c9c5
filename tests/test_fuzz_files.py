"""A small fuzzer over the files the package reads back (issue 23): weights metadata, a prepared dataset's
meta.json, split.json, config.json and recipe YAML. Whatever they hold, reading them ends in success or in a
one-line error (a ValueError, which the CLI exits 2 with), never another exception, and in bounded memory.
A bounded number of examples per file keeps this to seconds in ``make test``."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fdmobilenet.train.config import FIELDS  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
ALLOWED = (ValueError, FileNotFoundError)  # what the CLI turns into one line and exit 2

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["fd_mobilenet_025", "fd_mobilenet", "small", "\x1b[2J", "=HYPERLINK(1)", "a\nb"])
)
JSON = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dumps(value) -> str:
    return json.dumps(value, allow_nan=True)


def _near(keys: list[str], valid: dict) -> st.SearchStrategy[dict]:
    """A valid object with some keys removed, replaced by fuzz, or added."""
    return st.builds(
        lambda drop, change, extra: {
            **{k: v for k, v in valid.items() if k not in drop},
            **change,
            **extra,
        },
        st.sets(st.sampled_from(sorted(valid)), max_size=3),
        st.dictionaries(st.sampled_from(keys), JSON, max_size=3),
        st.dictionaries(st.text(max_size=6), JSON, max_size=2),
    )


@pytest.fixture(scope="module")
def memory_bound():
    before = _peak_mb()
    yield
    assert _peak_mb() - before < 600, "fuzzed files cost more memory than a small model"


# --- weights metadata ---------------------------------------------------------------------------------

_WEIGHTS_KEYS = ["model", "num_classes", "class_names", "synsets", "model_kwargs", "resolution", "mean", "std",
                 "crop_pct", "task", "score_thresh", "detections_per_img", "interpolation"]  # fmt: skip
_VALID_META = {"model": "fd_mobilenet_025", "num_classes": 3, "class_names": ["a", "b", "c"], "resolution": 32}


@pytest.fixture(scope="module")
def tensors():
    from fdmobilenet.models import create_model

    return {k: v.contiguous() for k, v in create_model("fd_mobilenet_025", num_classes=3).state_dict().items()}


@FUZZ
@given(meta=_near(_WEIGHTS_KEYS, _VALID_META) | JSON)
def test_fuzz_weights_metadata(memory_bound, tensors, meta) -> None:
    from safetensors.torch import save_file

    from fdmobilenet.models.pretrained import build_from_weights

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        save_file(tensors, str(path), metadata={"fdmobilenet": _dumps(meta)})
        try:
            build_from_weights(path)
        except ALLOWED as e:
            assert len(str(e)) < 3000


# --- a prepared dataset's meta.json ------------------------------------------------------------------

_VALID_PACKED = {"format": "fdmobilenet-packed-v1", "classes": ["a", "b"], "shards": 1, "n_images": 2}


@FUZZ
@given(meta=_near(["format", "classes", "shards", "n_images"], _VALID_PACKED) | JSON)
def test_fuzz_prepared_meta_json(memory_bound, meta) -> None:
    from fdmobilenet.data.packed import PackedFolder, is_packed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "shard-00000.bin").write_bytes(b"\xff" * 20)
        np.save(root / "shard-00000.idx.npy", np.array([[0, 10, 0], [10, 10, 1]], dtype=np.int64))
        (root / "meta.json").write_text(_dumps(meta))
        try:
            if is_packed(root):
                PackedFolder.open(root)
        except ALLOWED as e:
            assert len(str(e)) < 3000


# --- split.json ---------------------------------------------------------------------------------------

_VALID_SPLIT = {"root": "/data", "val_split": 0.2, "seed": 0, "val": ["a/1.png"]}


@FUZZ
@given(record=_near(["root", "val_split", "seed", "val"], _VALID_SPLIT) | JSON)
def test_fuzz_split_json(memory_bound, record) -> None:
    from fdmobilenet.data.splits import read_split

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.json"
        path.write_text(_dumps(record))
        try:
            assert isinstance(read_split(path), dict)
        except ALLOWED as e:
            assert len(str(e)) < 3000


# --- config.json on resume --------------------------------------------------------------------------


@FUZZ
@given(config=_near(sorted(FIELDS), {"recipe": "small", "epochs": 1, "lr": 0.1}) | JSON)
def test_fuzz_config_json(memory_bound, config) -> None:
    from fdmobilenet.cli.train import config_from_args

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(_dumps(config))
        args = argparse.Namespace(recipe=None, resume=True, out=tmp, data=tmp + "-data")
        try:
            config_from_args(args)
        except ALLOWED as e:
            assert len(str(e)) < 3000


# --- recipe YAML ----------------------------------------------------------------------------------------

_YAML_BITS = st.sampled_from(
    ["epochs: 1", "lr: .nan", "crop-scale: [0.5, 1]", "&a [1, 2]", "*a", "b: &b [*a, *a]", "[", "{a: ", "- 1",
     "recipe: small", "!!python/object:os.system", "model: '\\x1b'", ": :", "\n", "  ", "? x", "|", "'", '"']
)  # fmt: skip


@FUZZ
@given(
    text=st.builds(lambda d: __import__("yaml").safe_dump(d), st.dictionaries(st.sampled_from(sorted(FIELDS)), JSON))
    | st.lists(_YAML_BITS, max_size=12).map("\n".join)
    | st.lists(_YAML_BITS, max_size=20).map(" ".join)
)
def test_fuzz_recipe_yaml(memory_bound, text) -> None:
    from fdmobilenet.train.config import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(text)
        try:
            assert isinstance(load_recipe(str(path)), dict)
        except ALLOWED as e:
            assert len(str(e)) < 3000
