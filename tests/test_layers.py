"""The package imports one way: no first-party import cycle, top-level or function-local.

A function-local import that closes a cycle works only by luck of call order, and hides the layer
it breaks, so it counts here like any other. The graph is built from the source with ``ast``
(nothing is imported): importing a package means its ``__init__.py``; ``from . import name`` where
``name`` is a submodule imports that submodule; names a package ``__init__`` re-exports lazily
(PEP 562, its ``_EXPORTS = {name: submodule}`` table) count as imports of those submodules; and
importing ``a.b.c`` also runs ``a/b/__init__.py`` unless ``a.b`` is the importer's own package
(already being imported).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TOP = "fdmobilenet"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file; a package is named by its ``__init__.py``'s dotted package name."""
    mods = {}
    for path in sorted((SRC / TOP).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_package(mod: str, mods: dict[str, Path]) -> bool:
    return mods[mod].name == "__init__.py"


def _ancestors(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(mod: str, node: ast.ImportFrom, mods: dict[str, Path]) -> str:
    """The absolute module a ``from X import ...`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    pkg = mod if _is_package(mod, mods) else mod.rpartition(".")[0]
    base = pkg.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _lazy_exports(tree: ast.Module) -> list[str]:
    """Submodule names of a PEP 562 ``_EXPORTS = {"name": "submodule"}`` table."""
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        target = targets[0] if targets else None
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and isinstance(node.value, ast.Dict):
            return [v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


def _imports(mod: str, tree: ast.Module, mods: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(first-party module, line, statement) of every import statement anywhere in ``tree``."""
    own = set(_ancestors(mod))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, ast.unparse(node)) for a in node.names if a.name.split(".")[0] == TOP]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, node, mods)
            if base.split(".")[0] == TOP:
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                if len(subs) < len(node.names):  # a name read from the module (a package's __init__) itself
                    found.append((base, node.lineno, ast.unparse(node)))
                else:  # `from pkg import submodule` only: pkg's __init__ runs unless it is the importer's own
                    found += [(a, node.lineno, ast.unparse(node)) for a in [base, *_ancestors(base)] if a not in own]
                found += [(sub, node.lineno, ast.unparse(node)) for sub in subs]
    return found


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported first-party module: 'file:line: import statement'}."""
    mods = _modules()
    graph: dict[str, dict[str, str]] = {m: {} for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        own = set(_ancestors(mod))
        where = f"{path.relative_to(SRC.parent)}"
        for target, line, text in _imports(mod, tree, mods):
            for anc in _ancestors(target):  # importing a.b.c runs a/b/__init__ first, unless already running
                if anc in mods and anc not in own and anc != mod:
                    graph[mod].setdefault(anc, f"{where}:{line}: {text} (runs {anc}/__init__.py)")
            if target in mods and target != mod:
                graph[mod].setdefault(target, f"{where}:{line}: {text}")
        if _is_package(mod, mods):
            for sub in _lazy_exports(tree):
                if f"{mod}.{sub}" in mods:
                    graph[mod].setdefault(f"{mod}.{sub}", f"{where}: lazy re-export from .{sub} (_EXPORTS)")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle as a closed path of modules, or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_first_party_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = "\n".join(f"  {a} -> {b}   [{graph[a][b]}]" for a, b in zip(cycle, cycle[1:], strict=False))
        pytest.fail(f"import cycle {' -> '.join(cycle)}:\n{steps}")


def test_the_checker_sees_function_local_and_package_edges(tmp_path, monkeypatch):
    """The graph builder itself: a function-local import, `from . import sub` and a package
    re-export back to its importer are all edges, so the cycles they close are found."""
    pkg = tmp_path / TOP
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "sub" / "__init__.py").write_text("from .x import y\n")
    (pkg / "sub" / "x.py").write_text("from ..sub import z\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    graph = import_graph()
    assert f"{TOP}.b" in graph[f"{TOP}.a"] and f"{TOP}.a" in graph[f"{TOP}.b"]
    assert graph[f"{TOP}.sub.x"].keys() == {f"{TOP}.sub"}
    assert find_cycle(graph) is not None
    (pkg / "a.py").write_text("")
    (pkg / "sub" / "x.py").write_text("from . import x2\n")
    (pkg / "sub" / "x2.py").write_text("")
    assert find_cycle(import_graph()) is None
