"""The authors' released ImageNet weights: the one table every other view (``RELEASED_WIDTHS``, the
download list, the error messages) is derived from. Pure data, no I/O.

The files live in the authors' repository at a pinned commit (a later push cannot change what is
loaded). ``sha256`` is known only for files fetched and checked here; the git blob id is known for all.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTHORS_REPO = "qinzheng93/FD-MobileNet"  # formerly clavichord93/FD-MobileNet; GitHub redirects the old name
AUTHORS_COMMIT = "f4531497703c76f6f8775c8f784295a64305208e"  # 2018-05-03, the last commit; saved_models/
BASE_URL = f"https://raw.githubusercontent.com/{AUTHORS_REPO}/{AUTHORS_COMMIT}/saved_models/"


@dataclass(frozen=True)
class Release:
    """One released file: width, name, checksums (sha256 where known, always the git blob id), paper top-1."""

    width: float
    file: str
    sha256: str | None
    git_blob: str
    paper_top1: float

    @property
    def verified(self) -> bool:
        """True when the file was fetched and checked here (sha256 known); else only its git blob id pins it."""
        return self.sha256 is not None


RELEASES: dict[str, Release] = {
    "fd_mobilenet_025": Release(
        0.25,
        "0.25x-FDMobileNet-224.pth.tar",
        "881fe5d0c6d6dd1b92feea55a0891b3d573bbe804c9edb1670187f172b5cfba7",
        "366f5419748b9c37894bdce77bab9bca8bc92618",
        45.1,
    ),
    "fd_mobilenet_050": Release(
        0.5,
        "0.5x-FDMobileNet-224.pth.tar",
        "2659c821467f37fd265f73ffbce4ed8d4c212347db97d4f7e7cb0922f065d054",
        "95453e152beb57f6bc16397aacd442c0f4cc1e32",
        56.3,
    ),
    # In the repository but never fetched here (no network): still downloadable, checked by its git blob id only.
    "fd_mobilenet_100": Release(
        1.0, "1x-FDMobileNet-224.pth.tar", None, "b1143ec529f9116fecbcccfbb2604fa94ce04a0e", 65.3
    ),
}

# The verified releases, name -> width: what ``compare --pretrained-from`` and the tests can rely on.
RELEASED_WIDTHS: dict[str, float] = {name: r.width for name, r in RELEASES.items() if r.verified}
