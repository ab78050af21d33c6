"""No module of the project's packages imports itself in a circle, through any import: at module
level, under `TYPE_CHECKING` or inside a function (each is a dependency a reader has to hold in mind)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sync", "sandbox", "devhost", "bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports; `from package import name` counts `package.name` when
    that is a module, else `package`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found & modules - {name}


def import_graph(folder: str) -> dict[str, set[str]]:
    paths = sorted((ROOT / folder).rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_circle_through_a_type_checking_import() -> None:
    graph = {"a.emulator": {"a.control"}, "a.control": {"a.emulator"}, "a.model": set()}
    assert cycles(graph) == [["a.control", "a.emulator"]]
    assert cycles({"a.emulator": {"a.control"}, "a.control": {"a.model"}, "a.model": set()}) == []


def test_the_import_graph_is_read_from_the_source() -> None:
    graph = import_graph("sandbox")
    assert "sandbox.graph.emulator" in graph["sandbox.graph"]
    assert "sandbox.anny.config" in graph["sandbox.anny.emulator"]
    assert "sandbox.serve" in graph["sandbox.anny"]


@pytest.mark.parametrize("folder", PACKAGES)
def test_no_import_cycles(folder: str) -> None:
    found = cycles(import_graph(folder))
    assert found == [], "modules that import each other in a circle: " + "; ".join(
        " ↔ ".join(c) for c in found)
