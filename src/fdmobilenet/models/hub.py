"""``pretrained=True`` that just works: the authors' released files, fetched once and converted once.

The files come from the authors' repository at a pinned commit (a later push cannot change what is
loaded) and are checked against the checksums below before anything is kept. The download lands in
torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), the converted safetensors beside it in
``$TORCH_HOME/hub/fdmobilenet``; later calls read the converted file and need no network.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

AUTHORS_REPO = "qinzheng93/FD-MobileNet"  # formerly clavichord93/FD-MobileNet; GitHub redirects the old name
AUTHORS_COMMIT = "f4531497703c76f6f8775c8f784295a64305208e"  # 2018-05-03, the last commit; saved_models/
BASE_URL = f"https://raw.githubusercontent.com/{AUTHORS_REPO}/{AUTHORS_COMMIT}/saved_models/"


@dataclass(frozen=True)
class Release:
    """One released file: its name, checksums (sha256 where known, always the git blob id) and paper top-1."""

    file: str
    sha256: str | None
    git_blob: str
    paper_top1: float


RELEASES: dict[str, Release] = {
    "fd_mobilenet_025": Release(
        "0.25x-FDMobileNet-224.pth.tar",
        "881fe5d0c6d6dd1b92feea55a0891b3d573bbe804c9edb1670187f172b5cfba7",
        "366f5419748b9c37894bdce77bab9bca8bc92618",
        45.1,
    ),
    "fd_mobilenet_050": Release(
        "0.5x-FDMobileNet-224.pth.tar",
        "2659c821467f37fd265f73ffbce4ed8d4c212347db97d4f7e7cb0922f065d054",
        "95453e152beb57f6bc16397aacd442c0f4cc1e32",
        56.3,
    ),
    # In the repository but never fetched here (no network): checked by its git blob id only.
    "fd_mobilenet_100": Release("1x-FDMobileNet-224.pth.tar", None, "b1143ec529f9116fecbcccfbb2604fa94ce04a0e", 65.3),
}


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


def released_weights(name: str, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The converted safetensors of ``name``'s released weights, fetched and converted on first use."""
    from .pretrained import convert

    release = RELEASES[name]
    root = cache_dir(root)
    converted = root / "fdmobilenet" / f"{name}-{release.git_blob[:8]}.safetensors"
    if converted.is_file():
        return converted
    raw = root / "checkpoints" / release.file
    if not raw.is_file():
        _download(base_url() + release.file, raw, release, converted, progress)
    verify(raw, release)  # also a file put there by hand
    convert(raw, converted, name)
    return converted


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
            raise WeightsUnavailable(
                f"could not download {url} ({type(e).__name__}: {e}).\n"
                "Without a network: download that file elsewhere and put it at "
                f"{dst} (it is checked and converted on the next call), or convert it yourself with "
                f"`fdmobilenet convert {release.file} {converted.name}` and pass pretrained=PATH, "
                "or set $FDM_WEIGHTS to a folder of converted <model name>.safetensors files "
                "($FDM_WEIGHTS_URL points at a mirror)."
            ) from e
        verify(Path(tmp), release)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
