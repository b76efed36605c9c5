"""docs/layout.md lists every module of the package, one line each, and no module that is gone."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _listed(text: str) -> set[str]:
    """The .py paths under src/fdmobilenet/ that the layout's indented tree names (two spaces a level)."""
    block = text.split("```")[1].splitlines()[1:]
    stack: list[str] = []
    paths = set()
    for line in block:
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        name = line.split()[0]
        stack = stack[:depth] + [name]
        if name.endswith(".py") and stack[0] == "src/fdmobilenet/":
            paths.add("".join(stack[1:]))
    return paths


def test_layout_names_every_module() -> None:
    src = REPO / "src" / "fdmobilenet"
    actual = {str(p.relative_to(src)) for p in src.rglob("*.py")}
    listed = _listed((REPO / "docs" / "layout.md").read_text())
    assert sorted(actual - listed) == [], "modules missing from docs/layout.md"
    assert sorted(listed - actual) == [], "docs/layout.md names modules that do not exist"
