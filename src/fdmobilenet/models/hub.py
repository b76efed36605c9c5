"""Download and verify the authors' released files: the network layer under ``pretrained=True``.

The files come from the authors' repository at a pinned commit (a later push cannot change what is
loaded) and are checked against the checksums in ``_releases.py`` before anything is kept. The download
lands in torch.hub's cache (``$TORCH_HOME/hub/checkpoints``); ``pretrained.released_weights`` converts it
once into ``$TORCH_HOME/hub/fdmobilenet``, so later calls read the converted file and need no network.
This module knows files and checksums only, no models.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
from pathlib import Path

from ._releases import AUTHORS_COMMIT, AUTHORS_REPO, BASE_URL, RELEASES, Release

__all__ = [
    "AUTHORS_COMMIT",
    "AUTHORS_REPO",
    "BASE_URL",
    "RELEASES",
    "Release",
    "WeightsUnavailable",
    "base_url",
    "cache_dir",
    "converted_path",
    "fetch_release",
    "verify",
]


class WeightsUnavailable(RuntimeError):
    """The released weights could not be fetched (no network) or did not match their checksum."""


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where downloads and converted files live: ``root`` or torch.hub's directory."""
    if root is not None:
        return Path(root)
    import torch.hub

    return Path(torch.hub.get_dir())


def base_url() -> str:
    """The pinned URL, or ``$FDM_WEIGHTS_URL`` (a mirror, a ``file://`` folder) when set."""
    url = os.environ.get("FDM_WEIGHTS_URL") or BASE_URL
    return url if url.endswith("/") else url + "/"


def verify(path: Path, release: Release) -> None:
    """Raise WeightsUnavailable unless ``path`` has the release's sha256 and git blob id."""
    data = path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    sha = hashlib.sha256(data).hexdigest()
    if blob != release.git_blob or (release.sha256 and sha != release.sha256):
        want = release.sha256 or f"git blob {release.git_blob}"
        raise WeightsUnavailable(f"{path.name}: checksum mismatch for {release.file} (sha256 {sha}, expected {want})")


def converted_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where the converted safetensors of ``name``'s release is cached (the blob id keeps versions apart)."""
    return cache_dir(root) / "fdmobilenet" / f"{name}-{RELEASES[name].git_blob[:8]}.safetensors"


def fetch_release(name: str, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The authors' file for ``name`` in the cache's ``checkpoints/``, downloaded on first use; always verified
    (also a file put there by hand). Converting it is ``pretrained.py``'s business."""
    release = RELEASES[name]
    raw = cache_dir(root) / "checkpoints" / release.file
    if not raw.is_file():
        _download(base_url() + release.file, raw, release, converted_path(name, root), progress)
    verify(raw, release)
    return raw


def _download(url: str, dst: Path, release: Release, converted: Path, progress: bool) -> None:
    """Fetch into a temporary file beside ``dst``; keep it only if the checksums match."""
    import torch.hub

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    try:
        try:
            print(f"downloading {url} to {dst}", file=sys.stderr, flush=True)
            # tqdm's bar only on a terminal: in a log file its carriage returns make one endless line
            torch.hub.download_url_to_file(url, tmp, progress=progress and sys.stderr.isatty())
        except (urllib.error.URLError, OSError, ValueError) as e:
            model = converted.name.rsplit("-", 1)[0]  # <name>-<blob>.safetensors: $FDM_WEIGHTS wants <name>
            raise WeightsUnavailable(
                f"could not download {url} ({type(e).__name__}: {e}).\n"
                "Without a network: download that file elsewhere and put it at "
                f"{dst} (it is checked and converted on the next call), or convert it yourself with "
                f"`fdmobilenet convert {release.file} {model}.safetensors` and pass pretrained=PATH, "
                f"or set $FDM_WEIGHTS to the folder holding {model}.safetensors "
                "($FDM_WEIGHTS_URL points at a mirror)."
            ) from e
        verify(Path(tmp), release)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
