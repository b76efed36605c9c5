"""Shared fixtures: where ``../shared`` is, and converted official weights (made once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FDM_SHARED", REPO.parent / "shared"))


def require(p: Path) -> Path:
    """A shared file or folder: missing is a failure in CI (CI=true) and a skip elsewhere."""
    if not p.exists():
        msg = f"shared data {p} is missing (set FDM_SHARED to the shared folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def shared_path(rel: str) -> Path:
    """``require`` for a path relative to the shared folder."""
    return require(SHARED / rel)


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    return shared_path("datasets/imagenet-sample-50")


@pytest.fixture(scope="session")
def official_weights(tmp_path_factory) -> dict[str, Path]:
    """The authors' 0.25x and 0.5x weights converted to safetensors: {'025': path, '050': path}."""
    from fdmobilenet.weights import convert

    out = tmp_path_factory.mktemp("weights")
    paths = {}
    for tag, src in (("025", "0.25x-FDMobileNet-224.pth.tar"), ("050", "0.5x-FDMobileNet-224.pth.tar")):
        paths[tag] = out / f"fd_mobilenet_{tag}.safetensors"
        convert(shared_path(f"weights/official/{src}"), paths[tag])
    return paths
