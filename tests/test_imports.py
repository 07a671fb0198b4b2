"""The package's import graph: no cycles, the model at the bottom, the CLIs on top.

The graph is read from the source with ``ast`` (nothing is imported): an edge
A -> B for every ``import``/``from ... import`` in module A that names module B
of the package, at module level or inside a function. Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "transformer_net"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# What model.py may import: it is the bottom layer, loaded by every entry point.
MODEL_ALLOWED = {"__future__", "torch"}


def _modules() -> dict[str, Path]:
    """``transformer_net.name`` -> file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names of the modules (or, for ``from m import x``, of ``m.x``) imported."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: every module of the package is at its top level
        base = f"{PACKAGE}.{base}" if base else PACKAGE
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [name for node in _import_nodes(tree) for name in _imported_names(node)]


@functools.cache  # parsed once for all the tests below
def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (itself and the package left out)."""
    modules = _modules()
    return {
        name: {n for n in _imports(path) if n in modules and n not in (name, PACKAGE)}
        for name, path in modules.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per back edge of a depth-first search."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_cycles():
    # The check below can only pass honestly if the finder sees a cycle when there is one.
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert len(graph) > 20
    assert f"{PACKAGE}.sampler" in graph[f"{PACKAGE}.data"]  # from .sampler import ...
    assert f"{PACKAGE}.download" in graph[f"{PACKAGE}.data"]  # from . import download
    assert f"{PACKAGE}.atomic" in graph[f"{PACKAGE}.download"]  # inside a function


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_model_imports_only_torch():
    outside = {
        name.split(".")[0]
        for name in _imports(ROOT / "model.py")
        if name.split(".")[0] not in MODEL_ALLOWED
    }
    assert outside == set(), f"model.py imports {sorted(outside)}"


def test_no_module_imports_a_cli():
    graph = import_graph()
    clis = {name for name in graph if name.endswith("_cli")}
    assert f"{PACKAGE}.stylize_cli" in clis
    users = {f"{module} -> {cli}" for module, deps in graph.items() for cli in clis & deps}
    assert users == set(), f"CLI modules imported by the package: {sorted(users)}"
