"""Shared fixtures: the ImageNet sample and the converted official weights (made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdmobilenet.cli import main
from helpers import TINY, cifar_subset, shared_path


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    return shared_path("datasets/imagenet-sample-50")


@pytest.fixture(scope="session")
def official_weights(tmp_path_factory) -> dict[str, Path]:
    """The authors' 0.25x and 0.5x weights converted to safetensors: {'025': path, '050': path}."""
    from fdmobilenet.models import convert_authors_checkpoint as convert

    out = tmp_path_factory.mktemp("weights")
    paths = {}
    for tag, src in (("025", "0.25x-FDMobileNet-224.pth.tar"), ("050", "0.5x-FDMobileNet-224.pth.tar")):
        paths[tag] = out / f"fd_mobilenet_{tag}.safetensors"
        convert(shared_path(f"weights/official/{src}"), paths[tag])
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """40 CIFAR images (4 per class) and a finished 1-epoch run on them (the hostile-input tests)."""
    tmp = tmp_path_factory.mktemp("tiny")
    data = cifar_subset(tmp / "data", per_class=4)
    out = tmp / "done"
    assert main(["train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return data, out
