"""The package's layers (docs/architecture.md): no module imports from a layer above its own.

The table below is the architecture in one place. A new module lands in a folder that has a row here,
or the test names it; a new subpackage needs a row. Imports are read with ``ast`` (test_import_graph),
so a lazy import inside a function counts like one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from test_import_graph import PACKAGE, ROOT, import_graph

# (layer, the modules it holds: a subpackage's prefix or a root module), bottom first
LAYERS = [
    ("vocabulary", [PACKAGE, f"{PACKAGE}.conventions", f"{PACKAGE}.classes", f"{PACKAGE}.class_tables",
                    f"{PACKAGE}.fileio", f"{PACKAGE}.image_headers", f"{PACKAGE}.image_files",
                    f"{PACKAGE}.output_safety"]),
    ("models", [f"{PACKAGE}.models"]),
    ("weights", [f"{PACKAGE}.weights"]),
    ("inference", [f"{PACKAGE}.inference"]),
    ("ros", [f"{PACKAGE}.ros", f"{PACKAGE}.msg"]),  # msg: rosidl's generated SegmentationInfo
    ("cli", [f"{PACKAGE}.cli"]),
    ("benchmarks", [f"{PACKAGE}.benchmarks"]),
]
# 0.1 import paths kept for one release: each forwards to its new module; nothing of ours may import them
DEPRECATED_ALIASES = {f"{PACKAGE}.segmenter": f"{PACKAGE}.inference.segmenter",
                      f"{PACKAGE}.checkpoint": f"{PACKAGE}.weights.checkpoint",
                      f"{PACKAGE}.node": f"{PACKAGE}.ros.node",
                      f"{PACKAGE}.export": f"{PACKAGE}.cli.export"}


def layer_of(module: str, layers=LAYERS) -> int | None:
    for index, (_, members) in enumerate(layers):
        for member in members:
            if module == member or (member != PACKAGE and module.startswith(member + ".")):
                return index
    return None


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """'a (layer) -> b (layer)' for every import of a module from a higher layer."""
    found = []
    for source, targets in sorted(graph.items()):
        if source in DEPRECATED_ALIASES:
            continue
        here = layer_of(source, layers)
        for target in sorted(targets):
            there = layer_of(target, layers)
            if here is not None and there is not None and there > here:
                found.append(f"{source} ({layers[here][0]}) -> {target} ({layers[there][0]})")
    return found


def test_every_module_has_a_layer():
    unplaced = [name for name in import_graph() if layer_of(name) is None and name not in DEPRECATED_ALIASES]
    assert unplaced == []


def test_the_check_catches_an_upward_import():
    graph = {f"{PACKAGE}.models.bisenetv2": {f"{PACKAGE}.inference.segmenter", f"{PACKAGE}.conventions"},
             f"{PACKAGE}.cli.bags": {f"{PACKAGE}.ros.messages"}}
    assert upward_imports(graph) == [
        f"{PACKAGE}.models.bisenetv2 (models) -> {PACKAGE}.inference.segmenter (inference)"]


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports(import_graph()) == []


def test_nothing_imports_a_deprecated_alias_and_each_alias_names_only_its_target():
    graph = import_graph()
    users = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                   if target in DEPRECATED_ALIASES)
    assert users == []
    for alias, target in DEPRECATED_ALIASES.items():
        text = (ROOT / (alias.split(".", 1)[1] + ".py")).read_text()
        assert target in text
        assert graph[alias] <= {PACKAGE, target}, alias


def test_the_package_never_imports_training():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(ROOT.parent)}: {n}" for n in names if n.split(".")[0] == "training"]
    assert offenders == []


def test_rclpy_is_imported_by_the_ros_node_alone():
    users = []
    for path in sorted(ROOT.rglob("*.py")):
        if "msg" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "rclpy" for n in names):
                users.append(str(path.relative_to(ROOT)))
    assert sorted(set(users)) == ["ros/node.py"]


def _subpackages() -> list[str]:
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "msg")


def test_each_subpackage_says_what_it_is_for_and_its_exports_resolve():
    import importlib

    assert _subpackages() == ["benchmarks", "cli", "inference", "models", "ros", "weights"]
    for name in _subpackages():
        package = importlib.import_module(f"{PACKAGE}.{name}")
        doc = (package.__doc__ or "").strip()
        assert doc and len(doc.splitlines()) <= 4, name
        for export in getattr(package, "__all__", []):
            if name == "ros" and export in ("SegmentationNode", "LifecycleSegmentationNode", "main"):
                continue  # rclpy: test_node_ros covers the node
            value = getattr(package, export)
            assert getattr(value, "__name__", export) == export or not callable(value), (name, export)
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        importlib.import_module(f"{PACKAGE}.inference").Nothing


def test_importing_the_subpackages_loads_neither_torch_nor_rclpy():
    code = ("import sys\n"
            + "".join(f"import {PACKAGE}.{name}\n" for name in _subpackages())
            + "print(sorted(m for m in ('torch', 'rclpy', 'onnxruntime', 'cv2') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


ALIAS_USES = [
    ("from bisenetv2_ros.segmenter import Segmenter", "Segmenter", f"{PACKAGE}.inference.segmenter"),
    ("from bisenetv2_ros.checkpoint import Checkpoint", "Checkpoint", f"{PACKAGE}.weights.checkpoint"),
    ("from bisenetv2_ros.checkpoint import load_model", "load_model", f"{PACKAGE}.weights.known_weights"),
    ("from bisenetv2_ros.export import export_onnx", "export_onnx", f"{PACKAGE}.cli.export"),
]


@pytest.mark.parametrize("statement, name, home", ALIAS_USES, ids=[u[1] for u in ALIAS_USES])
def test_old_import_paths_still_work_with_one_deprecation_line(statement, name, home):
    code = f"{statement}\nprint({name}.__module__)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == home
    old = statement.split()[1]
    warning = [line for line in result.stderr.splitlines() if "FutureWarning" in line]
    assert len(warning) == 1 and f"{old} is deprecated and will be removed in 0.3" in warning[0]
    assert warning[0].startswith("<string>:1:")  # points at the user's import, not at our code


def test_every_alias_forwards_every_public_name_of_its_target():
    import importlib
    import warnings

    for alias, target in DEPRECATED_ALIASES.items():
        if alias.endswith(".node"):
            continue  # rclpy; its entry point is tested in test_error_boundary / test_node_process
        module = importlib.import_module(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            old = importlib.import_module(alias)
        public = [n for n in vars(module) if not n.startswith("_")]
        assert public and all(getattr(old, n) is getattr(module, n) for n in public), alias


def test_old_node_module_still_starts_the_node_with_a_deprecation_line():
    result = subprocess.run([sys.executable, "-m", f"{PACKAGE}.node", "--help"], cwd=ROOT.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"python -m {PACKAGE}.node is deprecated")
    assert "ros2 run bisenetv2_ros segmentation_node" in result.stderr
    assert "parameters" in result.stdout


def test_the_changelog_moves_name_modules_that_exist():
    """CHANGELOG.md's 0.2 table tells users where each 0.1 module went: every new name must exist."""
    import re

    rows = [line for line in (ROOT.parent / "CHANGELOG.md").read_text().splitlines()
            if line.startswith("| `") and "/` |" in line]
    assert len(rows) == 6
    for row in rows:
        package = re.match(r"\| `(\w+)/` \|", row).group(1)
        cell = row.split("|")[2]
        news = [pair.split("→")[-1] for pair in re.split(r",(?![^(]*\))", cell.split(";")[0])]
        names = [re.search(r"`([\w.]+)`", new).group(1) for new in news if "`" in new]
        assert names, row
        for name in names:
            assert (ROOT / package / f"{name}.py").is_file(), f"{package}/{name}.py named in CHANGELOG.md"


def test_architecture_page_names_every_module():
    """docs/architecture.md's "What is where" must keep up: each module of a subpackage and of training/
    is named there (a glob such as `*_backend.py` counts)."""
    import fnmatch
    import re

    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([\w*.]+\.py)`", page))
    modules = [p for p in sorted(ROOT.glob("*/*.py")) + sorted((ROOT.parent / "training").glob("*.py"))
               if p.name != "__init__.py" and p.parent.name != "msg"]
    missing = [str(p.relative_to(ROOT.parent)) for p in modules
               if not any(fnmatch.fnmatch(p.name, pattern) for pattern in named)]
    assert len(modules) > 60 and missing == []


def test_no_module_is_over_400_lines():
    """Issue 24: a module that outgrows 400 lines is split by job (the package and training/)."""
    modules = [p for p in sorted(ROOT.rglob("*.py")) + sorted((ROOT.parent / "training").glob("*.py"))
               if "msg" not in p.relative_to(ROOT.parent).parts]
    long = {str(p.relative_to(ROOT.parent)): n for p in modules if (n := len(p.read_text().splitlines())) > 400}
    assert len(modules) > 80 and long == {}
