"""``pretrained=True`` without a converted file: the authors' release fetched (pinned URL, checksums),
converted once and cached; offline and tampered downloads fail clearly and leave nothing behind.
The network is never used: the "server" is a file:// folder or http.server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from fdmobilenet import create_model
from fdmobilenet.models import hub
from helpers import shared_path


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 over a folder; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_release_table_is_pinned():
    assert hub.AUTHORS_COMMIT in hub.BASE_URL and len(hub.AUTHORS_COMMIT) == 40
    assert set(hub.RELEASES) >= {"fd_mobilenet_025", "fd_mobilenet_050"}


def test_fetch_over_http_converts_once_and_matches_the_local_conversion(served, tmp_path, monkeypatch, capfd):
    root, url = served
    src = shared_path("weights/official/0.25x-FDMobileNet-224.pth.tar")
    (root / src.name).write_bytes(src.read_bytes())
    monkeypatch.setenv("FDM_WEIGHTS_URL", url)
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    m = create_model("fd_mobilenet_025", pretrained=True).eval()
    err = capfd.readouterr().err
    assert f"downloading {url}{src.name}" in err and "\r" not in err  # a plain line in a log, no bar
    cached = list((tmp_path / "torch" / "hub" / "fdmobilenet").glob("*.safetensors"))
    assert len(cached) == 1 and (tmp_path / "torch" / "hub" / "checkpoints" / src.name).is_file()
    ref = create_model("fd_mobilenet_025", pretrained=src).eval()  # the authors' file, read directly
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(m(x), ref(x))
    assert len(m.pretrained_cfg["class_names"]) == 1000
    (root / src.name).unlink()  # the second call needs no server
    create_model("fd_mobilenet_025", pretrained=True)


def test_fetch_from_a_file_url_with_timm_cache_dir(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import fdmobilenet.timm_support  # noqa: F401

    folder = shared_path("weights/official")
    monkeypatch.setenv("FDM_WEIGHTS_URL", folder.resolve().as_uri())
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    m = timm.create_model("fd_mobilenet_050", pretrained=True, num_classes=3, cache_dir=tmp_path)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 3)  # new head, pretrained backbone
    assert list((tmp_path / "fdmobilenet").glob("fd_mobilenet_050-*.safetensors"))


def test_checksum_mismatch_fails_and_keeps_nothing(served, tmp_path, monkeypatch):
    root, url = served
    (root / hub.RELEASES["fd_mobilenet_025"].file).write_bytes(b"not the authors' file")
    monkeypatch.setenv("FDM_WEIGHTS_URL", url)
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    with pytest.raises(hub.WeightsUnavailable, match="checksum mismatch"):
        create_model("fd_mobilenet_025", pretrained=True, cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_offline_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FDM_WEIGHTS_URL", "http://127.0.0.1:9/")  # discard port: connection refused
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    with pytest.raises(hub.WeightsUnavailable) as e:
        create_model("fd_mobilenet_050", pretrained=True, cache_dir=tmp_path)
    msg = str(e.value)
    for part in ("http://127.0.0.1:9/0.5x-FDMobileNet-224.pth.tar", str(tmp_path / "checkpoints"), "FDM_WEIGHTS"):
        assert part in msg
    assert "fdmobilenet convert" in msg
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_fdm_weights_folder_and_unreleased_names(tmp_path, monkeypatch):
    monkeypatch.delenv("FDM_WEIGHTS", raising=False)
    with pytest.raises(ValueError, match="no released weights for 'mobilenet_v1_050'"):
        create_model("mobilenet_v1_050", pretrained=True)
    from fdmobilenet.weights import save_weights

    save_weights(create_model("mobilenet_v1_050").state_dict(), tmp_path / "mobilenet_v1_050.safetensors", {})
    monkeypatch.setenv("FDM_WEIGHTS", str(tmp_path))
    assert create_model("mobilenet_v1_050", pretrained=True).num_classes == 1000
