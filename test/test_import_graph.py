"""The package's import graph: no cycles (the layers themselves are held by test_layers.py).

Edges are read from the source with ``ast`` (not by importing), so an import inside a function counts
as much as one at the top of a module: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "bisenetv2_ros"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()  # none: every import cycle is an error


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The package modules that ``path`` imports anywhere in its body."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from X import Y`: Y is a submodule when one of that name exists, else a name in X.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where only a.b is ours, etc.
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = package_modules(root)
    return {name: imported_modules(path, modules, root) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_graph_reader_sees_relative_absolute_and_function_level_imports(tmp_path):
    files = {
        "__init__.py": "",
        "a.py": "import os\nfrom . import b\n",
        "b.py": "def later():\n    from .sub.c import thing\n",
        "sub/__init__.py": "from .. import a\nfrom . import c\n",
        "sub/c.py": "import pkg.b\nfrom ..a import name\nfrom .. import sub\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    assert import_graph(tmp_path / "pkg") == {
        "pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub": {"pkg.a", "pkg.sub.c"},
        "pkg.sub.c": {"pkg.b", "pkg.a", "pkg.sub"}}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_in_the_package():
    graph = import_graph()
    for source, target in KNOWN_CYCLE_EDGES:
        graph[source].discard(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
